"""Peak resident memory of reading, fitting and decoding the full bigbuckbunny clip, against stated bounds.

Every measurement runs in its own process (the CLI path a user runs: `nerva fit`, `nerva decode`), and
its peak RSS is the kernel's figure for that child alone (`os.wait4`'s `ru_maxrss`), so one measurement
never inherits another's heap. A "baseline" child imports the same modules and runs one jitted op: the
runtime's own footprint (Python, JAX, XLA), which every bound includes.

Bounds are written as baseline + k·F + P + A:
- F = the frames read as uint8 (T·H·W·3 bytes; the whole clip: 132·720·1280·3 = 365 MB);
- P = the working memory of the largest program the task ran (XLA's buffer assignment: temporaries and
  outputs less donated arguments, `inr.memory.program_bytes`), as the process itself reports it; what a
  fit or decode checks against the machine's free memory before it starts (`inr.memory.check_program`);
- A = a fixed allowance for what is neither: compiled code, the compiler's own working memory, XLA's and
  the allocator's retained buffers, the video encoder.
Per task:
- read, k = 1, A = 0: the frames array itself; the reader's buffers are one frame, not a clip.
- fit, k = 1, A = 1 GB: the uint8 clip held for the fit and nothing else in proportion to it (each step
  sends its batch and converts it on the device; evaluation goes batch by batch; the written file's
  read-back streams); a float32 copy of the clip alone would be 4 F.
- decode, k = 0, A = 0.5 GB: a streaming decode holds a batch of frames, nothing in proportion to the clip.
Each model is measured on the first FRAMES frames and on the whole clip, so the rows show how the peak
grows with the clip (by at most k·F) apart from what does not.
The fit is short (`--epochs`, default 0.05: a few steps per phase): the peak is reached in the first
steps of a phase (the compiled step, the batch, the optimizer state) and again in the read-back, and
more steps only repeat them.

    python bench/memory.py                   # hnerv and nirvana: appends a row per measurement to results/memory.jsonl
    python bench/memory.py --models nirvana  # at 720p HNeRV's short fit alone takes ~15 CPU-minutes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table import print_table, provenance   # bench/table.py: Python puts the script's folder on sys.path

CLIP = "bigbuckbunny"
K = {"read": 1.0, "fit": 1.0, "decode": 0.0}
ALLOWANCE = {"read": 0.0, "fit": 1e9, "decode": 0.5e9}
FRAMES = 16   # the short clip each model is also measured on
COLUMNS = [("model", "model", "{}"), ("task", "task", "{}"), ("frames", "frames", "{}"),
           ("peak_mb", "peak RSS MB", "{:,.0f}"), ("program_mb", "largest program MB", "{:,.0f}"),
           ("bound_mb", "bound MB", "{:,.0f}"), ("within", "within bound", "{}"), ("wall_s", "wall s", "{:.0f}")]
MB = 1e6


def child(task: str, args: list[str]) -> int:
    """The work of one measurement, run in a fresh process; exits non-zero on failure."""
    import jax.numpy as jnp

    from eval.cli import main
    from inr.memory import largest_program
    from inr.video import bundled_clip, read_video
    if task == "baseline":
        jnp.zeros(8).sum().block_until_ready()
        return 0
    if task == "read":
        video = read_video(bundled_clip(CLIP))
        print(json.dumps({"shape": list(video.frames.shape), "dtype": str(video.frames.dtype)}))
        return 0
    if task == "fit":
        model, epochs, frames, out = args
        # the preset's size on the fixed-bit pipeline, as the committed rows were measured (before the
        # rate-distortion pipeline became `nerva fit`'s default; its memory is not yet measured here)
        status = main(["fit", str(bundled_clip(CLIP)), "-o", out, "--model", model, "--epochs", epochs,
                       "--frames", f"0:{frames}", "--pipeline", "fixed", "--quiet"])
    elif task == "decode":
        (file, out) = args
        status = main(["decode", file, "-o", out])
    else:
        raise SystemExit(f"unknown task {task!r}")
    what, nbytes = largest_program()
    print(json.dumps({"program": what, "program_bytes": nbytes}))
    return status


def measure(task: str, *args: str) -> dict:
    """Runs `task` in a child process; its peak RSS in bytes, wall seconds and exit status."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", task, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)    # this child's own rusage, not every child's maximum
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"{task} {' '.join(args)} failed (exit {proc.returncode}):\n{output[-2000:]}")
    return {"peak": usage.ru_maxrss * 1024, "wall_s": time.perf_counter() - t, "output": output}   # KiB on Linux


