"""The long fuzz run of the .nerva reader: mutated valid files of every family, outcomes, time and memory.

Cases come from the mutation engine in tests/codec/fuzzing.py (shared with the suite's fuzz test), over
the golden files and freshly built tiny() files of every registered model, every mutation with its CRC
recomputed. Cases run in a worker subprocess under RLIMIT_AS, so an unbounded allocation ends in a
MemoryError (or the worker's death) instead of taking the machine; a case running past --hang-s is killed
and counted as a hang. Per case it records the wall time, the tracemalloc peak (NumPy reports to it) and
the growth of the worker's peak RSS (ru_maxrss). Prints a table and writes bench/results/fuzz.json.

    python bench/fuzz.py                    # 20,000 cases (~10-15 min on 2 cores)
    python bench/fuzz.py --cases 2000 --seed 1
    python bench/fuzz.py --header-sweep --out /tmp/sweep.json   # every header field x every absurd value
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "codec"))   # the mutation engine lives with the suite's test

import fuzzing  # noqa: E402
from table import print_table  # noqa: E402  (bench/table.py: Python puts the script's folder on sys.path)


# An accepted file's re-encoding check costs ~20x a parse (entropy model fits), so the long run applies
# it to every tenth case (the suite applies it to every case).
ROUNDTRIP_EVERY = 10


def case_bytes(seeds, index: int, base_seed: int):
    """Case `index`: (seed label, operator, bytes), a pure function of (seeds, index, base_seed).

    base_seed -1 is the header sweep: every header field of every seed set to every absurd value.
    """
    if base_seed == -1:
        for s in seeds:
            n = len(_header_cases(s))
            if index < n:
                op, data = _header_cases(s)[index]
                return s.label, op, data
            index -= n
        raise IndexError("past the header sweep")
    rng = random.Random(base_seed * 1_000_003 + index)
    seed = seeds[index % len(seeds)]
    others = [s for s in seeds if s.model_id != seed.model_id]
    op, data = fuzzing.mutate(seed, rng, others)
    return seed.label, op, data


@functools.lru_cache(maxsize=1)
def _header_cases(seed):
    return fuzzing.header_cases(seed)


def header_sweep_size(seeds) -> int:
    return sum(len(_header_cases(s)) for s in seeds)


def load_seeds(folder: Path):
    return [fuzzing.make_seed(p.stem.replace("+", "/"), p.read_bytes()) for p in sorted(folder.glob("*.nerva"))]


def worker(seed_dir: Path, start: int, stop: int, base_seed: int, limit_gib: float) -> None:
    """Runs cases start..stop-1, one JSON line before ("begin") and one after each case."""
    limit = int(limit_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seeds = load_seeds(seed_dir)
    for s in seeds:   # warm the model traces, so a case's time is the reader's, not the first trace
        fuzzing.run_case(s.data)
    for i in range(start, stop):
        label, op, data = case_bytes(seeds, i, base_seed)
        print(json.dumps({"begin": i}), flush=True)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            o = fuzzing.run_case(data, check_roundtrip=i % ROUNDTRIP_EVERY == 0)
            row = {"kind": o.kind, "detail": o.detail[:300], "seconds": o.seconds, "peak": o.peak_bytes}
        except MemoryError:
            row = {"kind": "memory", "detail": "MemoryError", "seconds": 0.0, "peak": limit}
        rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) << 10
        print(json.dumps({"case": i, "seed": label, "op": op, "bytes": len(data),
                          "rss_growth": rss_growth, **row}), flush=True)


def run_all(seed_dir: Path, cases: int, base_seed: int, hang_s: float, limit_gib: float, workers: int,
            log) -> list[dict]:
    """All cases, split into `workers` contiguous ranges, each run by its own chain of worker processes."""
    import concurrent.futures
    bounds = [cases * k // workers for k in range(workers + 1)]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda k: _run_range(seed_dir, bounds[k], bounds[k + 1], base_seed, hang_s, limit_gib, log),
                         range(workers))
        return sorted((r for part in parts for r in part), key=lambda r: r["case"])


def _run_range(seed_dir: Path, start: int, stop: int, base_seed: int, hang_s: float, limit_gib: float,
               log) -> list[dict]:
    """Cases start..stop-1 through as many worker processes as deaths and hangs require."""
    rows, next_case = [], start
    while next_case < stop:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(seed_dir), str(next_case),
                                 str(stop), str(base_seed), str(limit_gib)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        next_case = _drain(proc, rows, next_case, hang_s, log)
    return rows


def _drain(proc, rows: list[dict], current: int, hang_s: float, log) -> int:
    """Reads a worker's lines until it ends; returns the next case to run."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    started, warm = None, False
    while True:
        timeout = None if started is None else max(0.0, hang_s - (time.monotonic() - started))
        if not sel.select(timeout if warm else 600):
            proc.kill()
            proc.wait()
            rows.append({"case": current, "kind": "hang", "detail": f"over {hang_s} s", "seconds": hang_s,
                         "peak": 0, "rss_growth": 0})
            log(rows[-1])
            return current + 1
        line = proc.stdout.readline()
        if not line:   # the worker finished, or died (e.g. killed by the kernel)
            if proc.wait() == 0 and started is None:
                return current
            if not warm:
                raise RuntimeError(f"the fuzz worker failed to start (exit {proc.returncode})")
            rows.append({"case": current, "kind": "died", "detail": f"worker exit {proc.returncode}",
                         "seconds": 0.0, "peak": 0, "rss_growth": 0})
            log(rows[-1])
            return current + 1
        msg = json.loads(line)
        warm = True
        if "begin" in msg:
            current, started = msg["begin"], time.monotonic()
        else:
            rows.append(msg)
            log(msg)
            current, started = msg["case"] + 1, None


