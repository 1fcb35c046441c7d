"""Frozen-dataclass config helpers: strict dict round trips and the video geometry every decoder needs."""

from __future__ import annotations

import dataclasses
import fractions
import typing
from typing import Any, ClassVar

from inr.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What the decoder must reproduce: frame count, frame size and frame rate of the source."""

    frames: int     # T, number of frames
    height: int     # H, pixels
    width: int      # W, pixels
    fps_num: int = 25   # frame rate as the exact rational fps_num / fps_den (29.97 = 30000/1001)
    fps_den: int = 1

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    @property
    def pixels(self) -> int:
        """T·H·W, the denominator of bpp."""
        return self.frames * self.height * self.width

    @classmethod
    def of(cls, frames: int, height: int, width: int, fps: float = 25.0) -> "Geometry":
        f = fractions.Fraction(fps).limit_denominator(1001)
        return cls(frames, height, width, f.numerator, f.denominator)

    def __post_init__(self) -> None:
        if min(self.frames, self.height, self.width, self.fps_num, self.fps_den) < 1:
            raise ConfigError(f"geometry needs positive frames, size and fps, got {self}")


class ConfigBase:
    """Mixin for model configs: strict `to_dict`/`from_dict` that reject unknown and missing keys."""

    schema: ClassVar[str] = "config"

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


def field_types(cls: type) -> list[tuple[str, Any]]:
    """(name, resolved type) of each dataclass field in declaration order (the header's field order)."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
