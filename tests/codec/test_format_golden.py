"""Golden .nerva files of format version 1: every registered model's file keeps decoding to the same symbols."""

import dataclasses
import hashlib
import json
import math
import pathlib

import numpy as np
import pytest

import inr
from codec import api, container, entropy
from codec.bytesio import ByteReader

GOLDEN_DIR = pathlib.Path(__file__).resolve().parents[1] / "data" / "format_v1"
REGENERATE = "run `python tests/data/make_golden.py` from the repository root to write it"


def golden(name: str) -> tuple[bytes, dict]:
    path = GOLDEN_DIR / f"{name}.nerva"
    if not path.is_file():
        pytest.fail(f"model {name!r} has no golden file {path}; {REGENERATE}")
    return path.read_bytes(), json.loads(path.with_suffix(".json").read_text())


def symbols_sha256(collections) -> str:
    """sha256 of the int32 little-endian symbols of every tensor, in file order."""
    h = hashlib.sha256()
    for quantized, infos in collections.values():
        for info in infos:
            h.update(np.ascontiguousarray(quantized[info.path].symbols, "<i4").tobytes())
    return h.hexdigest()


def test_every_registered_model_has_a_golden_file():
    missing = [n for n in inr.names() if not (GOLDEN_DIR / f"{n}.nerva").is_file()
               or not (GOLDEN_DIR / f"{n}.json").is_file()]
    assert not missing, f"models without a golden .nerva/.json pair in {GOLDEN_DIR}: {missing}; {REGENERATE}"


@pytest.mark.parametrize("name", inr.names())
def test_golden_file_is_the_one_its_json_describes(name):
    data, expected = golden(name)
    assert len(data) == expected["bytes"]
    assert hashlib.sha256(data).hexdigest() == expected["sha256"]
    assert data[4] == expected["format_version"] == 1
    assert int.from_bytes(data[5:7], "little") == expected["model_id"] == inr.get(name).model_id


@pytest.mark.parametrize("name", inr.names())
def test_golden_file_decompresses_to_its_model_and_config(name):
    data, expected = golden(name)
    config, variables = api.decompress(data)
    cls = inr.get(name).config_cls
    assert type(config) is cls
    # Fields appended to the config after the file was written read as their defaults (FORMAT.md §4).
    appended = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in expected["config"]}
    assert config.to_dict() == {**expected["config"], **appended}
    sums = {f"{c}/{p}": float(np.sum(x, dtype=np.float64))
            for c, tree in variables.items() for p, x in api.flatten(tree)}
    assert sums == pytest.approx(expected["dequantized_sums"], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", inr.names())
def test_golden_file_decodes_to_the_recorded_symbols(name):
    data, expected = golden(name)
    _, collections, _ = api.parse(data)
    assert symbols_sha256(collections) == expected["symbols_sha256"]


@pytest.mark.parametrize("name", inr.names())
def test_reencoding_the_decoded_tensors_reproduces_the_file_byte_for_byte(name):
    """Byte for byte, except that a header written today also holds the fields appended since (at
    their defaults): the old header body must be a prefix of the new one, every other section equal."""
    data, _ = golden(name)
    config, collections, _ = api.parse(data)
    quantized = {f"{c}/{p}": q for c, (tensors, _) in collections.items() for p, q in tensors.items()}
    again = api.compress(config, quantized)
    (old_id, old), (new_id, new) = container.unpack(data), container.unpack(again)
    assert old_id == new_id and [s.kind for s in old] == [s.kind for s in new]
    assert new[0].kind == container.HEADER and new[0].body.startswith(old[0].body)
    assert [s.body for s in old[1:]] == [s.body for s in new[1:]]
    if len(new[0].body) == len(old[0].body):
        assert again == data


def test_golden_layout_crcs_are_the_ones_format_md_states():
    """FORMAT.md §6.1: today's tiny() layouts, except HNeRV's golden file, written with a 1 x 1 embedding."""
    stated = {"nerv": {"params": 0xF9D3BD98}, "cam": {"params": 0xFF79D1E4}, "nervpp": {"params": 0x59887488},
              "hnerv": {"latents": 0x1C03BDFE, "params": 0x428B32FD},
              "nirvana": {"group000": 0x227FBF4B, "group001": 0x227FBF4B}}
    for name, crcs in stated.items():
        data, expected = golden(name)
        got = {}
        for s in container.unpack(data)[1][1:]:   # §6: string name, (RESIDUAL: string reference), u32 CRC
            r = ByteReader(s.body)
            collection = r.blob().decode()
            if s.kind == container.RESIDUAL:
                r.blob()
            got[collection] = r.u32()
        assert got == crcs, name
    config = golden("hnerv")[1]["config"]
    assert (config["embed_h"], config["embed_w"]) == (1, 1)
    assert inr.get("hnerv").config_cls.tiny().to_dict() != config


@pytest.mark.parametrize("name", inr.names())
def test_golden_files_use_a_small_part_of_the_readers_limits(name):
    """The size limit and table budget (FORMAT.md §5.1, §7.4) leave every real file far inside them."""
    data, _ = golden(name)
    config, collections, _ = api.parse(data)
    elements = sum(math.prod(info.shape) for _, infos in collections.values() for info in infos)
    entries = sum(entropy.table_cost(i.model.kind, i.model.lo, i.model.hi)
                  for _, infos in collections.values() for i in infos)
    assert elements < api.element_limit(len(data)) / 10
    assert entries < entropy.TableBudget(len(data)).limit / 10
