"""Baseline codecs through the bundled ffmpeg: shapes, exact rates, monotone CRF, PSNR agreeing with ffmpeg."""

import dataclasses
import subprocess

import numpy as np
import pytest

from codec.metrics import measure, psnr
from eval import baselines
from eval.baselines import CODECS, BaselineError, decode, encode, ffmpeg_exe, ffmpeg_version, run_point
from eval.results import Row
from inr.video import bundled_clip, read_video

T, H, W = 10, 144, 176


@pytest.fixture(scope="module")
def carphone():
    """The first 10 decoded frames of carphone (T, H, W, 3) uint8 and its fps: the reference for every codec."""
    video = read_video(bundled_clip("carphone"), 0, T)
    return video.frames, video.fps


@pytest.mark.parametrize("codec", list(CODECS))
def test_every_codec_round_trips_ten_frames_with_an_exact_rate_below_the_file_size(codec, carphone, tmp_path):
    frames, fps = carphone
    encoded = encode(frames, fps, codec, CODECS[codec].crfs[2], tmp_path)
    decoded, decode_fps = decode(encoded.path)
    assert decoded.shape == (T, H, W, 3) and decoded.dtype == np.uint8
    assert decode_fps > 0
    assert 0 < encoded.bytes_from_packets <= encoded.bytes < encoded.path.stat().st_size
    assert 0 < 8 * encoded.bytes / (T * H * W) < 8 * encoded.path.stat().st_size / (T * H * W)
    assert encoded.args[0] == ffmpeg_exe() and "passthrough" in encoded.args
    assert encoded.args[-1] == str(encoded.path)


@pytest.mark.parametrize("codec", list(CODECS))
def test_higher_crf_gives_fewer_bytes_and_lower_psnr(codec, carphone, tmp_path):
    frames, fps = carphone
    low, high = CODECS[codec].crfs[1], CODECS[codec].crfs[-2]
    points = []
    for crf in (low, high):
        encoded = encode(frames, fps, codec, crf, tmp_path)
        points.append((encoded.bytes, measure(frames, decode(encoded.path)[0]).psnr))
    (bytes_low, psnr_low), (bytes_high, psnr_high) = points
    assert bytes_high < bytes_low and psnr_high < psnr_low


def test_x264_crf0_reaches_the_420_ceiling_so_encode_and_decode_use_one_colour_matrix(carphone, tmp_path):
    frames, fps = carphone
    encoded = encode(frames, fps, "x264-medium", 0, tmp_path)
    # Only chroma subsampling is lost; a BT.601/BT.709 or range mismatch would cost ~10 dB.
    assert measure(frames, decode(encoded.path)[0]).psnr > 42.0


def test_encoders_informational_sei_is_not_in_the_stream(carphone, tmp_path):
    frames, fps = carphone
    for codec in ("x264-medium", "x265-medium"):
        encoded = encode(frames, fps, codec, 30, tmp_path)
        assert b"H.26" not in encoded.path.read_bytes()   # "x264 - core ... H.264/MPEG-4 AVC codec" etc.


def _ffmpeg_psnr_stats(reference, decoded, workdir) -> list[float]:
    """Per-frame `psnr_avg` of ffmpeg's psnr filter on two lossless rgb24 inputs (stats_file lines)."""
    workdir.mkdir(exist_ok=True)
    raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "25", "-i"]
    reference.tofile(workdir / "ref.rgb")
    decoded.tofile(workdir / "dec.rgb")
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *raw, "dec.rgb", *raw, "ref.rgb",
         "-lavfi", "[0:v]format=rgb24[a];[1:v]format=rgb24[b];[a][b]psnr=stats_file=psnr.log", "-f", "null", "-"],
        cwd=workdir, check=True, capture_output=True,
    )
    lines = (workdir / "psnr.log").read_text().splitlines()
    return [float(dict(f.split(":") for f in line.split())["psnr_avg"]) for line in lines]


