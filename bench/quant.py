"""What quantization costs: one float fit, then post-training quantization at several bit depths.

No quantization-aware fine-tuning here, so the PSNR drop is the quantizer's alone (entropy coding is
lossless). Prints a table and writes bench/results/quant_<clip>.jsonl.

    python bench/quant.py                       # hnerv, 100k parameters, 60 epochs on carphone (~6 min)
    python bench/quant.py --model nerv --size 50k
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from codec import api
from codec.api import QuantPolicy
from codec.container import write_atomic
from codec.decoder import measure_file
from eval.cli import parse_size
from inr.config import Geometry
from inr.video import bundled_clip, read_video
from table import print_table   # bench/table.py: Python puts the script's folder on sys.path
from train import presets
from train.encode import make_config
from train.loop import fit
from train.schedule import Phase, TrainConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="carphone")
    ap.add_argument("--model", default="hnerv")
    ap.add_argument("--size", type=parse_size, default=100_000)
    ap.add_argument("--epochs", type=float, default=60)
    ap.add_argument("--bits", default="8,7,6,5,4")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    video = read_video(bundled_clip(args.clip))
    geometry = Geometry.of(*video.frames.shape[:3], fps=video.fps)
    config = make_config(args.model, geometry, n_params=args.size)
    p = presets.preset(args.model)
    train = TrainConfig((Phase("fit", args.epochs, p.lr, warmup=0.1, use_encoder=True),), beta1=p.beta1)
    result = fit(config, video.frames, train, QuantPolicy())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bits in map(int, args.bits.split(",")):
            data = api.compress(config, api.quantize_variables(result.variables, QuantPolicy(bits=bits)))
            rep = measure_file(write_atomic(Path(tmp) / "q.nerva", data), video.frames)
            rows.append({"model": args.model, "clip": args.clip, "epochs": args.epochs, "bits": bits,
                         "float_psnr": result.float_psnr, "psnr": rep.quality.psnr, "bytes": rep.bytes,
                         "bpp": rep.bpp, "loss_db": result.float_psnr - rep.quality.psnr})
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / f"quant_{args.clip}.jsonl").open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"{args.model} on {args.clip}, float model {result.float_psnr:.2f} dB")
    print_table(rows, [("bits", "bits", "{}"), ("bytes", "bytes", "{:,}"), ("bpp", "bpp", "{:.4f}"),
                       ("psnr", "file PSNR", "{:.2f}"), ("loss_db", "loss vs float", "{:.3f} dB")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
