"""Classical codecs (x264, x265, SVT-AV1) run through the bundled ffmpeg binary as rate–distortion baselines.

Conventions, shared by every codec here so that their rows are comparable with each other and with nerva:
  * Input: the *decoded source frames* (T, H, W, 3) uint8 RGB, piped to ffmpeg losslessly as raw rgb24.
    Every codec is measured against those same frames (the bundled clips are themselves H.264, so the
    decoded frames, not some pristine original, are the reference).
  * Colour: RGB -> Y'CbCr 4:2:0 with the BT.601 matrix, limited range, done explicitly by ffmpeg's scale
    filter and tagged in the stream (smpte170m, tv), so PyAV converts back with the same matrix. The
    4:2:0 round trip itself loses a little (chroma subsampling), which caps RGB PSNR even at CRF 0
    (x264 crf 0 on carphone: 45.4 dB RGB, 46.0 dB Y).
  * Odd sizes: yuv420p needs even H and W, so an odd last row/column is repeated (edge padding) before
    encoding and cropped after decoding. The padding's bits count; bpp uses the unpadded T*H*W.
  * Rate: the video stream's packet sizes (PyAV demux) plus its extradata (the parameter sets SPS/PPS/VPS
    that mp4 keeps out of the packets; for AV1 a 20-byte copy of the sequence header), not the file size,
    so container overhead is not charged to the codec (mp4 boxes are ~2.2 kB for 120 frames: +28 % at
    0.02 bpp on QCIF carphone, +1 % at 0.5 bpp). The encoders' informational
    SEI (their settings as text: ~0.7 kB for x264, ~2.3 kB for x265, up to 30 % of a low-rate QCIF clip)
    is not written: x264's is removed by the `filter_units` bitstream filter, x265's by `info=0`.
  * Timing: encode_s is the wall clock of the ffmpeg process (default threading, all cores);
    decode_fps is PyAV decoding to RGB uint8.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools
import os
import re
import subprocess
import time
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np

from codec.metrics import measure
from eval.results import Row, new_row
from inr.errors import NervaError, VideoError
from inr.video import read_video


class BaselineError(NervaError):
    """A baseline codec could not run: ffmpeg missing or failing, unknown codec, bad CRF or frames."""


@dataclasses.dataclass(frozen=True)
class Codec:
    """One baseline: an ffmpeg encoder at a fixed speed preset, swept over CRF."""

    encoder: str                 # ffmpeg encoder name
    preset: str                  # the encoder's speed preset
    crfs: tuple[int, ...]        # default CRF ladder, high quality first; spans ~0.02-0.5 bpp on carphone
    max_crf: int                 # valid CRFs are 0..max_crf (51 for x264/x265, 63 for SVT-AV1)
    options: tuple[str, ...] = ()  # extra output arguments (quiet logs; no informational SEI)


# Default CRF ladders, measured on all 120 frames of carphone (176x144) to span ~0.5 down to ~0.02 bpp:
#   x264 medium   crf 13 -> 0.49 bpp / 39.1 dB,  crf 38 -> 0.021 bpp / 26.8 dB
#   x264 veryslow crf 13 -> 0.44 bpp / 39.1 dB,  crf 38 -> 0.021 bpp / 26.5 dB
#   x265 medium   crf 14 -> 0.46 bpp / 39.1 dB,  crf 39 -> 0.019 bpp / 26.6 dB
#   x265 veryslow crf 24 -> 0.13 bpp / 35.6 dB,  crf 39 -> 0.023 bpp / 28.0 dB
#   SVT-AV1 p8    crf 14 -> 0.43 bpp / 39.0 dB,  crf 63 -> 0.017 bpp / 28.0 dB (63 is its coarsest)
_X264_CRFS = (13, 18, 23, 28, 33, 38)
_X265_CRFS = (14, 19, 24, 29, 34, 39)
_X264_OPTIONS = ("-bsf:v", "filter_units=remove_types=6")          # drop SEI NAL units (type 6): x264's text
_X265_OPTIONS = ("-x265-params", "log-level=error:info=0")         # quiet; no settings-text SEI
CODECS: dict[str, Codec] = {
    "x264-medium": Codec("libx264", "medium", _X264_CRFS, 51, _X264_OPTIONS),
    "x264-veryslow": Codec("libx264", "veryslow", _X264_CRFS, 51, _X264_OPTIONS),
    "x265-medium": Codec("libx265", "medium", _X265_CRFS, 51, _X265_OPTIONS),
    "x265-veryslow": Codec("libx265", "veryslow", _X265_CRFS, 51, _X265_OPTIONS),
    # SVT-AV1 preset 8 (of -2..13): the speed of x264 medium on 2 cores; its CRF scale is 0..63.
    "av1": Codec("libsvtav1", "8", (14, 24, 34, 44, 54, 63), 63),
}
CONTAINER = "mp4"
_COLOUR = "scale=out_color_matrix=bt601:out_range=tv,format=yuv420p"
_TAGS = ("-colorspace", "smpte170m", "-color_range", "tv")


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One encoded file: its path, exact rate, encode wall time and the ffmpeg argument list."""

    path: Path
    bytes_from_packets: int      # sum of the video stream's packet sizes
    extradata_bytes: int         # the stream's out-of-band decoder configuration (parameter sets)
    encode_s: float
    args: tuple[str, ...]        # the exact argument list ffmpeg ran with (args[0] is the binary)
    pad: tuple[int, int]         # rows and columns of edge padding added to make H and W even

    @property
    def bytes(self) -> int:
        """The codec's rate in bytes: packets + extradata (everything a decoder needs, no container boxes)."""
        return self.bytes_from_packets + self.extradata_bytes


