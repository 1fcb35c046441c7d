"""RD benchmark: every registered model against x264, x265 and AV1 on carphone and a 320x180 bigbuckbunny.

Per clip, `eval.rd.sweep` fits each rate point, writes the .nerva file, decodes the file and measures it
(baselines: encode with ffmpeg, decode the bitstream), appending one row per point to
bench/results/rd_<clip>.jsonl. Finished rows are skipped, so an interrupted run resumes where it stopped.
Then it draws bench/results/rd_<clip>.png/.svg, prints the BD-rate table against x265-medium and
x264-medium, and appends the clip's wall time to bench/results/rd_runs.jsonl. Clips: carphone, all
120 frames at 176x144; bigbuckbunny, all 132 frames downscaled to 320x180.

    python bench/rd.py                                   # both clips, every model + x264, x265, av1
    python bench/rd.py --clips carphone --codecs nerv,x265 --points 6
    python bench/rd.py --quick                           # smoke test: 6 frames at 64x48, 2 points, 1 epoch

Expected runtime on 2 CPU cores with the defaults (4 points per codec, 60 + 6 epochs, 6 bits):
about 3 hours in all, most of it bigbuckbunny's large HNeRV points.
  - carphone, ~45 min, measured (`nerva rd carphone` with these settings, on a shared machine): NeRV
    11k-276k parameters 1-3 min a point (9 min); HNeRV 28k-276k 6.5-11 min a point (35 min); the 20
    baseline points 4 min, almost all x265 veryslow. bench/results/fit_carphone.jsonl agrees (NeRV
    2-2.5 min, HNeRV 4.5-9 min at 50k-200k parameters and 66 epochs).
  - bigbuckbunny 320x180, ~2.5 hours, estimated: 2.5x carphone's pixels per frame, 132 frames, points at
    28k, 81k, 236k and 691k parameters. Each fit is 66 epochs x 132 frames = 8712 frames through the
    training step; at the training frames/s that bench/speed.py measures at those sizes on this clip
    (NeRV 78, 25, 25, 17; HNeRV 38, 12, 8.3, 2.4 frames/s) plus 1-2 min a point for compilation,
    evaluation and decoding: NeRV 3-10 min a point (~30 min), HNeRV about 5, 14, 19 and 62 min (~1.7 h),
    baselines ~10 min.
  - --quick: about 1.5 minutes, mostly compilation.
The fit times scale with the per-step cost that bench/speed.py reports (XLA's FLOPs of a step over the
GFLOP/s achieved), so on a busier or slower machine scale accordingly. Run it unattended (nohup); the
resume makes an interruption cheap; rows already in the results file are reused.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from eval import plots
from eval.cli import parse_wh
from eval.rd import bd_table, expand_codecs, format_bd_table, load_clip, plan, sweep
from inr import registry
from inr.config import Geometry
from inr.errors import ConfigError
from table import print_table   # bench/table.py: Python puts the script's folder on sys.path

CLIPS = {"carphone": None, "bigbuckbunny": parse_wh("320x180")}   # name -> resize (H, W), None = as is
QUICK = {"frames": (0, 6), "resize": parse_wh("64x48"), "points": 2, "epochs": 1.0}


def progress(total: int):
    """A tqdm bar over the points still to run."""
    return tqdm(total=total, unit="point", dynamic_ncols=True)


def run_clip(name: str, args, codecs: list[str]) -> dict:
    """Sweeps one clip, plots it and prints its BD-rate table; returns the run record (wall time)."""
    frames, resize = (QUICK["frames"], QUICK["resize"]) if args.quick else (None, CLIPS.get(name))
    video, clip = load_clip(name, frames, resize)
    label = clip + (f"@{resize[1]}x{resize[0]}" if resize else "")
    out = args.out / f"rd_{clip}.jsonl"
    print(f"{label}: {video.num_frames} frames {video.width}x{video.height} -> {out}", flush=True)
    t = time.perf_counter()
    rows = sweep(video.frames, video.fps, label, codecs, out, args.points, args.epochs, args.seed,
                 args.bits, progress)
    wall_s = time.perf_counter() - t
    # Only this configuration's points: the file may also hold other epochs, bits or point counts.
    geometry = Geometry.of(*video.frames.shape[:3], fps=video.fps)
    keys = {p.key(label, geometry.frames)
            for p in plan(codecs, geometry, args.points, args.bits, args.epochs, args.seed)}
    rows = [r for r in rows if r.key in keys]
    paths = plots.save(rows, out.with_suffix(""),
                       f"{label}: {video.num_frames} frames {video.width}x{video.height}")
    print(f"{label}: {len(rows)} rows, this run {wall_s:.0f} s; plots: {', '.join(map(str, paths))}")
    print(format_bd_table(bd_table(rows)), flush=True)
    return {"clip": label, "shape": list(video.frames.shape[:3]), "codecs": codecs, "points": args.points,
            "epochs": args.epochs, "bits": args.bits, "seed": args.seed, "rows": len(rows), "wall_s": wall_s,
            "encode_s_sum": sum(r.encode_s for r in rows), "machine": platform.machine(),
            "python": sys.version.split()[0],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _share_compilations() -> None:
    """Smoke tests are mostly XLA compilation, and both clips at 64x48 compile the same programs (the
    configs differ only in the frame rate, which no computation reads): a persistent compilation cache
    in a temporary folder lets the second clip reuse the first clip's executables."""
    import atexit
    import shutil

    import jax
    cache = tempfile.mkdtemp(prefix="nerva-rd-jax-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default=",".join(CLIPS), help="comma list (default carphone,bigbuckbunny)")
    ap.add_argument("--codecs", default=",".join(registry.names() + ["x264", "x265", "av1"]),
                    help="models and baselines (x264, x265, av1 or e.g. x265-medium); default all")
    ap.add_argument("--points", type=int, help="rate points per codec (default 4; --quick 2)")
    ap.add_argument("--epochs", type=float, help="INR fitting epochs (default 60; --quick 1)")
    ap.add_argument("--bits", type=int, default=6, help="INR quantization bits (default 6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke test: 6 frames at 64x48, 2 points, 1 epoch")
    ap.add_argument("--out", type=Path, help="results folder (default bench/results; --quick: a temp dir)")
    args = ap.parse_args(argv)
    if args.points is None:
        args.points = QUICK["points"] if args.quick else 4
    if args.epochs is None:
        args.epochs = QUICK["epochs"] if args.quick else 60.0
    try:
        codecs = expand_codecs(args.codecs)
    except ConfigError as e:
        ap.error(str(e))
    if args.points < 1 or args.epochs <= 0:
        ap.error("--points and --epochs must be positive")
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="nerva-rd-")) if args.quick else Path(__file__).parent / "results"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        _share_compilations()
    records = []
    for name in (n.strip() for n in args.clips.split(",") if n.strip()):
        records.append(run_clip(name, args, codecs))
        with (args.out / "rd_runs.jsonl").open("a") as f:   # written per clip: the next may take hours
            f.write(json.dumps(records[-1]) + "\n")
    print_table(records, [("clip", "clip", "{}"), ("rows", "rows", "{}"),
                          ("wall_s", "wall s (this run)", "{:.0f}"),
                          ("encode_s_sum", "fit+encode s (all rows)", "{:.0f}")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
