"""Generic typed serializer: any frozen config dataclass <-> bytes, field by field in declaration order.

Field encodings (little-endian): bool -> u8; int -> zig-zag varint; float -> f64; str -> varint length +
UTF-8; tuple[T, ...] -> varint count + items; nested dataclass -> its fields in order. Fields are
append-only at the end of the top-level class: a reader that runs out of bytes exactly before a top-level
field with a default gives it and every later field their defaults, so files written before a field was
added keep decoding. Inside a nested class (Geometry) every field must be present (FORMAT.md §4.1).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from codec.bytesio import ByteReader, ByteWriter, FormatError
from inr.config import field_types
from inr.errors import one_line


def write_config(config: Any) -> bytes:
    w = ByteWriter()
    _write_fields(w, config)
    return w.getvalue()


def read_config(cls: type, data: bytes) -> Any:
    """The config of class `cls` held in a header body; any failure is a one-line FormatError."""
    r = ByteReader(data, "file header")
    obj = _read_fields(r, cls, top_level=True)
    r.expect_end()
    return obj


def _write_fields(w: ByteWriter, obj: Any) -> None:
    for name, tp in field_types(type(obj)):
        _write_value(w, tp, getattr(obj, name))


def _write_value(w: ByteWriter, tp: Any, v: Any) -> None:
    if dataclasses.is_dataclass(tp):
        _write_fields(w, v)
    elif typing.get_origin(tp) is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        w.uvarint(len(v))
        for x in v:
            _write_value(w, item, x)
    elif tp is bool:
        w.u8(int(v))
    elif tp is int:
        w.svarint(v)
    elif tp is float:
        w.f64(v)
    elif tp is str:
        w.blob(v.encode())
    else:
        raise TypeError(f"the header cannot hold a field of type {tp}")


def _read_fields(r: ByteReader, cls: type, top_level: bool = False) -> Any:
    values = {}
    for f, (name, tp) in zip(dataclasses.fields(cls), field_types(cls)):
        if top_level and r.remaining() == 0 and _has_default(f):
            break   # an older file: this field was appended later and takes its default
        values[name] = _read_value(r, tp)
    try:
        return cls(**values)
    except Exception as e:   # noqa: BLE001 - the trust boundary between file bytes and model code
        # The config's own validation is the reader's: whatever it raises for hostile values (a
        # ZeroDivisionError, OverflowError or IndexError from a derived size included) is an invalid header.
        raise FormatError(f"file header does not describe a valid {cls.__name__}: {one_line(e)}") from None


def _read_value(r: ByteReader, tp: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return _read_fields(r, tp)
    if typing.get_origin(tp) is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        n = r.uvarint()
        if n > r.remaining() + 1:
            raise FormatError("file header holds an impossible tuple length")
        return tuple(_read_value(r, item) for _ in range(n))
    if tp is bool:
        return bool(r.u8())
    if tp is int:
        return r.svarint()
    if tp is float:
        return r.f64()
    if tp is str:
        try:
            return r.blob().decode()
        except UnicodeDecodeError:
            raise FormatError("file header holds a string that is not UTF-8") from None
    raise TypeError(f"the header cannot hold a field of type {tp}")


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
