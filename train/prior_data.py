"""The training clips of RECOMBINER's learned prior: bigbuckbunny crops and pans over stills, never a test clip."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from inr import video
from inr.config import ConfigBase, Limit
from inr.errors import ConfigError

# What the set must never contain, as data: clip -> frames [start, stop) we test on (stop None: to the end).
# RECOMBINER (He et al. 2024) learns its weight prior from training clips; a test frame among them would
# let the prior memorise the very signal whose rate we report.
TEST_CLIPS: dict[str, tuple[int, int | None]] = {"carphone": (0, None), "bigbuckbunny": (66, 132)}
BBB_SIZE = (720, 1280)                       # (H, W) of the bundled bigbuckbunny.mp4
BBB_FRAMES = (0, TEST_CLIPS["bigbuckbunny"][0])   # the frames segments may come from: all before the test range
CROP_SCALES = (0.25, 1.0)   # a crop's side as a fraction of the largest crop of the output's aspect; drawn
# log-uniformly, the low end raised so a crop is never smaller than the output (no upsampling)

# scikit-image stills bundled in its wheel (loaded without network), with their (H, W) so recipes are
# checked without loading them. Not used: cat (= chelsea), images fetched on demand (skin, lily, ...),
# synthetic or binary ones (colorwheel, horse, logo, checkerboard).
STILLS: dict[str, tuple[int, int]] = {
    "astronaut": (512, 512), "coffee": (400, 600), "chelsea": (300, 451), "rocket": (427, 640),
    "immunohistochemistry": (512, 512), "hubble_deep_field": (872, 1000), "retina": (1411, 1411),
    "camera": (512, 512), "brick": (512, 512), "grass": (512, 512), "gravel": (512, 512),
    "coins": (303, 384), "moon": (512, 512)}
PAN_COVER = (0.2, 0.6)   # the window's side as a fraction of the still's (its tighter axis) at frame 0, drawn
# log-uniformly; the low end raised so a window never has fewer still pixels than output pixels. A still
# that cannot hold the output at the high end is left out of the recipe's pans.
PAN_SLOWEST = 0.25       # a pan's speed is drawn in [PAN_SLOWEST, 1] x Recipe.pan_speed

Progress = Callable[[int], object]   # callable(total) -> bar with .update(n) and .close(), as train.loop's


@dataclasses.dataclass(frozen=True)
class Recipe(ConfigBase):
    """Everything that decides the training set: the same recipe gives the same bytes (recipe_hash)."""

    clips: int = 24           # clips in the set
    pan_share: float = 0.5    # fraction of the clips that are pans over stills; the rest are bigbuckbunny crops
    frames: int = 16          # T, frames per clip (at most the 66 bigbuckbunny frames before the test range)
    height: int = 48          # H, output pixels
    width: int = 64           # W, output pixels
    seed: int = 0             # the one seed every draw comes from
    pan_speed: float = 2.0    # a pan's top speed at its first frame, output pixels per frame
    pan_zoom: float = 0.1     # a pan's largest change of scale over the clip, as a fraction (0: no zoom)

    LIMITS: ClassVar[dict[str, Limit]] = dict(
        clips=Limit(1, 100_000), pan_share=Limit(0.0, 1.0), frames=Limit(1, BBB_FRAMES[1] - BBB_FRAMES[0]),
        height=Limit(1, BBB_SIZE[0]), width=Limit(1, BBB_SIZE[1]), seed=Limit(0, 2 ** 63 - 1),
        pan_speed=Limit(0.0, 16.0, open_lo=True), pan_zoom=Limit(0.0, 0.5))

    def __post_init__(self):
        self.check_limits()
        for name in ("pan_share", "pan_speed", "pan_zoom"):   # 1 and 1.0: one recipe, one hash
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.pans and not usable_stills(self):
            tallest, widest = (math.floor(PAN_COVER[1] * max(sides)) for sides in zip(*STILLS.values()))
            field, most = ("height", tallest) if self.height > tallest else ("width", widest)
            raise ConfigError(f"Recipe.{field}={getattr(self, field)} is too large for pans: no still holds a "
                              f"{self.width}x{self.height} window in {PAN_COVER[1]:.0%} of its side (at most "
                              f"{most}); lower it or set pan_share=0")

    @property
    def pans(self) -> int:
        """How many of the clips are pans (the rest are bigbuckbunny segments)."""
        return math.floor(self.clips * self.pan_share + 0.5)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A bigbuckbunny clip's source: frames [start, stop) of the video, each cropped to `box` and area-resampled."""

    start: int
    stop: int
    box: tuple[int, int, int, int]   # (top, left, height, width) of the crop, source pixels

    name: ClassVar[str] = "bigbuckbunny"


