"""The prior's training set: deterministic bytes, never a test frame, pans that move as their path says, and
bigbuckbunny segments that are consecutive source frames."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.color import rgb2gray
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from inr import video
from inr.errors import ConfigError
from train import prior_data
from train.prior_data import Pan, Recipe, Segment, plan, recipe_hash, training_clips, training_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def made():
    """The default set, and every (file name, start, stop) that inr.video.read_video was asked for meanwhile."""
    reads, real = [], video.read_video

    def spy(path, start=0, stop=None, size=None):
        reads.append((Path(path).name, start, stop))
        return real(path, start, stop, size)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(video, "read_video", spy)
        return training_set(Recipe()), reads


@pytest.fixture(scope="module")
def default_set(made):
    return made[0]


def test_the_default_recipe_gives_24_uint8_clips_of_its_size_half_of_them_pans(default_set):
    r = Recipe()
    assert len(default_set) == r.clips == 24
    for clip in default_set:
        assert clip.frames.dtype == np.uint8 and clip.frames.shape == (r.frames, r.height, r.width, 3)
    kinds = [type(c.source) for c in default_set]
    assert kinds == [Segment] * 12 + [Pan] * 12
    assert len({c.source.still for c in default_set[12:]}) == 12   # round robin over distinct stills


def test_same_recipe_gives_the_same_bytes_twice_and_in_a_fresh_process(default_set):
    r = Recipe()
    digest = recipe_hash(r, [c.frames for c in default_set])
    assert recipe_hash(r) == digest
    code = "from train.prior_data import Recipe, recipe_hash; print(recipe_hash(Recipe()))"
    fresh = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == digest
    assert recipe_hash(dataclasses.replace(r, clips=2, seed=1)) != recipe_hash(dataclasses.replace(r, clips=2))


def test_no_test_frame_is_read_or_used(made):
    default_set, reads = made
    bbb_start = prior_data.TEST_CLIPS["bigbuckbunny"][0]
    assert reads and all(name == "bigbuckbunny.mp4" for name, _, _ in reads)   # carphone is never read
    assert all(stop is not None and stop <= bbb_start for _, _, stop in reads)
    assert len(reads) == 1   # decoded once for all segments
    for source in [c.source for c in default_set] + [
            s for seed in range(50) for frames in (1, 16, 66) for s in plan(Recipe(40, 0.25, frames, seed=seed))]:
        if isinstance(source, Segment):
            assert 0 <= source.start < source.stop <= bbb_start


def test_pans_alone_read_no_video_and_segments_alone_load_no_still(monkeypatch):
    monkeypatch.setattr(video, "read_video", lambda *a, **k: pytest.fail("a pan read a video"))
    assert len(training_clips(Recipe(clips=2, pan_share=1.0))) == 2
    monkeypatch.undo()
    monkeypatch.setattr(prior_data, "_load_still", lambda name: pytest.fail("a segment loaded a still"))
    assert len(training_clips(Recipe(clips=2, pan_share=0.0))) == 2


def test_pans_move_at_their_paths_velocity_within_a_pixel(default_set):
    pans = [c for c in default_set if isinstance(c.source, Pan)]
    for clip in pans:
        grey = [rgb2gray(f) * window("hann", f.shape[:2]) for f in clip.frames]   # no wrap-around edges
        assert all(np.abs(np.diff(clip.frames.astype(int), axis=0)).mean(axis=(1, 2, 3)) > 0)
        for t in range(len(grey) - 1):
            shift, _, _ = phase_cross_correlation(grey[t], grey[t + 1], upsample_factor=20)
            expected = np.array(clip.source.velocity) / clip.source.window(t)[2]   # output pixels per frame
            assert np.abs(shift - expected).max() < 1.0, (clip.source, t, shift, expected)
    assert max(np.hypot(*c.source.velocity) / c.source.scale for c in pans) > 1.0   # some move fast


def _box_mean(frames: np.ndarray, start: int, length: int, n: int, axis: int) -> np.ndarray:
    """Means of n equal cells over [start, start + length) along axis, by an integral image (pixel k spans
    [k, k+1)): an area resample written apart from prior_data's overlap weights."""
    cum = np.concatenate([np.zeros_like(np.take(frames, [0], axis)), np.cumsum(frames, axis)], axis)
    edges = start + np.arange(n + 1) * length / n
    k = np.floor(edges).astype(int).clip(0, frames.shape[axis] - 1)
    shape = [1] * frames.ndim
    shape[axis] = n + 1
    frac = (edges - k).reshape(shape)
    at = np.take(cum, k, axis) + frac * (np.take(cum, k + 1, axis) - np.take(cum, k, axis))
    return np.diff(at, axis=axis) / (length / n)


def test_segments_are_consecutive_source_frames_area_resampled(default_set):
    r = Recipe()
    path = video.bundled_clip("bigbuckbunny")
    for clip in [c for c in default_set if isinstance(c.source, Segment)][:4]:
        s = clip.source
        top, left, height, width = s.box
        crops = video.read_video(path, s.start, s.stop).frames[:, top:top + height, left:left + width]
        expected = _box_mean(_box_mean(crops.astype(np.float64), 0, height, r.height, 1), 0, width, r.width, 2)
        assert np.abs(clip.frames - expected).max() <= 1.0


def test_clip_i_does_not_depend_on_how_many_clips_the_recipe_asks_for():
    small, large = plan(Recipe(clips=8)), plan(Recipe(clips=16))
    assert small[:4] == large[:4] and small[4:] == large[8:12]


def test_recipe_round_trips_through_a_json_dict():
    r = Recipe(clips=5, pan_share=1, seed=3)
    assert r.pan_share == 1.0 and isinstance(r.pan_share, float)   # 1 and 1.0: one recipe, one hash
    assert Recipe.from_dict(json.loads(json.dumps(r.to_dict()))) == r == Recipe(**dataclasses.asdict(r))


@pytest.mark.parametrize("field, value", [
    ("clips", 0), ("clips", 2.5), ("pan_share", 1.5), ("pan_share", -0.1), ("frames", 0), ("frames", 67),
    ("height", 0), ("height", 721), ("width", -1), ("width", 1281), ("seed", -1), ("pan_speed", 0.0),
    ("pan_zoom", 0.6), ("width", 900)])   # 900 columns: no still holds pans that wide
def test_an_invalid_recipe_raises_a_one_line_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"Recipe.{field}") as err:
        Recipe(**{field: value})
    assert "\n" not in str(err.value)


def test_a_wide_recipe_without_pans_is_valid():
    assert Recipe(width=900, pan_share=0.0).pans == 0


def test_every_still_loads_offline_with_its_recorded_size():
    for name, (h, w) in prior_data.STILLS.items():
        still = prior_data._load_still(name)
        assert still.shape == (h, w, 3), name


def test_progress_counts_every_clip():
    counts = []

    class Bar:
        def update(self, n):
            counts.append(n)

        def close(self):
            counts.append("closed")

    training_set(Recipe(clips=3, pan_share=1.0), progress=lambda total: counts.append(total) or Bar())
    assert counts == [3, 1, 1, 1, "closed"]
