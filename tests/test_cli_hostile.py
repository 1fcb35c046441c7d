"""The `nerva` command under hostile input: every bad option, output path, frame range and video input ends
in one `nerva: error:` line and a non-zero exit, leaves the source byte-identical and leaves no output,
partial or temporary, behind."""

import hashlib
import math
import shutil
import struct
import tracemalloc
from pathlib import Path

import av
import jax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import inr
from codec import api, player
from eval.cli import build_parser, main
from inr.errors import ConfigError
from inr import Geometry
from inr.video import bundled_clip, read_video, synthetic_clip, write_video

CARPHONE = bundled_clip("carphone")   # 120 frames, 176x144
T = 8                                 # frames of the small .nerva file


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(capsys, argv, code, *words, source: Path, keep: set[str]):
    """main(argv) exits with `code` and one `nerva: error:` line holding `words`; `source` is unchanged and
    its folder holds exactly the names in `keep` (no output, no temporary sibling, no checkpoint)."""
    before = sha256(source)
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("nerva: error:"), err
    for w in words:
        assert w in lines[0], err
    assert sha256(source) == before
    assert {p.name for p in source.parent.iterdir()} == keep


@pytest.fixture
def video(tmp_path):
    """A copy of the first 12 carphone frames as a lossless .mkv, alone in its folder."""
    path = tmp_path / "src" / "clip.mkv"
    path.parent.mkdir()
    return write_video(path, read_video(CARPHONE, 0, 12).frames, fps=29.97, lossless=True)


@pytest.fixture(scope="module")
def nerva_bytes():
    """A T-frame .nerva file of a tiny NeRV (random weights: decoding, not quality, is under test)."""
    config = inr.get("nerv").config_cls.tiny(Geometry.of(T, 32, 48, 25.0))
    variables = inr.spec_of(config).init(config, jax.random.key(0))
    return api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=8)))