@dataclasses.dataclass(frozen=True)
class Pan:
    """A pan's source: a window on a still whose centre moves on a straight line at constant velocity while its
    scale changes geometrically; output pixel (i, j) of frame t averages the still over the window's cell."""

    still: str                     # name in STILLS (a skimage.data function)
    centre: tuple[float, float]    # (y, x) of the window's centre at frame 0, still pixels (pixel k spans [k, k+1))
    velocity: tuple[float, float]  # (dy, dx) of the centre, still pixels per frame
    scale: float                   # still pixels per output pixel at frame 0
    zoom: float                    # natural log of the scale's change from the first frame to the last
    frames: int                    # T

    def window(self, t: int) -> tuple[float, float, float]:
        """(centre y, centre x, scale) of frame t: where the output's frame t samples the still."""
        scale = self.scale * math.exp(self.zoom * t / max(self.frames - 1, 1))
        return self.centre[0] + self.velocity[0] * t, self.centre[1] + self.velocity[1] * t, scale


@dataclasses.dataclass(frozen=True, eq=False)
class TrainingClip:
    """One clip of the set: frames (T, H, W, 3) uint8 and where they came from."""

    frames: np.ndarray
    source: Segment | Pan


# --------------------------------------------------------------------------------------------- the set


def training_clips(recipe: Recipe, progress: Progress | None = None) -> list[np.ndarray]:
    """The recipe's clips, each (T, H, W, 3) uint8: bigbuckbunny segments first, then pans."""
    return [clip.frames for clip in training_set(recipe, progress)]


def training_set(recipe: Recipe, progress: Progress | None = None) -> list[TrainingClip]:
    """The recipe's clips with their provenance (plan(recipe), rendered). bigbuckbunny is decoded once, only
    frames [0, the last segment's stop), which plan keeps before the test range."""
    sources = plan(recipe)
    bar = progress(len(sources)) if progress else None
    stop = max((s.stop for s in sources if isinstance(s, Segment)), default=0)
    bbb = _read_bbb(stop) if stop else None
    stills: dict[str, np.ndarray] = {}
    out = []
    for source in sources:
        if isinstance(source, Segment):
            frames = _render_segment(bbb, source, recipe)
        else:
            frames = _render_pan(stills.setdefault(source.still, _load_still(source.still)), source, recipe)
        out.append(TrainingClip(frames, source))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out


def recipe_hash(recipe: Recipe, clips: Sequence[np.ndarray] | None = None) -> str:
    """sha256 hex of the recipe and its clips' shapes and bytes: names the exact data a prior was learned from.
    `clips`: training_clips(recipe) when the caller has them already (they are made otherwise)."""
    clips = training_clips(recipe) if clips is None else clips
    digest = hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode())
    for frames in clips:
        frames = np.ascontiguousarray(frames, dtype=np.uint8)
        digest.update(repr(frames.shape).encode())
        digest.update(frames.tobytes())
    return digest.hexdigest()


def plan(recipe: Recipe) -> list[Segment | Pan]:
    """Where each clip comes from, drawn without reading any source: segments, then pans.

    Clip i of a kind draws from its own generator, seeded by (seed, kind, i), so it does not depend on how
    many clips the recipe asks for; pans take the usable stills in a seeded order, round robin."""
    segments = [_draw_segment(recipe, _rng(recipe, 0, i)) for i in range(recipe.clips - recipe.pans)]
    stills = usable_stills(recipe)
    order = _rng(recipe, 2, 0).permutation(len(stills))
    pans = [_draw_pan(recipe, stills[order[i % len(stills)]], _rng(recipe, 1, i)) for i in range(recipe.pans)]
    return [*segments, *pans]