def test_our_psnr_agrees_with_ffmpegs_psnr_filter_to_a_hundredth_of_a_db(carphone, tmp_path):
    frames, fps = carphone
    decoded, _ = decode(encode(frames, fps, "x264-medium", 28, tmp_path).path)
    theirs = np.array(_ffmpeg_psnr_stats(frames, decoded, tmp_path / "psnr"))
    ours = np.asarray(psnr(frames, decoded), dtype=np.float64)
    assert len(theirs) == T
    # The stats file prints 2 decimals: per-frame values agree within rounding; so does their mean, which
    # is nerva's video PSNR (ffmpeg's own "average:" pools the MSE over frames instead and differs).
    np.testing.assert_allclose(ours, theirs, atol=0.005 + 1e-4)
    assert abs(measure(frames, decoded).psnr - theirs.mean()) < 0.01


def test_run_point_measures_against_the_given_source_and_records_the_ffmpeg_arguments(carphone, tmp_path):
    frames, fps = carphone
    row = run_point(frames, fps, "carphone", "x264-medium", 28, tmp_path)
    path = tmp_path / "carphone" / "x264-medium-crf28.mp4"
    decoded, _ = decode(path)
    assert row.psnr == measure(frames, decoded).psnr
    assert (row.frames, row.height, row.width, row.preset) == (T, H, W, "crf28")
    assert row.bpp == 8 * row.bytes / (T * H * W) and row.bytes < path.stat().st_size
    assert row.key == "x264-medium|carphone|10|crf28"
    assert row.config["ffmpeg_args"][-1].endswith(".mp4") and "-crf" in row.config["ffmpeg_args"]
    assert row.ffmpeg_version == ffmpeg_version() and row.ffmpeg_version.startswith("ffmpeg version")
    assert Row.from_json(row.to_json()) == row


def test_odd_sized_frames_are_edge_padded_for_420_and_cropped_back(carphone, tmp_path):
    frames, fps = carphone
    odd = np.ascontiguousarray(frames[:, : H - 1, : W - 1])
    row = run_point(odd, fps, "odd", "x264-medium", 23, tmp_path)
    assert (row.height, row.width, row.config["pad"]) == (H - 1, W - 1, [1, 1])
    assert row.psnr > 30


def test_unknown_codec_and_bad_crf_raise_one_line_errors(carphone, tmp_path):
    frames, fps = carphone
    with pytest.raises(BaselineError, match="unknown baseline codec 'x266'.*x264-medium") as info:
        encode(frames, fps, "x266", 28, tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(BaselineError, match="0..63"):
        encode(frames, fps, "av1", 64, tmp_path)


def test_a_missing_ffmpeg_raises_a_one_line_error(carphone, tmp_path, monkeypatch):
    frames, fps = carphone
    monkeypatch.setattr(baselines.imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(tmp_path / "no-ffmpeg"))
    with pytest.raises(BaselineError, match="cannot run ffmpeg at .*no-ffmpeg") as info:
        encode(frames, fps, "x264-medium", 28, tmp_path)
    assert "\n" not in str(info.value)

    def unavailable():
        raise RuntimeError("No ffmpeg exe could be found.\nInstall ffmpeg on your system.")

    monkeypatch.setattr(baselines.imageio_ffmpeg, "get_ffmpeg_exe", unavailable)
    with pytest.raises(BaselineError, match="ffmpeg not available: No ffmpeg exe") as info:
        ffmpeg_version()
    assert "\n" not in str(info.value)


def test_an_ffmpeg_failure_becomes_one_line_with_ffmpegs_reason(carphone, tmp_path, monkeypatch):
    frames, fps = carphone
    broken = dataclasses.replace(CODECS["x264-medium"], encoder="libnonexistent")
    monkeypatch.setitem(CODECS, "broken", broken)
    with pytest.raises(BaselineError, match="ffmpeg failed .*libnonexistent") as info:
        encode(frames, fps, "broken", 28, tmp_path)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())   # no partial output left behind
