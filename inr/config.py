"""Frozen-dataclass config helpers: strict dict round trips and the video geometry every decoder needs."""

from __future__ import annotations

import dataclasses
import fractions
import functools
import math
import typing
from typing import Any, ClassVar

from inr.errors import ConfigError

# Sane limits on what a geometry (so any file header, codec/FORMAT.md §4.2) may claim, so that no
# header makes the decoder allocate or loop without bound. They cover every real video comfortably:
# 2^20 frames is 9.7 hours at 30 fps; sides of 2^15 pixels hold 16K (15360) and 8K (7680×4320) with
# room; 2^26 pixels per frame is twice 8K's 2^25 (a 16K frame, 2^27, is refused).
MAX_FRAMES = 2 ** 20
MAX_SIDE = 2 ** 15
MAX_PIXELS = 2 ** 26
MAX_FPS_TERM = 2 ** 31 - 1     # fps_num and fps_den fit in int32, as FFmpeg's AVRational
FPS_RANGE = (fractions.Fraction(1, 1000), 10_000)   # one frame per 17 minutes (time lapse) to high-speed


@dataclasses.dataclass(frozen=True)
class Limit:
    """The values a config field may take; `check_fields` enforces it with the field's declared type.

    int fields: lo ≤ v ≤ hi (and odd if `odd`); float fields: finite, lo ≤ v ≤ hi, with the ends
    excluded where `open_lo` / `open_hi`; tuple[int, ...] fields: a tuple of `min_len`..`max_len` ints,
    each within lo..hi; str fields: one of `choices`.
    """

    lo: float = 0
    hi: float = 0
    open_lo: bool = False
    open_hi: bool = False
    odd: bool = False
    min_len: int = 0
    max_len: int = 0
    choices: tuple[str, ...] = ()

    def describe(self, tp: Any) -> str:
        if tp is str:
            return "one of " + ", ".join(self.choices)
        if typing.get_origin(tp) is tuple:
            n = f"{self.min_len}..{self.max_len}" if self.min_len != self.max_len else f"{self.min_len}"
            return f"a tuple of {n} integers, each {self._range(int)}"
        return ("an odd integer " if self.odd else "an integer " if tp is int else "a finite number ") + \
            self._range(tp)

    def _range(self, tp: Any) -> str:
        if tp is not float:
            return f"in {int(self.lo)}..{int(self.hi)}"
        return f"in {'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}{')' if self.open_hi else ']'}"

    def admits(self, tp: Any, v: Any) -> bool:
        if tp is str:
            return isinstance(v, str) and v in self.choices
        if typing.get_origin(tp) is tuple:
            return (type(v) is tuple and self.min_len <= len(v) <= self.max_len
                    and all(self.admits(int, x) for x in v))
        if isinstance(v, bool) or not isinstance(v, int if tp is int else (int, float)):
            return False
        if tp is int:
            return self.lo <= v <= self.hi and (not self.odd or v % 2 == 1)
        return ((isinstance(v, int) or math.isfinite(v)) and (self.lo < v if self.open_lo else self.lo <= v)
                and (v < self.hi if self.open_hi else v <= self.hi))


