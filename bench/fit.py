"""Fit benchmark: NeRV and HNeRV at several sizes on a real clip, through the real file.

For each (model, size): fit -> quantize -> write .nerva -> decode the file -> measure. Prints a table
and writes one JSON line per run (bench/results/fit_<clip>.jsonl).

    python bench/fit.py                                  # carphone, nerv+hnerv at 50k/100k/200k, 60 epochs
    python bench/fit.py --models hnerv --sizes 150k --epochs 150

Expected runtime on 2 CPU cores: about 25 minutes for the default grid.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from codec.api import QuantPolicy
from codec.container import write_atomic
from eval.cli import parse_size
from inr.config import Geometry
from inr.video import bundled_clip, read_video
from table import print_table   # bench/table.py: Python puts the script's folder on sys.path
from train import presets
from train.cli import summarize
from train.encode import encode, make_config

COLUMNS = [("codec", "model", "{}"), ("params", "params", "{:,}"), ("float_psnr", "float dB", "{:.2f}"),
           ("psnr", "file dB", "{:.2f}"), ("ms_ssim", "MS-SSIM", "{:.4f}"), ("bpp", "bpp", "{:.4f}"),
           ("bytes", "bytes", "{:,}"), ("encode_s", "fit s", "{:.0f}"), ("train_fps", "train fps", "{:.1f}"),
           ("decode_fps", "decode fps", "{:.0f}")]


def run_one(model: str, size: int, frames, fps: float, epochs: float, bits: int, workdir: Path) -> dict:
    geometry = Geometry.of(*frames.shape[:3], fps=fps)
    config = make_config(model, geometry, n_params=size, bits=bits)
    train = presets.train_config(model, epochs, config=config)
    enc = encode(config, frames, train, QuantPolicy(bits=bits))
    path = write_atomic(workdir / f"{model}_{size}.nerva", enc.data)
    row = summarize(path, frames, enc)
    row.update(size_budget=size, epochs=epochs, bits=bits)
    return row



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="carphone")
    ap.add_argument("--models", default="nerv,hnerv")
    ap.add_argument("--sizes", default="50k,100k,200k")
    ap.add_argument("--epochs", type=float, default=60)
    ap.add_argument("--bits", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    video = read_video(bundled_clip(args.clip))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"fit_{args.clip}.jsonl"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for size in map(parse_size, args.sizes.split(",")):
                t = time.time()
                row = run_one(model, size, video.frames, video.fps, args.epochs, args.bits, Path(tmp))
                row.update(clip=args.clip, machine=platform.machine(), python=sys.version.split()[0],
                           wall_s=time.time() - t, file=None)
                rows.append(row)
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"done {model} {size}: {row['psnr']:.2f} dB at {row['bpp']:.4f} bpp", flush=True)
    print_table(rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