def summarize(rows: list[dict], seconds: float) -> dict:
    """Outcome counts, FormatError classes, worst time/memory per case and the findings."""
    bad_time = [r for r in rows if r["seconds"] > fuzzing.MAX_SECONDS]
    bad_mem = [r for r in rows if max(r["peak"], r["rss_growth"]) > fuzzing.MAX_PEAK_BYTES]
    kinds = collections.Counter(r["kind"] for r in rows)
    errors = collections.Counter(fuzzing.message_class(r["detail"]) for r in rows if r["kind"] == "format_error")
    findings = [r for r in rows if r["kind"] not in ("ok", "format_error") or r in bad_time or r in bad_mem]
    worst = {key: max(rows, key=lambda r: r[key]) for key in ("seconds", "peak", "rss_growth")}
    return {
        "cases": len(rows), "seconds": round(seconds, 1), "cases_per_second": round(len(rows) / seconds, 1),
        "outcomes": dict(kinds), "over_time": len(bad_time), "over_memory": len(bad_mem),
        "bounds": {"seconds": fuzzing.MAX_SECONDS, "peak_bytes": fuzzing.MAX_PEAK_BYTES},
        "format_errors": dict(errors.most_common()),
        "worst": {key: {k: r.get(k) for k in ("case", "seed", "op", "seconds", "peak", "rss_growth", "kind")}
                  for key, r in worst.items()},
        "by_seed": dict(collections.Counter(r.get("seed", "?") for r in rows)),
        "findings": findings[:200],
    }


def provenance() -> dict:
    import jax
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"python": platform.python_version(), "jax": jax.__version__, "machine": platform.machine(),
            "git": git.stdout.strip(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def report(summary: dict) -> None:
    rows = [{"outcome": k, "cases": v} for k, v in sorted(summary["outcomes"].items())]
    rows += [{"outcome": "over time (> %.0f s)" % fuzzing.MAX_SECONDS, "cases": summary["over_time"]},
             {"outcome": "over memory (> %d MiB)" % (fuzzing.MAX_PEAK_BYTES >> 20), "cases": summary["over_memory"]}]
    print_table(rows, [("outcome", "outcome", "{}"), ("cases", "cases", "{}")])
    print()
    print_table([{"c": k, "n": v} for k, v in summary["format_errors"].items()],
                [("c", "FormatError message class", "{}"), ("n", "cases", "{}")])
    w = summary["worst"]
    print(f"{summary['cases']} cases in {summary['seconds']} s ({summary['cases_per_second']} cases/s); "
          f"worst time {w['seconds']['seconds']:.3f} s, worst tracemalloc peak {w['peak']['peak'] / 2**20:.1f} MiB, "
          f"worst RSS growth {w['rss_growth']['rss_growth'] / 2**20:.1f} MiB")


def write_seeds(folder: Path) -> None:
    for s in fuzzing.golden_seeds() + fuzzing.fresh_seeds():
        (folder / (s.label.replace("/", "+") + ".nerva")).write_bytes(s.data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0, help="base seed of the case generator")
    ap.add_argument("--header-sweep", action="store_true",
                    help="instead of random cases, every header field of every seed set to every absurd value")
    ap.add_argument("--hang-s", type=float, default=20.0, help="a case running this long is killed")
    ap.add_argument("--workers", type=int, default=2, help="worker processes running at once")
    ap.add_argument("--limit-gib", type=float, default=4.0, help="RLIMIT_AS of the worker")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fuzz.json")
    ap.add_argument("--log", type=Path, help="also write every case's row here (JSON lines)")
    args = ap.parse_args(argv)
    log_file = args.log.open("w") if args.log else None

    lock = threading.Lock()

    def log(row):
        with lock:
            _log(row)

    def _log(row):
        if log_file:
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
        if row["kind"] not in ("ok", "format_error"):
            print(f"case {row['case']}: {row['kind']}: {row.get('seed')} {row.get('op')}: {row['detail'][:160]}",
                  flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        write_seeds(Path(tmp))
        if args.header_sweep:
            args.seed, args.cases = -1, header_sweep_size(load_seeds(Path(tmp)))
        t0 = time.perf_counter()
        rows = run_all(Path(tmp), args.cases, args.seed, args.hang_s, args.limit_gib, args.workers, log)
        elapsed = time.perf_counter() - t0
        seeds = load_seeds(Path(tmp))
        for r in rows:   # hangs and deaths are recorded by the parent, which regenerates their case
            if "op" not in r:
                r["seed"], r["op"], _ = case_bytes(seeds, r["case"], args.seed)
        summary = summarize(rows, elapsed)
    summary = {"command": "python bench/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               **provenance(), **summary}
    report(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        seed_dir, start, stop, base_seed, limit = sys.argv[2:7]
        worker(Path(seed_dir), int(start), int(stop), int(base_seed), float(limit))
    else:
        sys.exit(main())
