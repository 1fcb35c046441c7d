"""Encode time of rate-distortion training against fit + QAT (issue 14): every family fitted by `nerva fit` at
one target bpp and the same epochs through both pipelines, one process at a time, on a real clip.

    python bench/rd_time.py                          # carphone, nerv,cam,hnerv,nervpp at 0.09 bpp, 30 + 3 epochs
    python bench/rd_time.py --models nerv --bpp 0.05

Each fit is its own `nerva fit ... --json` process, as a user runs it (nothing compiled is shared between
runs), the fixed pipeline (6 bits) and then the rate-distortion one for each model, so that drift of the
shared machine falls on both. A row holds the CLI's summary (encode_s is the encoder's own clock: fit,
quantization and file; wall_s adds start-up, reading the clip and the final decode), the seconds XLA spent
compiling (from JAX_LOG_COMPILES), the commit and the machine's load before the run. Rows are appended to
bench/results/rd_time_<clip>.jsonl; `python bench/table.py rd-time` prints each family's newest pair of
rows. Expected runtime on 2 CPU cores: about 30 minutes for the default models.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval.results import git_commit
from speed import others_busy   # bench/speed.py (Python puts the script's folder on sys.path)
from table import ROOT, fit_bench_parser, print_table, provenance, record

COMPILED = re.compile(r"Finished XLA compilation of .* in ([0-9.]+) sec")
COLUMNS = [("codec", "model", "{}"), ("pipeline", "pipeline", "{}"), ("params", "params", "{:,}"),
           ("bpp", "bpp", "{:.4f}"), ("psnr", "PSNR dB", "{:.2f}"), ("encode_s", "encode s", "{:.1f}"),
           ("compile_s", "compile s", "{:.1f}"), ("train_fps", "train fps", "{:.1f}"), ("wall_s", "wall s", "{:.1f}")]


def fit(clip: Path, model: str, pipeline: str, bpp: float, epochs: float, out: Path) -> dict:
    """One `nerva fit` process: its JSON summary, wall and compile seconds."""
    args = [sys.executable, "-m", "eval.cli", "fit", str(clip), "-o", str(out), "--model", model, "--bpp", str(bpp),
            "--epochs", str(epochs), "--pipeline", pipeline, "--quiet", "--json"]
    if pipeline == "fixed":
        args += ["--bits", "6"]
    env = {**os.environ, "JAX_LOG_COMPILES": "1"}
    busy = others_busy()
    t = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode:
        raise SystemExit(f"nerva fit {model} --pipeline {pipeline} failed: {done.stderr.strip().splitlines()[-1:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row.pop("config", None)
    row.update(pipeline=pipeline, target_bpp=bpp, epochs=epochs, wall_s=wall,
               compile_s=sum(float(s) for s in COMPILED.findall(done.stderr)), file=None,
               **provenance(busy))
    return row


def main(argv=None) -> int:
    args = fit_bench_parser(__doc__, "nerv,cam,hnerv,nervpp").parse_args(argv)
    from inr.video import bundled_clip
    clip = bundled_clip(args.clip)
    args.out.mkdir(parents=True, exist_ok=True)
    results, rows, rev = args.out / f"rd_time_{args.clip}.jsonl", [], git_commit()
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for pipeline in ("fixed", "rd"):
                row = fit(clip, model, pipeline, args.bpp, args.epochs, Path(tmp) / f"{model}_{pipeline}.nerva")
                record(results, rows, {**row, "clip": args.clip, "commit": rev})
                print(f"done {model} {pipeline}: {row['encode_s']:.1f} s, {row['psnr']:.2f} dB at "
                      f"{row['bpp']:.4f} bpp", flush=True)
    print_table(rows, COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
