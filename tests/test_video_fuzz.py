"""Fuzzing video inputs: damaged, empty, non-video, zero-frame, odd- and huge-sized clips and image folders,
and wrong frame ranges, through `inr.video.read_video` and `nerva fit` / `nerva decode`.

read_video either returns well-formed frames (T, H, W, 3) uint8 or raises VideoError with one line; the
CLI ends in one `nerva: error:` line and a non-zero exit, leaves the input byte-identical and writes
nothing. Every input here fails before any fitting starts, so the file stays fast.
"""

import hashlib
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.cli import main
from inr.errors import VideoError
from inr.video import bundled_clip, read_video, synthetic_clip, write_video

CARPHONE = bundled_clip("carphone")   # 120 frames of 144x176
CARPHONE_BYTES = CARPHONE.read_bytes()
FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def digest(path: Path) -> str:
    """sha256 of a file, or of a folder's names and contents."""
    if path.is_dir():
        return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(path.iterdir()))).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_read_is_refused_or_well_formed(path: Path, start=0, stop=None) -> None:
    try:
        video = read_video(path, start, stop)
    except VideoError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
        return
    f = video.frames
    assert f.dtype == np.uint8 and f.ndim == 4 and f.shape[0] >= 1 and f.shape[3] == 3, f.shape
    if stop is not None:
        assert f.shape[0] == stop - start


def assert_cli_refuses(capsys, argv: list, source: Path, output: Path) -> str:
    """`nerva argv` exits non-zero with one `nerva: error:` line; source untouched; nothing new written."""
    before, names = digest(source), sorted(p.name for p in output.parent.iterdir())
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0, err
    assert len(lines) == 1 and lines[0].startswith("nerva: error:"), err
    assert "Traceback" not in err and "internal error" not in err, err
    assert digest(source) == before
    assert not output.exists()
    assert sorted(p.name for p in output.parent.iterdir()) == names, "a temporary or partial file was left"
    return lines[0]


def fit_argv(source: Path, output: Path, *extra) -> list:
    return ["fit", source, "-o", output, "--model", "nerv", "--size", "12k", "--epochs", "1", "--quiet", *extra]


def y4m(width, height, frames: int, body: bytes | None = None) -> bytes:
    """A YUV4MPEG2 file (4:2:0) claiming width x height; `body` replaces the frame data if given."""
    head = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\n".encode()
    if body is not None:
        return head + body
    size = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    return head + b"".join(b"FRAME\n" + bytes([(16 + 7 * t) % 256]) * size for t in range(frames))


def png_bytes(height: int, width: int, seed: int = 0) -> bytes:
    import imageio.v3 as iio
    return iio.imwrite("<bytes>", synthetic_clip(1, height, width, seed)[0], extension=".png")


# ------------------------------------------------------------------------------------------- inputs

CUTS = [0, 1, 4, 8, 64, 1000, 4096]                                    # bytes kept from the start
FRACTIONS = [0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.999]                   # share of the file kept
BAD_FILES = {
    "empty": b"",
    "text": b"this is not a video\n" * 20,
    "random": np.random.default_rng(1).integers(0, 256, 8192, dtype=np.uint8).tobytes(),
    "png_magic": b"\x89PNG\r\n\x1a\n" + bytes(500),
    "nerva_file": b"NRVA\x01\x01\x00" + bytes(40),
    "mp4_box_only": CARPHONE_BYTES[:32],
    "zero_frames_y4m": y4m(16, 16, 0),
    "zero_size_y4m": y4m(0, 0, 1, b"FRAME\n"),
    "negative_size_y4m": y4m(-16, 16, 1, b"FRAME\n" + bytes(64)),
    "huge_y4m": y4m(100_000, 100_000, 1, b"FRAME\n" + bytes(4096)),
    "huge_width_y4m": y4m(1 << 30, 2, 1, b"FRAME\n" + bytes(4096)),
    "short_frame_y4m": y4m(64, 64, 1, b"FRAME\n" + bytes(100)),
}


def cut_mp4s():
    cuts = {f"cut{n}": CARPHONE_BYTES[:n] for n in CUTS}
    cuts.update({f"cut{f:.3f}": CARPHONE_BYTES[:int(len(CARPHONE_BYTES) * f)] for f in FRACTIONS})
    return cuts


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("name, data", [*BAD_FILES.items(), *cut_mp4s().items()], ids=lambda x: x if isinstance(x, str) else "")
def test_a_damaged_or_non_video_file_reads_as_an_error_or_as_well_formed_frames(src, name, data):
    path = src / ("clip.y4m" if name.endswith("y4m") else "clip.mp4")
    path.write_bytes(data)
    assert_read_is_refused_or_well_formed(path)
    assert_read_is_refused_or_well_formed(path, 0, 120)


@pytest.mark.parametrize("name, data", [*BAD_FILES.items(), *cut_mp4s().items()], ids=lambda x: x if isinstance(x, str) else "")
def test_nerva_fit_of_a_damaged_or_non_video_file_is_one_line_error_and_no_output(src, capsys, name, data):
    path = src / ("clip.y4m" if name.endswith("y4m") else "clip.mp4")
    path.write_bytes(data)
    # The whole clip (120 frames) is asked for, so a cut file that still opens is short of frames.
    assert_cli_refuses(capsys, fit_argv(path, src / "out.nerva", "--frames", "0:120"), path, src / "out.nerva")


