"""The generic config header: exact round trips for every model, small size, append-only evolution, strict dicts."""

import dataclasses
import functools

import pytest

import inr
from codec.bytesio import FormatError
from codec.header import read_config, write_config
from inr import Geometry
from inr.errors import ConfigError

CIF = Geometry.of(120, 144, 176, 30000 / 1001)   # a realistic clip: 120 CIF frames at 29.97 fps


@functools.lru_cache(maxsize=None)
def config_of(name: str, size: str):
    cls = inr.get(name).config_cls
    return cls.tiny() if size == "tiny" else inr.get(name).for_size(CIF, 100_000)


CASES = [(name, size) for name in inr.names() for size in ("tiny", "100k")]


@pytest.mark.parametrize("name,size", CASES)
def test_read_config_inverts_write_config_for_every_model(name, size):
    config = config_of(name, size)
    assert type(config) is inr.get(name).config_cls
    back = read_config(type(config), write_config(config))
    assert back == config and type(back) is type(config)


@pytest.mark.parametrize("name", inr.names())
def test_tiny_config_headers_take_under_128_bytes(name):
    assert len(write_config(config_of(name, "tiny"))) < 128


@pytest.mark.parametrize("name,size", CASES)
def test_from_dict_inverts_to_dict_for_every_model(name, size):
    config = config_of(name, size)
    assert type(config).from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", inr.names())
def test_from_dict_rejects_unknown_keys_naming_them(name):
    config = config_of(name, "tiny")
    with pytest.raises(ConfigError, match="'widht'"):
        type(config).from_dict({**config.to_dict(), "widht": 3})
    d = config.to_dict()
    d["geometry"] = {**d["geometry"], "fsp": 25}
    with pytest.raises(ConfigError, match="'fsp'"):
        type(config).from_dict(d)


@pytest.mark.parametrize("name", inr.names())
def test_from_dict_rejects_missing_keys_naming_them(name):
    config = config_of(name, "tiny")
    keys = list(config.to_dict())
    for key in keys[:-1]:   # a gap before the last field; dropping only trailing fields is allowed below
        d = config.to_dict()
        del d[key]
        with pytest.raises(ConfigError, match=f"'{key}'"):
            type(config).from_dict(d)
    d = config.to_dict()
    del d["geometry"]["frames"]
    with pytest.raises(ConfigError, match="'frames'"):
        type(config).from_dict(d)


@pytest.mark.parametrize("name", inr.names())
def test_from_dict_gives_dropped_trailing_fields_their_defaults_as_the_header_does(name):
    """Rows and checkpoints written before fields were appended keep loading (FORMAT.md §4.1)."""
    config = config_of(name, "tiny")
    cls, fields = type(config), dataclasses.fields(type(config))
    for cut in range(len(fields) - 1, 0, -1):
        d = {f.name: v for f, v in zip(fields[:cut], config.to_dict().values())}
        if any(f.default is dataclasses.MISSING for f in fields[cut:]):
            with pytest.raises(ConfigError, match="missing keys"):
                cls.from_dict(d)
            break
        got = cls.from_dict(d)
        assert all(getattr(got, f.name) == f.default for f in fields[cut:])
        assert all(getattr(got, f.name) == getattr(config, f.name) for f in fields[:cut])


def defaults_only_after_first_difference(got, want) -> bool:
    """True if `got` equals `want` except that some trailing fields hold their declared defaults."""
    fields = dataclasses.fields(want)
    differs = [i for i, f in enumerate(fields) if getattr(got, f.name) != getattr(want, f.name)]
    if not differs:
        return True
    return all(f.default is not dataclasses.MISSING and getattr(got, f.name) == f.default
               for f in fields[differs[0]:])


@pytest.mark.parametrize("name", inr.names())
def test_a_truncated_header_raises_format_error_unless_only_defaulted_fields_are_cut(name):
    config = config_of(name, "tiny")
    data = write_config(config)
    raised = 0
    for length in range(len(data)):
        try:
            got = read_config(type(config), data[:length])
        except FormatError as e:
            assert "\n" not in str(e)
            raised += 1
            continue
        # A cut exactly before fields that have defaults reads like a file from before they were added.
        assert defaults_only_after_first_difference(got, config), (length, got)
    assert raised >= len(data) // 2


# Append-only evolution: V2 is V1 with fields added at the end, each with a default.
@dataclasses.dataclass(frozen=True)
class SettingsV1:
    geometry: Geometry
    widths: tuple[int, ...]
    label: str
    gain: float = 0.5


@dataclasses.dataclass(frozen=True)
class SettingsV2:
    geometry: Geometry
    widths: tuple[int, ...]
    label: str
    gain: float = 0.5
    enabled: bool = True
    levels: tuple[int, ...] = (1, 2)


def test_a_field_appended_with_a_default_still_reads_headers_written_before_it():
    old = SettingsV1(Geometry.of(30, 64, 96, 24), (16, 8, -3), "ünïcode", 2.25)
    new = read_config(SettingsV2, write_config(old))
    assert new == SettingsV2(old.geometry, old.widths, old.label, old.gain, True, (1, 2))


def test_a_header_with_appended_fields_round_trips_them_and_an_older_reader_refuses_it():
    new = SettingsV2(Geometry.of(30, 64, 96, 24), (16,), "x", -1.0, False, (7, 8, 9))
    data = write_config(new)
    assert read_config(SettingsV2, data) == new
    with pytest.raises(FormatError, match="trailing"):
        read_config(SettingsV1, data)   # dropping fields silently would decode a different model


@pytest.mark.parametrize("name", inr.names())
def test_a_header_body_ending_inside_the_geometry_is_truncated_although_its_fps_fields_have_defaults(name):
    """FORMAT.md §4.1: defaults are filled only at the end of the top-level class, never in a nested one."""
    config = config_of(name, "tiny")
    data = write_config(config)
    assert data[:5] == bytes([0x10, 0x40, 0x60, 0x32, 0x02])   # 8 frames, 32 x 48, 25 / 1 fps: 1 byte each
    for cut in range(1, 5):
        with pytest.raises(FormatError, match="file header is truncated"):
            read_config(type(config), data[:cut])
    if all(f.default is not dataclasses.MISSING for f in dataclasses.fields(config)[1:]):
        assert read_config(type(config), data[:5]) == type(config)(config.geometry)
    else:
        with pytest.raises(FormatError, match="file header is truncated"):
            read_config(type(config), data[:5])
