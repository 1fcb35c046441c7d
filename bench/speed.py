"""Speed benchmark: training and decoding frames/s of every registered model, and how much of the CPU's peak they use.

For each registered model (the registry is walked, no list) at one parameter budget on one clip:
  - training frames/s: the real jitted step of `train.loop.make_step` (fit phase, batch 2, the model's
    preset optimiser; HNeRV trains its encoder, as in a real fit), steady state after warm-up, median of
    timed rounds, synchronised on the loss every step as the fitting loop is;
  - decode frames/s: `codec.decoder.decode_frames` at batch 8 after compilation, median of 3 rounds of
    64 frames;
  - FLOPs from the compiled programs: XLA's `cost_analysis()['flops']` of the decoder's forward pass for
    one frame and of one whole training step (forward, backward, Adam, batch shuffling);
  - achieved GFLOP/s = frames/s x FLOPs, and that as a fraction of the machine's fp32 matmul peak
    (jitted 2048x2048 @ 2048x2048, best of 10; its FLOPs are also XLA's count, which is exactly 2·n³).

Why XLA's count rather than an analytic one (research/ecosystem.md §2 counted 2·MACs and took training
as 3x forward): the compiled program is what runs, so its count follows every model without per-family
formulas, and the training count needs no 3x convention. It counts an FMA as 2 FLOPs, as 2·MACs does,
but also counts elementwise work (bias adds, the erf polynomial of exact GELU, tanh, PixelShuffle is
free). The `2·MAC MFLOP` column is the analytic dense+conv count where this file knows the formula
(NeRV): XLA's figure should be it plus 10-30 % of elementwise work (measured: 117 vs 93 MFLOP on
carphone at 100k, 506 vs 450 on 320x180 at 670k); a larger gap would mean a miscount. The `step/fwd`
column is XLA's training-step FLOPs over batch x forward FLOPs, which the convention takes as 3: NeRV
measures ~2.7 (no gradient for the positional encoding), HNeRV ~3-3.3 (its step also runs the encoder).

Prints a table and appends one JSON line per model to bench/results/speed_<clip>.jsonl.

    python bench/speed.py                        # every model at 100k parameters on carphone (176x144)
    python bench/speed.py --size 200k --models hnerv
    python bench/speed.py --clip bigbuckbunny --resize 320x180 --size 690k

Expected runtime on 2 CPU cores: about 70 s for the default (compilation included).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from codec.api import QuantPolicy
from codec.decoder import decode_frames, render_uint8
from eval.cli import parse_size, parse_wh
from eval.rd import load_clip
from inr import registry
from inr.config import Geometry
from table import print_table, provenance   # bench/table.py: Python puts the script's folder on sys.path
from train import presets
from train.loop import init_state, make_step, phase_steps

TRAIN_BATCH = 2       # frames per training step (the project default, TrainConfig.batch)
DECODE_BATCH = 8      # frames per decoder call (throughput; the player decodes 2 at a time, bench/player.py)
ROUNDS = 5            # timed rounds; the median is reported
ROUND_S = 1.0         # each training round runs enough steps to last about this long

COLUMNS = [("model", "model", "{}"), ("params", "params", "{:,}"),
           ("fwd_mflop", "fwd MFLOP/frame (XLA)", "{:.1f}"), ("fwd_mflop_analytic", "2·MAC MFLOP", "{:.1f}"),
           ("step_gflop", "train step GFLOP (XLA)", "{:.3f}"), ("step_over_fwd", "step/fwd", "{:.2f}"),
           ("train_fps", "train fps", "{:.1f}"), ("train_gflops", "train GFLOP/s", "{:.1f}"),
           ("train_peak_frac", "% peak", "{:.1%}"), ("decode_fps", "decode fps", "{:.0f}"),
           ("decode_gflops", "decode GFLOP/s", "{:.1f}"), ("decode_peak_frac", "% peak", "{:.1%}")]


def others_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPU time spent by other processes over `seconds` before the benchmark starts
    (from /proc/stat; None where it does not exist). The cores are shared, so this is recorded."""
    def sample():
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)   # idle + iowait, total (clock ticks)
    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def xla_flops(compiled) -> float:
    """FLOPs XLA counts for a compiled executable (an FMA counts 2)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):   # older jax returns one dict per device program
        cost = cost[0]
    return float(cost["flops"])


def matmul_peak(n: int = 2048, repeats: int = 10) -> dict:
    """The machine's fp32 matmul GFLOP/s: jitted n×n @ n×n, best of `repeats`."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    compiled = jax.jit(jnp.matmul).lower(a, b).compile()
    flops = xla_flops(compiled)   # = 2·n³: checks that XLA's count is the 2·MACs convention
    compiled(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        compiled(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return {"n": n, "flops": flops, "analytic_flops": 2.0 * n ** 3, "gflops": flops / min(times) / 1e9}


def nerv_analytic_flops(config) -> float:
    """2·MACs of NeRV's dense and conv layers for one frame (the convention of research/ecosystem.md §2).

    The decoder renders the padded grid (base·prod(strides)) and crops, so the count is on the padded grid.
    """
    macs = 2 * config.pe_levels * config.stem_width
    macs += config.stem_width * config.base_h * config.base_w * config.stem_channels
    h, w, c = config.base_h, config.base_w, config.stem_channels
    for ch, s in zip(config.channels, config.strides):
        macs += h * w * config.kernel ** 2 * c * ch * s * s   # Conv k×k, C -> ch·s², before PixelShuffle
        h, w, c = h * s, w * s, ch
    macs += h * w * c * 3                                       # 1×1 head conv to RGB
    return 2.0 * macs


ANALYTIC = {"nerv": nerv_analytic_flops}   # sanity checks of XLA's count; other families: XLA only


def decode_speed(config, variables, n_frames: int, rounds: int = 3) -> dict:
    """Decoder FLOPs per frame (compiled batch-1 forward) and decode frames/s at DECODE_BATCH."""
    fwd = xla_flops(render_uint8.lower(config, variables, jnp.zeros((1,), jnp.int32)).compile())
    idx = np.arange(min(n_frames, 8 * DECODE_BATCH))
    t = time.perf_counter()
    decode_frames(config, variables, idx, batch=DECODE_BATCH)   # compiles
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        decode_frames(config, variables, idx, batch=DECODE_BATCH)
        times.append(time.perf_counter() - t)
    return {"fwd_flops": fwd, "decode_fps": idx.size / statistics.median(times), "decode_compile_s": compile_s}


def train_speed(model: str, config, frames: np.ndarray) -> dict:
    """XLA's FLOPs of one training step and the steady-state frames/s of the real jitted step."""
    spec = registry.spec_of(config)
    train = presets.train_config(model, 60, batch=TRAIN_BATCH, config=config)
    phase, n_steps = train.phases[0], phase_steps(train, frames.shape[0])[0]
    step = make_step(config, train, phase, n_steps, QuantPolicy(), frames.shape[0])
    tree = init_state(spec, config, train).tree()
    key = jax.random.key(0)   # the step takes the host clip and sends each batch, as the fitting loop does
    step_flops = xla_flops(step.lower(tree, frames, key, 0).compile())
    s, t = 0, time.perf_counter()
    for _ in range(3):   # warm-up: the first call compiles
        tree, metrics = step(tree, frames, key, s)
        float(metrics["loss"])
        s, last, t = s + 1, time.perf_counter() - t, time.perf_counter()
    per_round = max(2, math.ceil(ROUND_S / last))
    step_times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        for _ in range(per_round):
            tree, metrics = step(tree, frames, key, s)
            float(metrics["loss"])   # the fitting loop reads every loss (one step late, as its next step runs)
            s += 1
        step_times.append((time.perf_counter() - t) / per_round)
    step_s = statistics.median(step_times)
    per_step = phase.batch_size(train.batch, frames.shape[0])   # NIRVANA's phases step on a whole group
    return {"step_flops": step_flops, "step_s": step_s, "train_fps": per_step / step_s, "train_batch": per_step,
            "steps_per_round": per_round}


def run_one(model: str, size: int, frames: np.ndarray, fps: float, peak: float) -> dict:
    spec, overrides = registry.parse(model)   # model strings: "hnerv:cam_nodes=30" too
    config = spec.for_size(Geometry.of(*frames.shape[:3], fps=fps), size, **overrides)
    variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
    dec = decode_speed(config, variables, frames.shape[0])
    tr = train_speed(model, config, frames)
    analytic = ANALYTIC[model](config) if model in ANALYTIC else None
    fwd = dec["fwd_flops"]
    row = {"model": model, "size_budget": size, "params": sum(x.size for x in jax.tree.leaves(variables)),
           "fwd_flops": fwd, "fwd_flops_analytic": analytic, "step_flops": tr["step_flops"],
           "decode_batch": DECODE_BATCH, **dec, **tr}
    row.update(fwd_mflop=fwd / 1e6, step_gflop=tr["step_flops"] / 1e9,
               fwd_mflop_analytic=None if analytic is None else analytic / 1e6,
               step_over_fwd=tr["step_flops"] / (tr["train_batch"] * fwd),
               train_gflops=tr["train_fps"] / tr["train_batch"] * tr["step_flops"] / 1e9,
               decode_gflops=dec["decode_fps"] * fwd / 1e9, config=config.to_dict())
    row.update(train_peak_frac=row["train_gflops"] / peak, decode_peak_frac=row["decode_gflops"] / peak)
    return row



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="carphone", help="bundled clip name or video path")
    ap.add_argument("--resize", type=parse_wh, help="resize frames to WxH first")
    ap.add_argument("--models", default=",".join(registry.names()))
    ap.add_argument("--size", type=parse_size, default=100_000, help="parameter budget (default 100k)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    t0, busy = time.time(), others_busy()
    if busy is not None and busy > 0.1:
        print(f"warning: other processes keep {busy:.0%} of the CPUs busy: every figure below (the peak too) "
              "will be low", flush=True)
    video, clip = load_clip(args.clip, resize=args.resize)
    label = clip + (f"@{args.resize[1]}x{args.resize[0]}" if args.resize else "")
    peak = matmul_peak()
    print(f"fp32 matmul {peak['n']}x{peak['n']}: {peak['gflops']:.0f} GFLOP/s (best of 10; XLA counts "
          f"{peak['flops'] / 1e9:.2f} GFLOP = 2·n³ {peak['analytic_flops'] / 1e9:.2f})", flush=True)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for model in args.models.split(","):
        row = run_one(model, args.size, video.frames, video.fps, peak["gflops"])
        row.update(clip=label, shape=list(video.frames.shape[:3]), matmul_gflops=peak["gflops"],
                   **provenance(busy))
        rows.append(row)
        with (args.out / f"speed_{clip}.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"done {model}: train {row['train_fps']:.1f} fps, decode {row['decode_fps']:.0f} fps", flush=True)
    print(f"{label}: {video.num_frames} frames {video.width}x{video.height}, train batch {TRAIN_BATCH}, "
          f"decode batch {DECODE_BATCH}; % of the {peak['gflops']:.0f} GFLOP/s matmul peak")
    print_table(rows, COLUMNS)
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
