"""The .nerva container: pack/unpack round trips, one-line FormatErrors for damaged files, atomic writes."""

import os
import re
import stat
import zlib

import jax
import pytest

import inr
from codec import api, container
from codec.bytesio import FormatError


@pytest.fixture(scope="module")
def real_files():
    """{model name: bytes of a small real .nerva file} (tiny config, 4-bit weights)."""
    files = {}
    for name in inr.names():
        spec = inr.get(name)
        config = spec.config_cls.tiny()
        variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
        files[name] = api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=4)))
    return files


def error_of(data: bytes) -> str:
    """The message of the FormatError that parsing `data` as a .nerva file raises (fails if none)."""
    with pytest.raises(FormatError) as info:
        api.parse(data)
    message = str(info.value)
    assert message.strip() and "\n" not in message, f"not a one-line message: {message!r}"
    return message


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "little")


def test_unpack_inverts_pack():
    bodies = [b"", b"x", bytes(range(127)), bytes(128), bytes(range(256)) * 3]
    sections = [container.Section(kind, body) for kind, body in zip([1, 2, 2, 7, 255], bodies)]
    data = container.pack(513, sections)
    model_id, got = container.unpack(data)
    assert model_id == 513
    assert [(s.kind, s.body) for s in got] == [(s.kind, s.body) for s in sections]
    # Offsets locate each section: kind byte first, sections back to back after the 7-byte preamble.
    assert got[0].offset == 7
    for s, nxt in zip(got, got[1:] + [None]):
        assert data[s.offset] == s.kind
        assert s.offset + s.size == (nxt.offset if nxt else len(data) - 4)


def test_a_file_without_the_magic_is_reported_as_not_a_nerva_file(real_files):
    data = next(iter(real_files.values()))
    for bad in [b"RIFF" + data[4:], b"\x89PNG\r\n\x1a\n" + bytes(64), b"nrva" + data[4:]]:
        assert "not a .nerva file" in error_of(bad)


def test_an_empty_file_is_reported_as_empty():
    assert "empty" in error_of(b"")


def test_a_file_of_another_format_version_names_both_versions(real_files):
    data = next(iter(real_files.values()))
    other = container.FORMAT_VERSION + 6
    message = error_of(with_crc(data[:4] + bytes([other]) + data[5:-4]))
    assert re.search(rf"\b{other}\b", message) and re.search(rf"\b{container.FORMAT_VERSION}\b", message)
    assert "version" in message


@pytest.mark.parametrize("name", inr.names())
def test_every_truncation_of_a_real_file_raises_format_error(real_files, name):
    data = real_files[name]
    for length in range(len(data)):
        message = error_of(data[:length])
        if length >= 4:   # the magic is intact, so the file is recognisably a damaged .nerva file
            assert "truncated" in message or "corrupted" in message, (length, message)


@pytest.mark.parametrize("name", inr.names())
def test_every_single_flipped_byte_of_a_real_file_raises_format_error(real_files, name):
    data = real_files[name]
    api.parse(data)   # the undamaged file is fine
    for mask in (0x01, 0x80, 0xFF):
        for i in range(len(data)):
            damaged = bytearray(data)
            damaged[i] ^= mask
            error_of(bytes(damaged))


def outcome(data: bytes) -> str:
    """'ok', or the one-line message of the FormatError that parsing `data` raises (anything else fails)."""
    try:
        api.parse(data)
    except FormatError as e:
        assert str(e).strip() and "\n" not in str(e), repr(str(e))
        return str(e)
    return "ok"


@pytest.mark.parametrize("name", inr.names())
def test_every_truncation_with_its_crc_recomputed_raises_format_error(real_files, name):
    """Past the checksum: the section framing, the collection count or a section's own reader refuses it."""
    data = real_files[name]
    for length in range(11, len(data), 7):
        assert outcome(with_crc(data[:length - 4])) != "ok", length


@pytest.mark.parametrize("name", inr.names())
def test_flipped_bits_with_the_crc_recomputed_give_a_format_error_or_another_valid_file(real_files, name):
    """The header and side information every 3rd byte, the streams every 97th byte."""
    body = real_files[name][:-4]
    positions = [*range(7, min(len(body), 400), 3), *range(400, len(body), 97)]
    outcomes = []
    for i in positions:
        for mask in (0x01, 0x80):
            damaged = bytearray(body)
            damaged[i] ^= mask
            outcomes.append(outcome(with_crc(bytes(damaged))))
    assert sum(o != "ok" for o in outcomes) > len(outcomes) // 4   # most damage is seen, even past the CRC


def test_an_unknown_model_id_is_named_in_the_error(real_files):
    _, sections = container.unpack(next(iter(real_files.values())))
    message = error_of(container.pack(999, sections))
    assert "model id 999" in message


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 4, b"\xff" * 16, b"NRVA"])
def test_extra_trailing_bytes_raise_format_error(real_files, extra):
    for data in real_files.values():
        message = error_of(data + extra)
        assert "corrupted" in message or "trailing" in message


def old_target(tmp_path):
    target = tmp_path / "clip.nerva"
    target.write_bytes(b"old contents")
    return target


def test_write_atomic_replaces_the_file_and_returns_its_path(tmp_path):
    target = old_target(tmp_path)
    assert container.write_atomic(target, b"new contents") == target
    assert target.read_bytes() == b"new contents"
    assert sorted(os.listdir(tmp_path)) == ["clip.nerva"]


def failing_rename(*args, **kwargs):
    raise OSError("disk on fire")


@pytest.mark.parametrize("failure", ["write", "rename"])
def test_write_atomic_leaves_no_temp_file_and_the_old_file_intact_on_failure(tmp_path, monkeypatch, failure):
    target = old_target(tmp_path)
    if failure == "write":
        data, error = "text is not bytes", TypeError
    else:
        monkeypatch.setattr(container.os, "replace", failing_rename)
        data, error = b"new contents", OSError
    with pytest.raises(error):
        container.write_atomic(target, data)
    assert sorted(os.listdir(tmp_path)) == ["clip.nerva"]
    assert target.read_bytes() == b"old contents"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_write_atomic_gives_the_file_the_umask_mode_not_0600(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = container.write_atomic(tmp_path / "clip.nerva", b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