def check_fields(config: Any, limits: dict[str, Limit]) -> None:
    """Raises ConfigError naming the first field whose value breaks its type or its `limits` entry.

    Every field needs an entry, except bools and nested configs (which check themselves when built)."""
    for name, tp in field_types(type(config)):
        v = getattr(config, name)
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, tp):
                raise ConfigError(f"{type(config).__name__}.{name} must be a {tp.__name__}, got {v!r}")
        elif tp is bool:
            if not isinstance(v, bool):
                raise ConfigError(f"{type(config).__name__}.{name} must be true or false, got {v!r}")
        elif not limits[name].admits(tp, v):
            raise ConfigError(f"{type(config).__name__}.{name} must be {limits[name].describe(tp)}, got {v!r}")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What the decoder must reproduce: frame count, frame size and frame rate of the source."""

    frames: int     # T, number of frames
    height: int     # H, pixels
    width: int      # W, pixels
    fps_num: int = 25   # frame rate as the exact rational fps_num / fps_den (29.97 = 30000/1001)
    fps_den: int = 1

    LIMITS: ClassVar[dict[str, Limit]] = dict(
        frames=Limit(1, MAX_FRAMES), height=Limit(1, MAX_SIDE), width=Limit(1, MAX_SIDE),
        fps_num=Limit(1, MAX_FPS_TERM), fps_den=Limit(1, MAX_FPS_TERM))

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    @property
    def pixels(self) -> int:
        """T·H·W, the denominator of bpp."""
        return self.frames * self.height * self.width

    @classmethod
    def of(cls, frames: int, height: int, width: int, fps: float = 25.0) -> "Geometry":
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps):
            raise ConfigError(f"the frame rate must be a finite number, got {fps!r}")
        if not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
            raise ConfigError(f"a frame rate of {fps:g} fps lies outside [{float(FPS_RANGE[0]):g}, {FPS_RANGE[1]:g}]")
        f = fractions.Fraction(fps).limit_denominator(1001)
        return cls(frames, height, width, f.numerator, f.denominator)

    def __post_init__(self) -> None:
        check_fields(self, self.LIMITS)
        if self.height * self.width > MAX_PIXELS:
            raise ConfigError(f"Geometry: a frame of {self.width}x{self.height} exceeds the limit of "
                              f"2^26 = {MAX_PIXELS} pixels (height·width)")
        if not FPS_RANGE[0] <= fractions.Fraction(self.fps_num, self.fps_den) <= FPS_RANGE[1]:   # exact
            raise ConfigError(f"Geometry: the frame rate {self.fps_num}/{self.fps_den} lies outside "
                              f"[{float(FPS_RANGE[0]):g}, {FPS_RANGE[1]:g}] fps")


class ConfigBase:
    """Mixin for model configs: strict `to_dict`/`from_dict` that reject unknown and missing keys."""

    schema: ClassVar[str] = "config"
    LIMITS: ClassVar[dict[str, Limit]] = {}   # every field's Limit (bools and nested configs need none)

    def check_limits(self) -> None:
        """The type and range checks of every field; subclasses' __post_init__ add cross-field rules."""
        check_fields(self, self.LIMITS)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return _from_plain(cls, d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def lr_multipliers(self) -> tuple[tuple[str, float], ...]:
        """(regex over 'collection/path', learning-rate multiplier) rules; first match wins, default 1."""
        return ()


def _to_plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _to_plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple):
        return [_to_plain(x) for x in v]
    return v


def _from_plain(cls: type, d: Any):
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__} needs a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(d) - set(names))
    # As the file header (codec/FORMAT.md §4.1): fields are append-only, so a dict written before the
    # last fields were added lacks a suffix of them, which take their defaults. Any other gap is an error.
    n_known = max((i + 1 for i, n in enumerate(names) if n in d), default=0)
    appended = all(f.default is not dataclasses.MISSING for f in fields[n_known:])
    missing = [n for n in (names if not appended else names[:n_known]) if n not in d]
    if unknown or missing:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    return cls(**{n: _coerce(hints[n], d[n], f"{cls.__name__}.{n}") for n in names[:n_known]})


def _coerce(tp: Any, v: Any, where: str) -> Any:
    """Convert a plain value to the field type `tp`, raising ConfigError on a mismatch."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_plain(tp, v)
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where} needs a list, got {v!r}")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_coerce(item, x, where) for x in v)
    if tp is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if tp in (int, bool, str) and type(v) is tp:
        return v
    if tp is float and type(v) is float:
        return v
    raise ConfigError(f"{where} needs {getattr(tp, '__name__', tp)}, got {v!r}")


@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, resolved type) of each dataclass field in declaration order (the header's field order).

    Cached per class: every config construction checks its fields by type."""
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
