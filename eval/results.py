"""Result rows (one encode of one clip: rate, quality, speed, provenance) stored as JSON lines."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import fcntl
import functools
import importlib.metadata
import json
import math
import os
import subprocess
from pathlib import Path

from inr.errors import NervaError

_REPO = Path(__file__).resolve().parents[1]
_INT_FIELDS = ("frames", "height", "width", "bytes", "ms_ssim_scales")
_FLOAT_FIELDS = ("bpp", "psnr", "psnr_y", "ms_ssim", "encode_s", "decode_fps")
_STR_FIELDS = ("codec", "preset", "clip", "key", "nerva_version", "git_sha", "created")


@dataclasses.dataclass(frozen=True)
class Row:
    """One rate–distortion point: what was encoded, how, its exact rate and quality, and where it came from.

    Quality fields follow `codec.metrics.measure` (mean of per-frame PSNRs in dB, RGB and BT.601 luma; mean
    MS-SSIM over `ms_ssim_scales` scales), always against the decoded source frames. Construction validates
    every field (ValueError), so a Row that exists round-trips through JSON exactly.
    """

    codec: str                  # "hnerv", "x265-medium", ...
    preset: str                 # INR size/bits ("0.3M-8bit") or a baseline's "crf28"
    clip: str                   # clip name, e.g. "carphone"
    frames: int                 # T
    height: int                 # H, pixels
    width: int                  # W, pixels
    bytes: int                  # exact coded size in bytes (the .nerva file; a baseline's summed packet sizes)
    bpp: float                  # 8 * bytes / (T * H * W), bits per pixel
    psnr: float                 # dB, RGB, mean over frames (inf only if every frame is identical)
    psnr_y: float               # dB, BT.601 full-range luma, mean over frames
    ms_ssim: float              # mean over frames
    ms_ssim_scales: int         # number of MS-SSIM scales used (values for different counts are not comparable)
    encode_s: float             # wall-clock seconds to produce the file
    decode_fps: float           # decoded frames per second (wall clock, frames to RGB uint8)
    config: dict                # the INR config dict, or the baseline's options and exact ffmpeg arguments
    key: str                    # stable id of what was run, for resume: see row_key
    nerva_version: str          # installed nerva version
    git_sha: str                # commit of the nerva checkout, or "unknown"
    ffmpeg_version: str | None  # first line of `ffmpeg -version` when ffmpeg encoded or decoded, else None
    created: str                # ISO 8601 time the row was made, UTC

    def __post_init__(self):
        for name in _STR_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"Row.{name} must be a str, got {getattr(self, name)!r}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Row.{name} must be an int >= 0, got {value!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
                raise ValueError(f"Row.{name} must be a number (not NaN), got {value!r}")
            object.__setattr__(self, name, float(value))   # ints become floats so JSON round-trips exactly
        self._check_consistency()

    def _check_consistency(self) -> None:
        """Geometry positive, bpp matching bytes, config JSON-native, ffmpeg_version and created well formed."""
        if min(self.frames, self.height, self.width) == 0:
            raise ValueError(f"Row frames/height/width must be positive, got {self.frames}x{self.height}x{self.width}")
        expected = bits_per_pixel(self.bytes, self.frames, self.height, self.width)
        if not math.isclose(self.bpp, expected, rel_tol=1e-9):
            raise ValueError(f"Row.bpp={self.bpp} disagrees with 8*bytes/(T*H*W)={expected}")
        if self.ffmpeg_version is not None and not isinstance(self.ffmpeg_version, str):
            raise ValueError(f"Row.ffmpeg_version must be a str or None, got {self.ffmpeg_version!r}")
        if not isinstance(self.config, dict) or _json_copy(self.config) != self.config:
            raise ValueError("Row.config must be a dict of JSON-native values (str keys, lists not tuples)")
        try:
            datetime.datetime.fromisoformat(self.created)
        except ValueError:
            raise ValueError(f"Row.created must be an ISO 8601 time, got {self.created!r}") from None

    def to_json(self) -> str:
        """One line of JSON (no newline), keys in field order. An infinite PSNR is written as Infinity."""
        return json.dumps(dataclasses.asdict(self), allow_nan=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Row:
        """Inverse of to_json. Raises ValueError on bad JSON, missing or unknown keys, or a bad value."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"a row must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = sorted(names - data.keys()), sorted(data.keys() - names)
        if missing or unknown:
            raise ValueError(f"row keys wrong: missing {missing}, unknown {unknown}")
        return cls(**data)


class ResultsFileError(NervaError, ValueError):
    """A results file that cannot be read or appended to: a bad or torn line, or a run key already in it."""