def usable_stills(recipe: Recipe) -> list[str]:
    """The stills that hold the recipe's output within PAN_COVER's widest window, in STILLS order."""
    return [name for name, (h, w) in STILLS.items()
            if recipe.height <= PAN_COVER[1] * h and recipe.width <= PAN_COVER[1] * w]


def _rng(recipe: Recipe, kind: int, index: int) -> np.random.Generator:
    return np.random.default_rng([recipe.seed, kind, index])


# --------------------------------------------------------------------------------------------- bigbuckbunny


def _draw_segment(recipe: Recipe, rng: np.random.Generator) -> Segment:
    """A random run of T frames within BBB_FRAMES and a random crop of the output's aspect at a random scale."""
    start = int(rng.integers(BBB_FRAMES[0], BBB_FRAMES[1] - recipe.frames + 1))
    aspect = recipe.width / recipe.height
    largest = min(BBB_SIZE[0], BBB_SIZE[1] / aspect)   # height of the largest crop of the output's aspect
    low = max(CROP_SCALES[0], recipe.height / largest, recipe.width / (largest * aspect))
    scale = math.exp(rng.uniform(math.log(low), math.log(CROP_SCALES[1])))
    height = min(BBB_SIZE[0], max(recipe.height, round(scale * largest)))
    width = min(BBB_SIZE[1], max(recipe.width, round(height * aspect)))
    top = int(rng.integers(0, BBB_SIZE[0] - height + 1))
    left = int(rng.integers(0, BBB_SIZE[1] - width + 1))
    return Segment(start, start + recipe.frames, (top, left, height, width))


def _read_bbb(stop: int) -> np.ndarray:
    """bigbuckbunny frames [0, stop), (stop, 720, 1280, 3) uint8; refuses to read into the test range."""
    if stop > BBB_FRAMES[1]:   # plan never asks for this; the check stands guard over any later change
        raise RuntimeError(f"bigbuckbunny frames from {BBB_FRAMES[1]} on are test frames, asked for [0, {stop})")
    frames = video.read_video(video.bundled_clip("bigbuckbunny"), 0, stop).frames
    if frames.shape[1:3] != BBB_SIZE:
        raise RuntimeError(f"bigbuckbunny is {frames.shape[1:3]}, expected {BBB_SIZE}")
    return frames


def _render_segment(bbb: np.ndarray, segment: Segment, recipe: Recipe) -> np.ndarray:
    """The segment's frames, (T, H, W, 3) uint8: each crop area-resampled to the output size."""
    top, left, height, width = segment.box
    rows = _area_weights(top + (np.arange(recipe.height) + 0.5) * height / recipe.height,
                         height / recipe.height, BBB_SIZE[0])
    cols = _area_weights(left + (np.arange(recipe.width) + 0.5) * width / recipe.width,
                         width / recipe.width, BBB_SIZE[1])
    return np.stack([_sample(frame, rows, cols) for frame in bbb[segment.start:segment.stop]])


# --------------------------------------------------------------------------------------------- pans


def _draw_pan(recipe: Recipe, still: str, rng: np.random.Generator) -> Pan:
    """A random window scale, zoom, direction and speed on `still`, and a start from which the whole path
    stays inside it (the speed shrinks where the still leaves too little room for the drawn one)."""
    h, w = STILLS[still]
    tight = max(recipe.height / h, recipe.width / w)   # the cover at one still pixel per output pixel
    cover = math.exp(rng.uniform(math.log(max(PAN_COVER[0], tight)), math.log(PAN_COVER[1])))
    scale = cover / tight
    zoom = rng.uniform(-1.0, 1.0) * math.log1p(recipe.pan_zoom)
    widest = scale * max(1.0, math.exp(zoom))
    half = np.array([_half_extent(recipe.height, widest), _half_extent(recipe.width, widest)])
    room = np.array([h, w]) - 2 * half   # where the centre may go: [half, side - half]
    angle = rng.uniform(0.0, 2 * math.pi)
    speed = rng.uniform(PAN_SLOWEST, 1.0) * recipe.pan_speed * scale   # still pixels per frame
    velocity = speed * np.array([math.sin(angle), math.cos(angle)])
    travel = velocity * max(recipe.frames - 1, 0)
    fit = min([1.0, *(r / abs(d) for r, d in zip(room, travel) if d != 0)])
    velocity, travel = velocity * fit, travel * fit
    low = half + np.maximum(0.0, -travel)
    high = np.array([h, w]) - half - np.maximum(0.0, travel)
    centre = low + rng.uniform(0.0, 1.0, 2) * np.maximum(high - low, 0.0)
    return Pan(still, (float(centre[0]), float(centre[1])), (float(velocity[0]), float(velocity[1])),
               float(scale), float(zoom), recipe.frames)