@pytest.fixture
def nerva_file(tmp_path, nerva_bytes):
    path = tmp_path / "src" / "clip.nerva"
    path.parent.mkdir()
    path.write_bytes(nerva_bytes)
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any frame is decoded (checks that must come first, do)."""
    def refuse(*args):
        raise AssertionError("a frame was decoded before the bad option was refused")
    monkeypatch.setattr(player, "decode_batch", refuse)


# ------------------------------------------------------------------------------------------------ options

HUGE = "9" * 5000   # int() of more than 4300 digits raises ValueError; float() of it is inf
FIT_OPTIONS = [
    *[["--lr", v] for v in ("nan", "inf", "-inf", "0", "2", "1e400", HUGE)],
    *[["--epochs", v] for v in ("nan", "inf", "0", "-1", "1e300", "1e400")],
    *[["--bpp", v] for v in ("nan", "inf", "0", "25", "1e400")],
    *[["--size", v] for v in ("1e300", "1e400", "nan", "inf", "0", "1e9", "0.0001k", HUGE, "12q")],
    *[["--frames", v] for v in ("99999999999:", "0:99999999999", "²:5", "1_0:20", " 1:5", "a:b", "5", "5:2",
                                "3:3", f"0:{HUGE}", "-1:5")],
    *[["--seed", v] for v in ("1e400", HUGE, "-1", str(2**64), "nan")],
    *[["--batch", v] for v in ("0", "nan", "1e9", HUGE)],
    *[["--bits", v] for v in ("nan", "0", "17", HUGE)],
    *[["--prune", v] for v in ("nan", "inf", "1", "-0.5")],
    *[["--resize", v] for v in ("1000000x5", "0x5", "nanxnan", "5x" + HUGE)],
    ["--checkpoint-every", "0"], ["--embed-bits", "inf"],
]


@pytest.mark.parametrize("option", FIT_OPTIONS, ids=lambda o: f"{o[0]} {o[1][:12]}")
def test_a_bad_fit_option_is_a_one_line_usage_error_that_touches_nothing(option, video, capsys):
    name, value = option
    argv = ["fit", video, "-o", video.with_name("out.nerva"), "--quiet", f"{name}={value}"]   # = : "-1" too
    assert_refused(capsys, argv, 2, name, source=video, keep={"clip.mkv"})


# (option, the attribute it sets, the values a parsed one may take); bounds as documented in eval/cli.py
BOUNDED = [("--lr", "lr", lambda v: 0 < v <= 1), ("--epochs", "epochs", lambda v: 0 < v <= 1e5),
           ("--bpp", "bpp", lambda v: 0 < v <= 24), ("--size", "size", lambda v: 1 <= v <= 2**26),
           ("--prune", "prune", lambda v: 0 <= v < 1), ("--seed", "seed", lambda v: 0 <= v < 2**32),
           ("--batch", "batch", lambda v: 1 <= v <= 1024), ("--bits", "bits", lambda v: 1 <= v <= 16),
           ("--frames", "frames", lambda v: 0 <= v[0] < (v[1] or 10**9 + 1) <= 10**9 + 1),
           ("--resize", "resize", lambda v: all(1 <= x <= 16384 for x in v))]
NUMBERS = st.one_of(st.text(max_size=30), st.floats().map(repr), st.integers(-10**30, 10**30).map(str),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "9" * 5000, "²", "1_0", "0x10", " 3 "]))


@settings(max_examples=400, deadline=None)
# found by hypothesis: control and astral characters repr as up to 10 characters each
@example(option=BOUNDED[[o[0] for o in BOUNDED].index("--size")],
         text="000000" + "\x1f" * 7 + "\U00012544\U0001342f\U00018cd6\U00018d09:0000000" + "\x1f" * 7
              + "\U00012544\U0001342f\U00018cd6\U00018d09")
@given(option=st.sampled_from(BOUNDED), text=st.one_of(NUMBERS, st.tuples(NUMBERS, NUMBERS).map(":".join),
                                                       st.tuples(NUMBERS, NUMBERS).map("x".join)))
def test_any_text_for_a_numeric_option_parses_within_its_bounds_or_is_one_line_refused(option, text):
    name, attr, valid = option
    try:
        args = build_parser().parse_args(["fit", "in.mp4", "-o", "out.nerva", f"{name}={text}"])
    except ConfigError as e:
        assert "\n" not in str(e) and name in str(e) and len(str(e)) < 200
        return
    value = getattr(args, attr)
    assert all(x is None or math.isfinite(x) for x in (value if isinstance(value, tuple) else (value,)))
    assert valid(value), (text, value)


@pytest.mark.parametrize("argv, word", [
    (["--sizes", "1e300"], "--sizes"), (["--sizes", "200000000"], "--sizes"), (["--sizes", "nan,10"], "--sizes"),
    (["--sizes", HUGE], "--sizes"), (["--epochs", "inf"], "--epochs"), (["--points", "0"], "--points"),
    (["--points", "1e9"], "--points"), (["--frames", "0:1e400"], "--frames"), (["--bits", "nan"], "--bits"),
])
def test_a_bad_rd_option_is_a_one_line_usage_error(argv, word, video, capsys):
    out = video.with_name("rd.jsonl")
    assert_refused(capsys, ["rd", video, "-o", out, *argv], 2, word, source=video, keep={"clip.mkv"})


@pytest.mark.parametrize("argv, word", [
    (["--cache-mb", "nan"], "--cache-mb"), (["--cache-mb", "inf"], "--cache-mb"), (["--cache-mb", "0"], "--cache-mb"),
    (["--cache-mb", "1e400"], "--cache-mb"), (["--prefetch", "-1"], "--prefetch"), (["--prefetch", HUGE], "--prefetch"),
    (["--reference-start", "1e400"], "--reference-start"), (["--port", "70000"], "--port"),
    (["--batch", "nan"], "--batch"),
])
def test_a_bad_play_option_is_a_one_line_usage_error(argv, word, nerva_file, capsys):
    assert_refused(capsys, ["play", nerva_file, "--no-browser", *argv], 2, word, source=nerva_file,
                   keep={"clip.nerva"})


def test_a_cache_too_small_for_one_batch_of_the_files_frames_is_refused(nerva_file, capsys):
    one_batch_mib = 2 * 32 * 48 * 3 / 2**20
    argv = ["play", nerva_file, "--no-browser", "--cache-mb", str(one_batch_mib / 2)]
    assert_refused(capsys, argv, 2, "--cache-mb", "one batch of 2 frames of 48x32", source=nerva_file,
                   keep={"clip.nerva"})


# ------------------------------------------------------------------------------------------------ nerva decode


@pytest.mark.parametrize("frames, words", [
    ("9:", ["--frames 9:", "8 frames"]), ("8:", ["--frames 8:", "8 frames"]), ("0:9", ["0:9", "8 frames"]),
    ("7:9", ["7:9"]), ("3:3", ["frame range"]), ("4:2", ["frame range"]), (":0", ["frame range"]),
])
def test_decode_refuses_every_out_of_range_or_empty_frame_range_before_decoding(frames, words, nerva_file,
                                                                               capsys, no_decoding):
    argv = ["decode", nerva_file, "-o", nerva_file.with_name("out.mkv"), "--frames", frames]
    assert_refused(capsys, argv, 2, *words, source=nerva_file, keep={"clip.nerva"})


def test_decode_refuses_an_unsupported_suffix_before_decoding(nerva_file, capsys, no_decoding):
    argv = ["decode", nerva_file, "-o", nerva_file.with_name("out.gif")]
    assert_refused(capsys, argv, 2, "unsupported suffix", source=nerva_file, keep={"clip.nerva"})


def test_decode_refuses_to_write_over_its_input_also_through_a_link(tmp_path, nerva_bytes, capsys, no_decoding):
    src = tmp_path / "src" / "clip.mkv"           # a .nerva file with a video's name: -o it would replace it
    src.parent.mkdir()
    src.write_bytes(nerva_bytes)
    (src.parent / "link.mkv").symlink_to(src)
    for out in (src, src.parent / "link.mkv"):
        assert_refused(capsys, ["decode", src, "-o", out], 2, "input file itself", source=src,
                       keep={"clip.mkv", "link.mkv"})


def test_decode_refuses_a_non_empty_directory_and_a_file_where_a_folder_goes(nerva_file, capsys, no_decoding):
    folder = nerva_file.with_name("frames")
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    assert_refused(capsys, ["decode", nerva_file, "-o", folder], 2, "not empty", source=nerva_file,
                   keep={"clip.nerva", "frames"})
    assert [p.name for p in folder.iterdir()] == ["mine.txt"] and (folder / "mine.txt").read_text() == "keep me"
    plain = nerva_file.with_name("plain")
    plain.write_text("a file")
    assert_refused(capsys, ["decode", nerva_file, "-o", f"{plain}/"], 2, "not a directory", source=nerva_file,
                   keep={"clip.nerva", "frames", "plain"})
    assert plain.read_text() == "a file"


def test_decode_refuses_an_output_below_a_file_before_decoding(nerva_file, capsys, no_decoding):
    argv = ["decode", nerva_file, "-o", nerva_file / "sub" / "out.mkv"]
    assert_refused(capsys, argv, 2, "not a writable directory", source=nerva_file, keep={"clip.nerva"})


@pytest.mark.parametrize("out", ["out.mp4", "out.mkv", "out.y4m", "frames/"])
def test_decode_failing_mid_way_leaves_no_partial_output(out, nerva_file, monkeypatch, capsys):
    real, calls = player.decode_batch, []

    def dies_on_the_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise MemoryError("simulated: the machine ran out of memory")
        return real(*args)

    monkeypatch.setattr(player, "decode_batch", dies_on_the_third_batch)
    before = sha256(nerva_file)
    assert main(["decode", str(nerva_file), "-o", f"{nerva_file.parent}/{out}"]) == 1
    assert len([x for x in capsys.readouterr().err.splitlines() if x.strip()]) == 1
    assert len(calls) >= 3 and sha256(nerva_file) == before
    assert {p.name for p in nerva_file.parent.iterdir()} == {"clip.nerva"}


def test_decode_streams_frames_its_peak_memory_does_not_grow_with_the_frame_count(tmp_path):
    """numpy's allocations are traced: holding every frame (the old decode) adds H·W·3 bytes per frame to the
    peak; streaming holds the player's cache (6 batches of 2 frames) and one frame in the encoder, whatever
    the count. 360 more frames are 1.66 MB; the peaks may differ by a tenth of that."""
    config = inr.get("nerv").config_cls.tiny(Geometry.of(400, 32, 48, 25.0))
    variables = inr.spec_of(config).init(config, jax.random.key(1))
    path = tmp_path / "long.nerva"
    path.write_bytes(api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=8))))
    assert main(["decode", str(path), "-o", str(tmp_path / "warm.mkv"), "--frames", "0:4"]) == 0   # compile
    peaks = {}
    for n in (40, 400):
        tracemalloc.start()
        try:
            assert main(["decode", str(path), "-o", str(tmp_path / f"{n}.mkv"), "--frames", f"0:{n}"]) == 0
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[400] - peaks[40] < (400 - 40) * 32 * 48 * 3 / 10, peaks
    assert read_video(tmp_path / "400.mkv").frames.shape == (400, 32, 48, 3)


# ------------------------------------------------------------------------------------------------ video inputs


def _h264(path: Path, frames) -> bytes:
    with av.open(str(path), "w", format="h264") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path.read_bytes()


def _declaring_a_huge_duration(tmp_path: Path) -> bytes:
    """A 3-frame 64x64 mkv whose header claims 10^9 s (25·10^9 frames, 3·10^14 bytes of RGB)."""
    data = bytearray(write_video(tmp_path / "short.mkv", synthetic_clip(3, 64, 64)).read_bytes())
    at = data.find(b"\x44\x89\x88")   # Matroska Duration element, an 8-byte float, in milliseconds
    assert at > 0
    data[at + 3:at + 11] = struct.pack(">d", 1e12)
    return bytes(data)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[bytes, list[str]]]:
    """name -> (file bytes, words the one-line error must hold)."""
    carphone = CARPHONE.read_bytes()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    grows = _h264(scratch / "a.h264", synthetic_clip(3, 32, 32)) + _h264(scratch / "b.h264", synthetic_clip(3, 48, 64))
    return {
        "empty.mp4": (b"", ["empty"]),
        "noise.mp4": (bytes(range(256)) * 64, ["not a video"]),
        "text.mkv": (b"this is a shopping list, not a video\n" * 40, ["not a video"]),
        "truncated.mp4": (carphone[: len(carphone) // 2], ["not a video"]),
        "header_only.y4m": (b"YUV4MPEG2 W16 H16 F25:1 Ip A1:1 C420jpeg\n", ["zero frames"]),
        "huge_frame.y4m": (b"YUV4MPEG2 W16000 H16000 F25:1 Ip C444\nFRAME\n" + bytes(1000), ["zero frames"]),
        "resizes.h264": (grows, ["frame 3 is 64x48", "32x32"]),
        "forever.mkv": (_declaring_a_huge_duration(scratch), ["declares 25,000,000,000 frames", "GB"]),
    }


@pytest.mark.parametrize("name", ["empty.mp4", "noise.mp4", "text.mkv", "truncated.mp4", "header_only.y4m",
                                  "huge_frame.y4m", "resizes.h264", "forever.mkv"])
def test_a_bad_video_input_is_a_one_line_error_before_any_fitting(name, tmp_path, capsys):
    data, words = _bad_inputs(tmp_path)[name]
    src = tmp_path / "src" / name
    src.parent.mkdir()
    src.write_bytes(data)
    argv = ["fit", src, "-o", src.with_name("out.nerva"), "--size", "12k", "--epochs", "1", "--quiet"]
    assert_refused(capsys, argv, 1, name, *words, source=src, keep={name})


@pytest.mark.parametrize("frames, words", [("200:", ["start=200", "120 frames"]), ("0:500", ["stop=500", "120"]),
                                           ("119:121", ["stop=121"]),
                                           ("0:999999999", ["stop=999999999", "120 frames"])])
def test_a_frame_range_outside_the_video_is_a_one_line_error(frames, words, tmp_path, capsys):
    src = tmp_path / "src" / "carphone.mp4"
    src.parent.mkdir()
    shutil.copy(CARPHONE, src)
    argv = ["fit", src, "-o", src.with_name("out.nerva"), "--frames", frames, "--quiet"]
    assert_refused(capsys, argv, 1, *words, source=src, keep={"carphone.mp4"})


def test_a_video_too_large_for_memory_is_refused_before_a_frame_is_decoded(video, monkeypatch, capsys):
    import inr.video as video_io
    decoded = []
    real = video_io._frame_to_rgb
    monkeypatch.setattr(video_io, "_frame_to_rgb", lambda *a: decoded.append(1) or real(*a))
    monkeypatch.setattr(video_io, "frame_memory_limit", lambda: 11 * 176 * 144 * 3)   # 11 of its 12 frames
    argv = ["fit", video, "-o", video.with_name("out.nerva"), "--quiet"]
    assert_refused(capsys, argv, 1, "declares 12 frames of 176x144", source=video, keep={"clip.mkv"})
    assert decoded == []


def test_an_odd_sized_video_fits_and_decodes(tmp_path, capsys):
    src = write_video(tmp_path / "odd.mkv", synthetic_clip(4, 33, 47), lossless=True)
    out = tmp_path / "odd.nerva"
    assert main(["fit", str(src), "-o", str(out), "--model", "nerv", "--size", "12k", "--epochs", "1",
                 "--quiet"]) == 0
    assert main(["decode", str(out), "-o", str(tmp_path / "odd_decoded.mp4")]) == 0
    assert read_video(tmp_path / "odd_decoded.mp4").frames.shape == (4, 33, 47, 3)
