"""Writes the golden .nerva files of format version 1 (tests/data/format_v1/) that tests/codec/test_format_golden.py decodes.

Run it explicitly, never from tests: `python tests/data/make_golden.py` writes the files of registered
models that have none yet, and the version-2 files of V2_MODELS (tests/data/format_v2/, checked by
tests/codec/test_format_v2.py); `--overwrite` rewrites every file. Golden files are meant to outlive the
encoder that wrote them (a v1 reader must keep decoding them), so do not overwrite existing ones
unless the v1 format itself was wrong.

Per model: its `tiny()` config, initialised with `jax.random.key(0)`, every tensor quantized at 6 bits;
a family with its own learned quantizer (NIRVANA) instead gets a 2-epoch fit of a synthetic clip. A file
keeps the `tiny()` of the day it was written, which the .json records: HNeRV's has changed since (its
golden file has a 1 x 1 embedding, codec/FORMAT.md §14).
The tests never re-run init (its values depend on the XLA optimisation level); they decode the stored
file and compare with the JSON summary written here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import jax
import numpy as np

import inr
from codec import api, container
from codec.quant import QuantizedTensor, quantize

GOLDEN_DIR = Path(__file__).resolve().parent / f"format_v{container.FORMAT_VERSION}"
BITS = 6
# Version 2 (FORMAT.md §6: a tensor may have one step for all its elements): NeRV tiny(), initialised
# with jax.random.key(0), every conv kernel (rank 4) quantized at 6 bits with ONE step for the whole tensor
# (codec.quant.quantize of the flattened tensor), every other tensor at 6 bits per channel as in v1; so one
# file holds both step counts, and its per-channel tensors are those of format_v1/nerv.nerva.
V2_DIR = Path(__file__).resolve().parent / "format_v2"
V2_MODELS = ("nerv",)
V2_RECIPE = (f"tiny(), init jax.random.key(0), {BITS} bits; rank-4 (conv) kernels with one step for the "
             "whole tensor, every other tensor one step per channel")
MAX_BYTES = 30_000   # keep the repository small


def summarize(data: bytes, recipe: str | None = None) -> dict:
    """What a correct decoder must reproduce from `data`: sizes, hashes, per-tensor dequantized sums;
    `recipe` describes how it was made (default: the version-1 recipe of its model)."""
    config, collections, _ = api.parse(data)
    spec = inr.get_by_id(container.unpack(data)[0])
    symbols = hashlib.sha256()
    sums = {}
    for name, (quantized, infos) in collections.items():   # section order
        for info in infos:                                  # sorted path order
            q = quantized[info.path]
            symbols.update(np.ascontiguousarray(q.symbols, "<i4").tobytes())
            sums[f"{name}/{info.path}"] = float(np.sum(q.dequantize(), dtype=np.float64))
    return {
        "model": spec.name,
        "model_id": spec.model_id,
        "format_version": data[4],
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "symbols_sha256": symbols.hexdigest(),
        "symbols_note": "sha256 of every tensor's int32 little-endian symbols, row-major, in file order "
                        "(TENSORS and RESIDUAL sections in file order, a RESIDUAL section's rebuilt symbols, "
                        "tensors in sorted path order)",
        "config": config.to_dict(),
        "dequantized_sums": sums,
        "generated_with": {"recipe": f"{spec.name} " + recipe if recipe else f"{spec.name} tiny(), " + (
                               "2-epoch fit of synthetic_clip(T, H, W), learned steps" if _learns_steps(spec)
                               else f"init jax.random.key(0), {BITS} bits"),
                           "jax": jax.__version__,
                           "JAX_DISABLE_MOST_OPTIMIZATIONS": os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS", "")},
    }


def _learns_steps(spec) -> bool:
    return spec.learned_steps is not inr.registry.no_learned_steps


def golden_bytes(name: str) -> bytes:
    spec = inr.get(name)
    config = spec.config_cls.tiny()
    if _learns_steps(spec):
        # Families with learned quantization steps (NIRVANA) have no steps before training: their
        # golden file is a short real fit of a synthetic clip, through the encoder every user runs.
        from inr.video import synthetic_clip
        from train import presets
        from train.encode import encode
        g = config.geometry
        frames = synthetic_clip(g.frames, g.height, g.width)
        return encode(config, frames, presets.train_config(name, 2, config=config),
                      api.QuantPolicy(bits=BITS)).data
    variables = spec.init(config, jax.random.key(0))
    quantized = api.quantize_variables(variables, api.QuantPolicy(bits=BITS, embed_bits=BITS))
    return api.compress(config, quantized)


def single_step_quantized(variables) -> dict[str, QuantizedTensor]:
    """The version-2 recipe's tensors: rank-4 kernels with one step for the whole tensor, the rest per channel."""
    out = {}
    for p, x in api.flatten(variables):
        x = np.asarray(x, np.float32)
        if x.ndim == 4:
            q = quantize(x.reshape(-1), BITS)   # a 1-D tensor has one step (FORMAT.md §9)
            out[p] = QuantizedTensor(q.symbols.reshape(x.shape), q.steps, q.bits)
        else:
            out[p] = quantize(x, BITS)
    return out


def golden_v2_bytes(name: str) -> bytes:
    spec = inr.get(name)
    config = spec.config_cls.tiny()
    data = api.compress(config, single_step_quantized(spec.init(config, jax.random.key(0))))
    assert container.format_version(data) == 2, "the version-2 recipe must need version 2"
    return data


def write(name: str, directory: Path = GOLDEN_DIR, make=golden_bytes, recipe: str | None = None) -> Path:
    data = make(name)
    if len(data) >= MAX_BYTES:
        raise SystemExit(f"{name}: golden file of {len(data)} bytes exceeds {MAX_BYTES}; shrink its tiny()")
    path = container.write_atomic(directory / f"{name}.nerva", data)
    summary = json.dumps(summarize(data, recipe), indent=1, sort_keys=True) + "\n"
    container.write_atomic(directory / f"{name}.json", summary.encode())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true", help="rewrite golden files that already exist")
    args = parser.parse_args(argv)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for name in inr.names():
        if (GOLDEN_DIR / f"{name}.nerva").exists() and not args.overwrite:
            print(f"{name}: kept {GOLDEN_DIR / name}.nerva (pass --overwrite to rewrite)")
            continue
        path = write(name)
        print(f"{name}: wrote {path} ({path.stat().st_size} bytes) and its .json")
    V2_DIR.mkdir(parents=True, exist_ok=True)
    for name in V2_MODELS:
        if (V2_DIR / f"{name}.nerva").exists() and not args.overwrite:
            print(f"{name}: kept {V2_DIR / name}.nerva (pass --overwrite to rewrite)")
            continue
        path = write(name, V2_DIR, golden_v2_bytes, V2_RECIPE)
        print(f"{name}: wrote {path} ({path.stat().st_size} bytes) and its .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