# --------------------------------------------------------------------------------------------- ffmpeg


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or $IMAGEIO_FFMPEG_EXE)."""
    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (RuntimeError, OSError) as err:
        raise BaselineError(f"ffmpeg not available: {_one_line(err)}") from None


def ffmpeg_version() -> str:
    """First line of `ffmpeg -version`, e.g. "ffmpeg version n9.0.2-... Copyright (c) ..."."""
    return _version_of(ffmpeg_exe())


@functools.cache
def _version_of(exe: str) -> str:
    out = _run([exe, "-hide_banner", "-version"])
    return out.stdout.decode(errors="replace").splitlines()[0].strip()


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ffmpeg with an argument list (no shell); any failure becomes a one-line BaselineError."""
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, check=False, env=_env())
    except OSError as err:
        raise BaselineError(f"cannot run ffmpeg at {args[0]}: {_one_line(err)}") from None
    if done.returncode != 0:
        raise BaselineError(f"ffmpeg failed (exit {done.returncode}): {_reason(done.stderr)}")
    return done


def _env() -> dict[str, str]:
    """The environment for ffmpeg: SVT-AV1 logs to stderr itself, so ask it for errors only (SVT_LOG=1)."""
    return {**os.environ, "SVT_LOG": "1"}


_CONTEXT = re.compile(r"^\[[^]]* @ 0x[0-9a-f]+\]\s*")   # "[vost#0:0 @ 0x55...] " log-context prefix