def _json_copy(value):
    """value after a JSON round trip; raises ValueError for what JSON cannot hold."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as err:
        raise ValueError(f"Row.config is not JSON-serialisable: {err}") from None


def bits_per_pixel(num_bytes: int, frames: int, height: int, width: int) -> float:
    """8 * bytes / (T * H * W)."""
    return 8.0 * num_bytes / (frames * height * width)


def row_key(codec: str, clip: str, frames: int, preset: str) -> str:
    """The stable id of one run, "codec|clip|frames|preset"; rows with the same key measured the same thing."""
    return f"{codec}|{clip}|{frames}|{preset}"


def new_row(
    *,
    codec: str,
    preset: str,
    clip: str,
    shape: tuple[int, int, int],
    num_bytes: int,
    quality,
    encode_s: float,
    decode_fps: float,
    config: dict,
    ffmpeg_version: str | None = None,
) -> Row:
    """A Row for a fresh measurement: bpp, key, provenance and creation time filled in.

    shape is (T, H, W) of the clip as measured; quality is a `codec.metrics.Quality`.
    """
    frames, height, width = (int(v) for v in shape)
    return Row(
        codec=codec,
        preset=preset,
        clip=clip,
        frames=frames,
        height=height,
        width=width,
        bytes=int(num_bytes),
        bpp=bits_per_pixel(int(num_bytes), frames, height, width),
        psnr=float(quality.psnr),
        psnr_y=float(quality.psnr_y),
        ms_ssim=float(quality.ms_ssim),
        ms_ssim_scales=int(quality.ms_ssim_scales),
        encode_s=float(encode_s),
        decode_fps=float(decode_fps),
        config=config,
        key=row_key(codec, clip, frames, preset),
        ffmpeg_version=ffmpeg_version,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **provenance(),
    )


@functools.cache
def provenance() -> dict[str, str]:
    """{"nerva_version": installed version or "unknown", "git_sha": HEAD of this checkout or "unknown"}.

    Computed once per process.
    """
    try:
        version = importlib.metadata.version("nerva")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"nerva_version": version, "git_sha": _git_sha()}


def _git_sha() -> str:
    """`git rev-parse HEAD` in the repository holding this file, or "unknown" (no git, not a checkout)."""
    return git_commit(mark_dirty=False)


def git_commit(mark_dirty: bool = True) -> str:
    """HEAD's hash in the repository holding this file, with "+dirty" appended (`mark_dirty`) where tracked
    files differ from it (figures measured so describe no commit); "unknown" without git or a checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10, check=False
        )
        sha = done.stdout.strip()
        if done.returncode != 0 or len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
            return "unknown"
        if mark_dirty:
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                                    capture_output=True, text=True, timeout=30, check=False)
            if status.returncode != 0 or status.stdout.strip():
                sha += "+dirty"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha


# --------------------------------------------------------------------------------------------- files


def append_row(path: str | os.PathLike, row: Row) -> None:
    """Append one row as a line of `path` (created with its parents if missing), flushed and fsynced.

    Refuses (ResultsFileError) a row whose key the file already holds (every row of a file comes from
    one run of its command; a second measurement of the same thing goes to another file) and a file
    whose last line is unterminated (a torn write). The check and the write happen under an exclusive
    lock on the file, so two sweeps appending to it cannot both add the same key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (row.to_json() + "\n").encode()
    with open(path, "a+b") as file:
        fcntl.flock(file, fcntl.LOCK_EX)   # released when the file closes
        file.seek(0)
        if row.key in _keys(path, file.read().decode("utf-8")):
            raise ResultsFileError(f"{path} already holds a row with key {row.key!r}; not appending a second "
                                   "(write a repeat measurement to another file)")
        file.write(line)
        file.flush()
        os.fsync(file.fileno())


def read_rows(path: str | os.PathLike) -> list[Row]:
    """All rows of a JSON-lines file, in order. Any bad line (blank, malformed, unterminated last line)
    raises ResultsFileError naming the file and its 1-based line number; nothing is skipped.
    """
    path = Path(path)
    return _parse(path, path.read_text(encoding="utf-8"))


def _parse(path: Path, text: str) -> list[Row]:
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()          # the newline that ends the last row
    elif text:
        raise ResultsFileError(f"{path}:{len(lines)}: last line is unterminated (torn write?); "
                               "repair the file before appending")
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            rows.append(Row.from_json(line))
        except (ValueError, TypeError) as err:
            raise ResultsFileError(f"{path}:{number}: bad row: {err}") from None
    return rows


def _keys(path: Path, text: str) -> set[str]:
    """The run keys of a file's rows; a key held twice is an error (a file assembled by hand)."""
    counts = collections.Counter(row.key for row in _parse(path, text))
    twice = sorted(k for k, n in counts.items() if n > 1)
    if twice:
        raise ResultsFileError(f"{path} holds key {twice[0]!r} {counts[twice[0]]} times"
                               + (f" (and {len(twice) - 1} more keys more than once)" if len(twice) > 1 else ""))
    return set(counts)


def done_keys(path: str | os.PathLike) -> set[str]:
    """Keys of the rows already in `path` (empty if the file does not exist yet), for resuming a sweep.

    A file holding one key twice is refused (ResultsFileError): it cannot have come from resumed sweeps.
    """
    path = Path(path)
    if not path.exists():
        return set()
    return _keys(path, path.read_text(encoding="utf-8"))