def _half_extent(n: int, scale: float) -> float:
    """Half the still span that n output pixels at `scale` read (_area_weights widens cells below one pixel)."""
    return (n - 1) / 2 * scale + max(scale, 1.0) / 2


def _load_still(name: str) -> np.ndarray:
    """The bundled still as (H, W, 3) float32 in 0..255 (grey replicated)."""
    try:
        import skimage.data
    except ImportError:
        raise ConfigError("Recipe.pan_share > 0: pans need scikit-image (pip install 'nerva[prior]')") from None
    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype != np.uint8 or image.shape[:2] != STILLS[name]:
        raise RuntimeError(f"skimage.data.{name} is {image.dtype} {image.shape}, expected uint8 {STILLS[name]}")
    if image.ndim == 2:
        image = image[..., None]
    return np.broadcast_to(image[..., :3], (*image.shape[:2], 3)).astype(np.float32)


def _render_pan(still: np.ndarray, pan: Pan, recipe: Recipe) -> np.ndarray:
    """The pan's frames, (T, H, W, 3) uint8: each the window of its frame, area-sampled from the still."""
    frames = []
    for t in range(recipe.frames):
        cy, cx, scale = pan.window(t)
        rows = _area_weights(cy + (np.arange(recipe.height) + 0.5 - recipe.height / 2) * scale, scale,
                             still.shape[0])
        cols = _area_weights(cx + (np.arange(recipe.width) + 0.5 - recipe.width / 2) * scale, scale,
                             still.shape[1])
        frames.append(_sample(still, rows, cols))
    return np.stack(frames)


# --------------------------------------------------------------------------------------------- resampling


def _area_weights(centres: np.ndarray, cell: float, size: int) -> np.ndarray:
    """(len(centres), size) float32 weights: output sample i is the mean of the source over
    [c_i - w/2, c_i + w/2] with w = max(cell, 1), source pixel k spanning [k, k+1).

    An area (box) filter when shrinking, and exactly linear interpolation at cell <= 1, with sub-pixel centres
    either way: one separable resampler for crops and for moving windows, in NumPy, so its bytes do not hang
    on a scaler's SIMD path (inr.video resizes whole frames with swscale, which can neither crop nor shift)."""
    width = max(cell, 1.0)
    low = centres[:, None] - width / 2
    if low.min() < -1e-6 or low.max() + width > size + 1e-6:
        raise RuntimeError(f"a sample reaches outside the source's {size} pixels")
    edges = np.arange(size + 1, dtype=np.float64)
    overlap = np.minimum(low + width, edges[1:]) - np.maximum(low, edges[:-1])
    return (np.clip(overlap, 0.0, None) / width).astype(np.float32)


def _sample(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """rows (H, h) @ image (h, w, 3) @ cols (W, w)^T -> (H, W, 3) uint8, over the weights' support only."""
    (r0, r1), (c0, c1) = _support(rows), _support(cols)
    part = np.asarray(image[r0:r1, c0:c1], dtype=np.float32)
    tall = (rows[:, r0:r1] @ part.reshape(r1 - r0, -1)).reshape(len(rows), c1 - c0, 3)
    return np.rint(cols[:, c0:c1] @ tall).clip(0, 255).astype(np.uint8)


def _support(weights: np.ndarray) -> tuple[int, int]:
    """[first, last + 1) of the source pixels that any output sample reads."""
    used = np.flatnonzero(weights.any(axis=0))
    return int(used[0]), int(used[-1]) + 1