def _reason(stderr: bytes, keep: int = 4) -> str:
    """ffmpeg's error output as one line: its last `keep` non-empty lines, "[ctx @ 0x...]" prefixes dropped.

    At -loglevel error ffmpeg prints only a few lines, and the cause (e.g. "Unknown encoder 'x'") often
    comes before the generic last line ("Error opening output files: Encoder not found").
    """
    text = stderr.decode(errors="replace")
    lines = [_CONTEXT.sub("", line.strip()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    return _one_line("; ".join(lines[-keep:])) if lines else "no message"


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "no message"


# --------------------------------------------------------------------------------------------- encode/decode


def codec_spec(codec: str) -> Codec:
    """The Codec registered as `codec`; BaselineError naming the known ones otherwise."""
    try:
        return CODECS[codec]
    except (KeyError, TypeError):
        raise BaselineError(f"unknown baseline codec {codec!r} (known: {', '.join(CODECS)})") from None


def encode(frames: np.ndarray, fps: float, codec: str, crf: int, workdir: str | os.PathLike) -> Encoded:
    """Encode frames (T, H, W, 3) uint8 RGB with a baseline codec at one CRF into workdir/{codec}-crf{crf}.mp4.

    Frames reach ffmpeg losslessly (raw rgb24 on stdin) and are converted to yuv420p as the module
    docstring says; `-fps_mode passthrough` keeps exactly T frames. ffmpeg writes the target itself (so the
    recorded arguments reproduce it exactly) and a failed encode removes it. Raises BaselineError.
    """
    spec = codec_spec(codec)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= spec.max_crf:
        raise BaselineError(f"{codec}: crf must be an int in 0..{spec.max_crf}, got {crf!r}")
    padded, pad = _padded_even(_checked_frames(frames))
    target = Path(workdir) / f"{codec}-crf{int(crf)}.{CONTAINER}"
    target.parent.mkdir(parents=True, exist_ok=True)
    args = _encode_args(spec, int(crf), padded.shape, fps, target)
    try:
        start = time.perf_counter()
        _run(args, stdin=padded.tobytes())
        encode_s = time.perf_counter() - start
    except BaselineError:
        target.unlink(missing_ok=True)
        raise
    packets, extradata = stream_bytes(target)
    return Encoded(target, packets, extradata, encode_s, tuple(args), pad)


def _encode_args(spec: Codec, crf: int, shape: tuple[int, ...], fps: float, out: Path) -> list[str]:
    """The ffmpeg argument list: raw rgb24 from stdin -> BT.601 yuv420p -> encoder at preset/crf -> mp4."""
    _, height, width, _ = shape
    rate = fractions.Fraction(float(fps)).limit_denominator(1001)   # 29.97002997 -> 30000/1001
    return [
        ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(rate), "-i", "-",
        "-vf", _COLOUR, *_TAGS,
        "-c:v", spec.encoder, "-preset", spec.preset, "-crf", str(crf), *spec.options,
        "-fps_mode", "passthrough", "-an", "-f", CONTAINER, str(out),
    ]


def _checked_frames(frames: np.ndarray) -> np.ndarray:
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or min(array.shape) == 0:
        raise BaselineError(f"frames must be (T, H, W, 3) uint8 with T, H, W >= 1, got {array.shape} {array.dtype}")
    return array


def _padded_even(frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Repeat the last row/column of odd-sized frames so H and W are even (yuv420p); C-contiguous."""
    pad = (frames.shape[1] % 2, frames.shape[2] % 2)
    if pad != (0, 0):
        frames = np.pad(frames, ((0, 0), (0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
    return np.ascontiguousarray(frames), pad


def stream_bytes(path: str | os.PathLike) -> tuple[int, int]:
    """(sum of the first video stream's packet sizes, its extradata size) in bytes; no container overhead."""
    try:
        with av.open(str(path)) as container:
            extradata = container.streams.video[0].codec_context.extradata or b""
            packets = sum(p.size for p in container.demux(video=0) if p.size)
    except (av.FFmpegError, OSError, IndexError) as err:
        raise BaselineError(f"cannot read the video stream of {path}: {_one_line(err)}") from None
    return packets, len(extradata)


def decode(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode every frame of a baseline file with PyAV -> (frames (T, H, W, 3) uint8 RGB, decoded frames/s).

    The frames are as stored (including any even-size padding). Raises BaselineError.
    """
    try:
        start = time.perf_counter()
        frames = read_video(path).frames
        seconds = time.perf_counter() - start
    except VideoError as err:
        raise BaselineError(str(err)) from None
    return frames, len(frames) / seconds


# --------------------------------------------------------------------------------------------- one RD point


def run_point(
    frames: np.ndarray, fps: float, clip: str, codec: str, crf: int, workdir: str | os.PathLike
) -> Row:
    """Encode, decode and measure one (codec, CRF) point of a clip -> a result Row.

    `frames` (T, H, W, 3) uint8 are the *decoded source frames*; every codec is measured against these same
    frames with `codec.metrics.measure`, so baselines and nerva share one reference and one metric. The file
    goes to workdir/clip/; Row.bytes is Encoded.bytes (packets + extradata). Row.preset is "crf{crf}".
    """
    source = _checked_frames(frames)
    spec = codec_spec(codec)
    encoded = encode(source, fps, codec, crf, Path(workdir) / clip)
    decoded, decode_fps = decode(encoded.path)
    t, h, w, _ = source.shape
    if decoded.shape[0] != t:
        raise BaselineError(f"{codec} crf {crf}: decoded {decoded.shape[0]} frames, expected {t}")
    quality = measure(source, decoded[:, :h, :w])
    config = {
        "encoder": spec.encoder,
        "encoder_preset": spec.preset,
        "crf": int(crf),
        "pix_fmt": "yuv420p",
        "colour": "bt601 limited range (smpte170m, tv)",
        "container": CONTAINER,
        "pad": list(encoded.pad),
        "fps": float(fps),
        "reference": "decoded source frames, rgb24",
        "rate": "video packet sizes + extradata",
        "packet_bytes": encoded.bytes_from_packets,
        "extradata_bytes": encoded.extradata_bytes,
        "ffmpeg_args": list(encoded.args),
    }
    return new_row(
        codec=codec,
        preset=f"crf{int(crf)}",
        clip=clip,
        shape=(t, h, w),
        num_bytes=encoded.bytes,
        quality=quality,
        encode_s=encoded.encode_s,
        decode_fps=decode_fps,
        config=config,
        ffmpeg_version=ffmpeg_version(),
    )