def row(model: str, task: str, frames: int, result: dict, baseline: int, clip_bytes: int, run: dict) -> dict:
    """One measurement and its bound: baseline + k·F + P + A (F: the frames read, as uint8)."""
    reported = _last_json(result["output"]) if task != "read" else {}
    program = reported.get("program_bytes", 0)
    bound = baseline + K[task] * clip_bytes + program + ALLOWANCE[task]
    return {"model": model, "task": task, "frames": frames, "peak_mb": result["peak"] / MB,
            "baseline_mb": baseline / MB, "above_baseline_mb": (result["peak"] - baseline) / MB, "k": K[task],
            "clip_mb": clip_bytes / MB, "program_mb": program / MB, "program": reported.get("program", ""),
            "allowance_mb": ALLOWANCE[task] / MB, "bound_mb": bound / MB,
            "within": "yes" if result["peak"] <= bound else "NO", "wall_s": result["wall_s"], **run}


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def run(models: list[str], epochs: str, workdir: Path, out: Path) -> list[dict]:
    """Measures baseline, read, then every model's fit and decode; appends each row to `out` when done."""
    meta = {"clip": CLIP, "fit_epochs": float(epochs), "git_sha": _git_sha(), **provenance()}
    baseline = measure("baseline")["peak"]
    read = measure("read")
    shape = _last_json(read["output"])["shape"]
    frame_bytes = shape[1] * shape[2] * shape[3]
    print(f"{CLIP}: {shape[0]} frames {shape[2]}x{shape[1]}, F = {shape[0] * frame_bytes / MB:.0f} MB as uint8; "
          f"baseline (runtime alone) {baseline / MB:.0f} MB", flush=True)
    rows = [row("—", "read", shape[0], read, baseline, shape[0] * frame_bytes, meta)]
    _append(out, rows[-1])
    for model in models:
        for frames in (FRAMES, shape[0]):
            file, clip_bytes = workdir / f"{model}-{frames}.nerva", frames * frame_bytes
            for task, args in (("fit", (model, epochs, str(frames), str(file))),
                               ("decode", (str(file), str(workdir / f"{model}-{frames}.mp4")))):
                rows.append(row(model, task, frames, measure(task, *args), baseline, clip_bytes, meta))
                _append(out, rows[-1])
                print(f"done {model} {task} {frames} frames: peak {rows[-1]['peak_mb']:,.0f} MB", flush=True)
    return rows


def _append(out: Path, entry: dict) -> None:
    """One JSON line per measurement, written as soon as it is made (a long run keeps what it finished)."""
    with out.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def _git_sha() -> str:
    """The checkout's commit (the code measured; uncommitted changes are not named)."""
    from eval.results import provenance as row_provenance
    return row_provenance()["git_sha"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="hnerv,nirvana", help="comma list of model strings")
    p.add_argument("--epochs", default="0.05", help="fitting epochs of the short fit (a few steps a phase)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "memory.jsonl")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run([m.strip() for m in args.models.split(",") if m.strip()], args.epochs, Path(tmp), args.out)
    print_table(rows, COLUMNS)
    print(f"appended {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child(sys.argv[2], sys.argv[3:]))
    sys.exit(main())
