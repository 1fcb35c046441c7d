"""Format version 3: the golden RECOMBINER file decodes to its recorded sample, and a decoder written from
codec/FORMAT.md §17 alone (here, with plain Python integers and NumPy) regenerates the same float32 bits."""

from __future__ import annotations

import hashlib
import json
import statistics
import struct
from pathlib import Path

import numpy as np
import pytest

from codec import api, assets, container
from codec.bytesio import FormatError
from inr import recombiner as R

DIR = Path(__file__).resolve().parents[1] / "data" / "format_v3"
GOLDEN = json.loads((DIR / "recombiner.json").read_text())
MASK = 0xFFFFFFFF


def test_the_golden_file_decodes_to_its_recorded_sample():
    data = (DIR / "recombiner.nerva").read_bytes()
    assert len(data) == GOLDEN["bytes"] and data[4] == 3
    _, variables = api.decompress(data, [DIR])
    flat = np.asarray(R.flatten_sample(variables["sample"]), "<f4")
    assert flat.size == GOLDEN["elements"]
    assert hashlib.sha256(flat.tobytes()).hexdigest() == GOLDEN["sample_sha256"]
    assert assets.load(DIR / "recombiner-golden.npz").digest.hex() == GOLDEN["prior_sha256"]


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint64)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(MASK)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(MASK)
    h ^= h >> np.uint64(16)
    return h


def _uvarint(buf: bytes, at: int) -> tuple[int, int]:
    """(value, next offset) of the LEB128 uvarint at `at` (§1)."""
    value, shift = 0, 0
    while True:
        b = buf[at]
        value |= (b & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if b < 0x80:
            return value, at


def test_a_decoder_from_the_spec_alone_regenerates_the_same_bits():
    data = (DIR / "recombiner.nerva").read_bytes()
    # §2: preamble, sections, CRC; the REC section is the last (kind 4)
    pos, sections = 7, []
    while pos < len(data) - 4:
        kind = data[pos]
        length, pos = _uvarint(data, pos + 1)
        sections.append((kind, data[pos:pos + length]))
        pos += length
    kind, body = sections[-1]
    assert kind == 4
    # §17 body
    n, at = body[0], 1
    names = []
    for _ in range(n):
        ln = body[at]
        names.append(body[at + 1:at + 1 + ln].decode())
        at += 1 + ln
    ln = body[at]
    asset_id = body[at + 1:at + 1 + ln].decode()
    at += 1 + ln
    digest = body[at:at + 32]
    seed, = struct.unpack_from("<I", body, at + 32)
    scale, = struct.unpack_from("<f", body, at + 36)
    blocks, at = _uvarint(body, at + 40)
    indices = np.frombuffer(body[at:], "<u2")
    assert names == ["sample"] and asset_id == "recombiner-golden" and indices.size == blocks == GOLDEN["blocks"]
    prior = np.load(DIR / "recombiner-golden.npz", allow_pickle=False)
    assert hashlib.sha256(digest).digest() and digest.hex() == GOLDEN["prior_sha256"]
    config = api.parse(data)[0]
    entry, stage = R.element_layout(config)          # step 2: the model's element layout
    # step 3: coding order
    key = _fmix32(np.array([seed], np.uint64))[0]
    keys = _fmix32(np.arange(entry.size, dtype=np.uint64) ^ key)
    order = sorted(range(entry.size), key=lambda i: (int(stage[i]), int(keys[i]), i))
    # step 4: blocks, by the greedy rule, one element at a time
    kl, mean, sc = prior["rec/kl"], prior["rec/mean"], prior["rec/scale"]
    weight = [int(np.rint(np.float64(kl[entry[i]]) * np.float64(np.float32(scale)) * 2 ** 20)) for i in order]
    starts, total, count = [0], 0, 0
    for k, w in enumerate(weight):
        if count and (total + w > 16 * 2 ** 20 or count == 4096):
            starts.append(k)
            total, count = 0, 0
        total, count = total + w, count + 1
    assert len(starts) == blocks
    # step 5: candidates
    table = np.array([statistics.NormalDist().inv_cdf((k + 0.5) / 65536) for k in range(65536)], np.float32)
    block_of = np.searchsorted(np.array(starts), np.arange(entry.size), side="right") - 1
    flat = np.empty(entry.size, np.float32)
    for pos_, i in enumerate(order):
        idx = int(indices[block_of[pos_]])
        h = _fmix32(np.array([(int(keys[i]) + idx * 0x9E3779B9) & MASK], np.uint64))[0]
        flat[i] = np.float32(mean[entry[i]]) + np.float32(sc[entry[i]]) * table[int(h) >> 16]
    assert hashlib.sha256(flat.astype("<f4").tobytes()).hexdigest() == GOLDEN["sample_sha256"]


def test_the_golden_file_relabelled_version_2_is_refused():
    data = bytearray((DIR / "recombiner.nerva").read_bytes())
    data[4] = 2
    data[-4:] = container.zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    with pytest.raises(FormatError, match="REC section"):
        api.decompress(bytes(data), [DIR])