@FUZZ
@given(start=st.integers(2000, len(CARPHONE_BYTES) - 64), length=st.sampled_from([1, 4, 16, 256, 4096]),
       fill=st.sampled_from([0x00, 0xFF, None]))
def test_an_mp4_with_overwritten_bytes_reads_as_an_error_or_as_well_formed_frames(tmp_path_factory, start, length, fill):
    data = bytearray(CARPHONE_BYTES)
    end = min(start + length, len(data))
    data[start:end] = (np.random.default_rng(start).integers(0, 256, end - start, dtype=np.uint8).tobytes()
                       if fill is None else bytes([fill]) * (end - start))
    path = tmp_path_factory.mktemp("damaged") / "clip.mp4"
    path.write_bytes(bytes(data))
    assert_read_is_refused_or_well_formed(path, 0, 8)


def test_odd_dimensions_round_trip_and_reach_the_fit_checks(src, capsys):
    frames = synthetic_clip(3, 17, 33)   # 33 wide, 17 high
    path = write_video(src / "odd.mkv", frames, lossless=True)
    assert np.array_equal(read_video(path).frames, frames)
    # A frame range past the end of the 3-frame clip is refused before fitting.
    assert "frame" in assert_cli_refuses(capsys, fit_argv(path, src / "out.nerva", "--frames", "0:4"),
                                         path, src / "out.nerva")


# ------------------------------------------------------------------------------------ image folders

FOLDERS = {
    "corrupt_png": lambda: {"0.png": png_bytes(16, 24), "1.png": png_bytes(16, 24, 1)[:40]},
    "not_an_image": lambda: {"0.png": png_bytes(16, 24), "1.png": b"hello"},
    "mixed_sizes": lambda: {"0.png": png_bytes(16, 24), "1.png": png_bytes(24, 16)},
    "zero_bytes": lambda: {"0.png": b"", "1.png": b""},
    "no_images": lambda: {"notes.txt": b"x", "data.bin": bytes(10)},
    "empty": lambda: {},
}


def make_folder(parent: Path, files: dict) -> Path:
    folder = parent / "frames"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("kind", FOLDERS)
def test_a_folder_of_missing_mixed_or_corrupt_images_is_refused(src, capsys, kind):
    folder = make_folder(src, FOLDERS[kind]())
    with pytest.raises(VideoError) as error:
        read_video(folder)
    assert "\n" not in str(error.value)
    assert_cli_refuses(capsys, fit_argv(folder, src / "out.nerva"), folder, src / "out.nerva")


# ------------------------------------------------------------------------------------- frame ranges

BAD_RANGES = ["5:2", "3:3", "-1:4", "0:-1", "0:121", "120:", "200:300", "a:b", "1e3:2000", "0:1.5",
              "99999999999999999999:", "0:" + "9" * 400, "", "4"]


@pytest.mark.parametrize("frames", BAD_RANGES)
def test_nerva_fit_with_a_wrong_frame_range_is_one_line_error_and_no_output(src, capsys, frames):
    path = src / "clip.mp4"
    path.write_bytes(CARPHONE_BYTES)
    assert_cli_refuses(capsys, fit_argv(path, src / "out.nerva", "--frames", frames), path, src / "out.nerva")


@pytest.fixture(scope="module")
def nerva_bytes():
    """An 8-frame .nerva file (tiny NeRV, random weights)."""
    import jax

    import inr
    from codec import api
    spec = inr.get("nerv")
    config = spec.config_cls.tiny()
    variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
    return api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=6)))


@pytest.mark.parametrize("frames", ["9:", "8:", "0:9", "5:2", "-1:3", "3:3", "x", "0:" + "9" * 400])
def test_nerva_decode_with_a_wrong_frame_range_is_one_line_error_and_no_output(src, capsys, nerva_bytes, frames):
    path = src / "clip.nerva"
    path.write_bytes(nerva_bytes)
    for out in (src / "out.mp4", src / "out.y4m", src / "png"):
        target = f"{out}/" if out.name == "png" else out
        assert_cli_refuses(capsys, ["decode", path, "-o", target, "--frames", frames], path, out)


@pytest.mark.parametrize("name, data", [*BAD_FILES.items(), ("cut_nerva", None), ("crc_fixed_junk", None)],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_nerva_decode_of_a_non_nerva_or_damaged_file_is_one_line_error_and_no_output(src, capsys, nerva_bytes,
                                                                                  name, data):
    if name == "cut_nerva":
        data = nerva_bytes[: len(nerva_bytes) // 2]
    elif name == "crc_fixed_junk":   # damage behind a valid CRC: the tensor stream is zeroed
        body = nerva_bytes[:200] + bytes(len(nerva_bytes) - 204)
        data = body + zlib.crc32(body).to_bytes(4, "little")
    path = src / "clip.nerva"
    path.write_bytes(data)
    assert_cli_refuses(capsys, ["decode", path, "-o", src / "out.mp4"], path, src / "out.mp4")
