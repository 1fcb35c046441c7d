"""Writes the golden files of format version 3 (tests/data/format_v3/), which tests/codec/test_format_v3.py decodes:
a RECOMBINER file (a REC section, FORMAT.md §17) and the prior asset it names.

Run it explicitly, never from tests: `python tests/data/make_golden_v3.py` (`--overwrite` rewrites them). Recipe:
`RecombinerConfig.tiny()` on 8 frames of 16×24; a prior learned on six synthetic clips (2 rounds × 5 steps, target
0.5 bpp) and a 60-step encode of a seventh at 0.5 bpp, seed 0. The JSON records what a decoder must reproduce:
the SHA-256 of every regenerated element's float32 bytes (pure integer and float32 arithmetic: bit-exact on
any machine), the block count and the file's size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from codec import api
from inr import recombiner as R
from inr.config import Geometry
from train import variational as V

DIR = Path(__file__).resolve().parent / "format_v3"
GEOMETRY = Geometry.of(8, 16, 24)
PRIOR_ID = "recombiner-golden"


def clip(seed: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(8), np.arange(16), np.arange(24), indexing="ij")
    f = r.uniform(0.05, 0.3, size=2)
    return ((0.5 + 0.4 * np.sin(f[0] * x + f[1] * y + 0.2 * t))[..., None] * np.ones(3)).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()
    if (DIR / "recombiner.nerva").exists() and not args.overwrite:
        print("golden v3 files exist; --overwrite rewrites them", file=sys.stderr)
        return 1
    config = R.RecombinerConfig.tiny(GEOMETRY)
    prior, _ = V.learn_prior(config, np.stack([clip(i) for i in range(6)]),
                             V.PriorSettings(rounds=2, steps=5, target_bpp=0.5, beta=3e-3))
    asset = V.save_prior(DIR / f"{PRIOR_ID}.npz", PRIOR_ID, config, prior, {"target_bpp": 0.5, "golden": True})
    data, coded = V.encode_file(config, clip(6), asset, 0.5, V.RecSettings(steps=60, chunks=2, retune=10))
    (DIR / "recombiner.nerva").write_bytes(data)
    _, variables = api.decompress(data, [DIR])
    flat = R.flatten_sample(variables["sample"])
    summary = {"model": "recombiner", "bytes": len(data), "blocks": int(coded.indices.size),
               "prior_id": PRIOR_ID, "prior_sha256": asset.digest.hex(),
               "sample_sha256": hashlib.sha256(np.asarray(flat, "<f4").tobytes()).hexdigest(),
               "elements": int(flat.size)}
    (DIR / "recombiner.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
