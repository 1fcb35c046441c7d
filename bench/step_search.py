"""Post-training refinement of rate-distortion files (issue 14, item 4): does a search of each tensor's
quantization step by the real rate-distortion cost pay, after training has learned the steps?

    python bench/step_search.py                       # carphone, nerv,hnerv,nervpp at 0.09 bpp, 30 + 3 epochs
    python bench/step_search.py --models nerv --bpp 0.05

Each model is fitted as `nerva rd` fits its MODEL+rd point (sized by train.presets.rd_config, λ
following the target). Then, tensor by tensor in sorted path order, the step(s) the file stores (the landing
factor applied) are scaled by each of FACTORS, and a change is kept where the real file's cost
J = MSE + λ · bpp falls: MSE of the decoded file against the clip, bpp from its bytes, λ the fit's final rate
weight (the training loss's own unit). One pass over the tensors; then one factor on all steps brings the file
back to its first size, so that the PSNR before and after compare at (nearly) equal rate. Rows go to
bench/results/step_search_<clip>.jsonl; `python bench/table.py step-search` prints them. Expected runtime on 2
CPU cores: about 15 minutes for the default models (22 beside another fit).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from codec import api
from codec.api import QuantPolicy
from codec.decoder import decode_frames, measure_file
from eval.results import git_commit
from inr.config import Geometry
from inr.video import bundled_clip, read_video
from speed import others_busy   # bench/speed.py (Python puts the script's folder on sys.path)
from table import fit_bench_parser, print_table, provenance, record
from train import presets, rd
from train.encode import encode

FACTORS = (0.8, 1.25)   # each tried in turn on a tensor's steps; the first that lowers J is kept
RELAND_ITERATIONS = 14  # bisection steps on one factor of all steps that brings the file back to its size
COLUMNS = [("codec", "model", "{}"), ("params", "params", "{:,}"), ("psnr_before", "PSNR dB before", "{:.3f}"),
           ("psnr_after", "after", "{:.3f}"), ("bpp_before", "bpp before", "{:.5f}"), ("bpp_after", "after", "{:.5f}"),
           ("changed", "tensors changed", "{}"), ("search_s", "search s", "{:.1f}"), ("encode_s", "encode s", "{:.1f}")]


def search(config, frames: np.ndarray, enc, factors=FACTORS) -> dict:
    """Coordinate search of per-tensor step factors on the fitted `enc` (train.encode.Encoded) by J, then
    one factor on every step that brings the file back to the size of `enc`'s, so that the two files
    compare at (nearly) equal rate: the fit's λ need not be the slope of the curve the file lies on."""
    res = enc.fit
    lam, pixels = float(res.final_lambda), config.geometry.pixels
    source = frames.astype(np.float32)

    def file_of(steps: dict) -> bytes:
        return rd.file_of(config, res.variables, res.aux, steps, QuantPolicy())[1]

    def cost(steps: dict) -> float:
        data = file_of(steps)
        cfg, variables = api.decompress(data)
        mse = float(np.mean((decode_frames(cfg, variables).astype(np.float32) - source) ** 2)) / 255.0 ** 2
        return mse + lam * 8 * len(data) / pixels

    t = time.perf_counter()
    current = {p: np.asarray(s, np.float32) * np.float32(res.step_scale) for p, s in res.steps.items()}
    j0 = best = cost(current)
    changed = 0
    for path in sorted(current):
        for f in factors:
            trial = {**current, path: current[path] * np.float32(f)}
            j = cost(trial)
            if j < best:
                current, best, changed = trial, j, changed + 1
                break
    # coarser steps make a smaller file: bisect log(factor) in [-ln 2, ln 2] towards enc's size
    lo, hi, nearest = -np.log(2.0), np.log(2.0), (abs(len(file_of(current)) - len(enc.data)), current)
    for _ in range(RELAND_ITERATIONS):
        mid = (lo + hi) / 2
        trial = {p: s * np.float32(np.exp(mid)) for p, s in current.items()}
        size = len(file_of(trial))
        nearest = min(nearest, (abs(size - len(enc.data)), trial), key=lambda x: x[0])
        lo, hi = (mid, hi) if size > len(enc.data) else (lo, mid)
    return {"data": file_of(nearest[1]), "lambda": lam, "j_before": j0, "j_searched": best, "changed": changed,
            "tensors": len(current), "search_s": time.perf_counter() - t}


def fit_point(model: str, frames: np.ndarray, fps: float, bpp: float, epochs: float):
    """(config, Encoded, encode seconds, others' CPU use before): `model` fitted as `nerva rd` fits its
    MODEL+rd point at `bpp`."""
    geometry = Geometry.of(*frames.shape[:3], fps=fps)
    config = presets.rd_config(model, geometry, bpp)
    train = presets.train_config(model, epochs, config=config, target_bpp=bpp)
    busy = others_busy()
    t = time.perf_counter()
    enc = encode(config, frames, train, QuantPolicy())
    return config, enc, time.perf_counter() - t, busy


def refined_row(model: str, bpp: float, epochs: float, enc, encode_s: float, busy, found: dict, frames) -> dict:
    """A refinement benchmark's row: the fit's file (`enc`) and `found["data"]`, each measured as written."""
    after = found.pop("data")
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in (("before", enc.data), ("after", after)):
            path = Path(tmp) / f"{name}.nerva"
            path.write_bytes(data)
            reports.append(measure_file(path, frames))
    return {"codec": model, "target_bpp": bpp, "epochs": epochs, "params": sum(q.symbols.size for q in enc.quantized.values()),
            "psnr_before": reports[0].quality.psnr, "psnr_after": reports[1].quality.psnr,
            "bpp_before": reports[0].bpp, "bpp_after": reports[1].bpp, "encode_s": encode_s, **found, **provenance(busy)}


def run(model: str, frames: np.ndarray, fps: float, bpp: float, epochs: float) -> dict:
    config, enc, encode_s, busy = fit_point(model, frames, fps, bpp, epochs)
    found = {**search(config, frames, enc), "factors": list(FACTORS)}
    return refined_row(model, bpp, epochs, enc, encode_s, busy, found, frames)


def _before_after(r: dict) -> str:
    return (f"{r['psnr_before']:.3f} -> {r['psnr_after']:.3f} dB, {r['bpp_before']:.5f} -> {r['bpp_after']:.5f} "
            "bpp")


def sweep(args, name: str, run_one, columns, said=_before_after) -> int:
    """A benchmark of families' files over `args.models` on `args.clip`: each family's row from
    `run_one(model, video)`, recorded in results/<name>_<clip>.jsonl as soon as it is made (and `said` of
    it printed), then printed as a table."""
    video = read_video(bundled_clip(args.clip))
    args.out.mkdir(parents=True, exist_ok=True)
    results, rows, rev = args.out / f"{name}_{args.clip}.jsonl", [], git_commit()
    for model in args.models.split(","):
        record(results, rows, {**run_one(model, video), "clip": args.clip, "commit": rev})
        print(f"done {model}: {said(rows[-1])}", flush=True)
    print_table(rows, columns)
    return 0


def main(argv=None) -> int:
    args = fit_bench_parser(__doc__, "nerv,hnerv,nervpp").parse_args(argv)
    return sweep(args, "step_search", lambda model, video: run(model, video.frames, video.fps, args.bpp, args.epochs),
                 COLUMNS)


if __name__ == "__main__":
    sys.exit(main())
