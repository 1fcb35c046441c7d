"""Does NIRVANA's bitrate follow the motion? Per-group bytes on a clip whose second half stands still.

The clip: carphone's first half as it is (moving), then its last moving frame repeated to the original
length (static). The script fits it with `nerva fit` (a real file, in another process, like a user
would), reads the per-group section sizes from `nerva info`, and reports the mean bytes of the static
groups as a fraction of the moving groups' mean. The first static group is reported on its own: its
frames are still, but its network must turn G different frame heads into copies of one frame, which is
a real change of weights; every later static group repeats its predecessor's target exactly.

    python bench/nirvana_adaptive.py                                   # carphone, 120 frames
    python bench/nirvana_adaptive.py --model nirvana:target_psnr=30 --size 300k --epochs 60

Prints a table and writes bench/results/nirvana_adaptive.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inr.video import bundled_clip, read_video, write_video

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = re.compile(r"^(?:tensors|residual): group(\d+)\b.*?\s(\d+)\s*$")


def half_static_clip(frames: np.ndarray) -> tuple[np.ndarray, int]:
    """(frames with the second half frozen on the last moving frame, first static frame index)."""
    t = frames.shape[0]
    moving = t // 2
    return np.concatenate([frames[:moving], np.repeat(frames[moving - 1:moving], t - moving, axis=0)]), moving


def nerva(*argv: str) -> str:
    p = subprocess.run([sys.executable, "-m", "eval.cli", *argv], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"nerva {argv[0]} failed: {p.stderr.strip()}")
    return p.stdout


def group_bytes(info: str) -> dict[int, int]:
    """{group: bytes of its TENSORS or RESIDUAL section} from `nerva info` output."""
    out = {}
    for line in info.splitlines():
        m = SECTION.match(line.strip())
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def _kind(k: int, group: int, first_static: int) -> str:
    """Group k holds frames [k·G, (k+1)·G): all moving, straddling, the first all-static one, or static
    after a static predecessor (the same target as its predecessor)."""
    lo, hi = k * group, (k + 1) * group
    if hi <= first_static:
        return "moving"
    if lo < first_static:
        return "mixed"
    return "first static" if lo - group < first_static else "static"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="nirvana", help="a NIRVANA model string (default: nirvana)")
    ap.add_argument("--size", default="300k", help="parameters over all groups (default 300k)")
    ap.add_argument("--epochs", default="60")
    ap.add_argument("--seed", default="0")
    ap.add_argument("-o", "--out", type=Path, default=RESULTS / "nirvana_adaptive.json")
    args = ap.parse_args(argv)

    source = read_video(bundled_clip("carphone"))
    frames, first_static = half_static_clip(source.frames)
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_video(Path(tmp) / "half_static.mkv", frames, fps=source.fps, lossless=True)
        nerva_file = Path(tmp) / "half_static.nerva"
        t = time.perf_counter()
        fit = json.loads(nerva("fit", str(clip), "-o", str(nerva_file), "--model", args.model, "--size", args.size,
                               "--epochs", args.epochs, "--seed", args.seed, "--quiet", "--json").splitlines()[-1])
        fit_s = time.perf_counter() - t
        info = nerva("info", str(nerva_file))
    sizes = group_bytes(info)
    group = int(re.search(r"\bgroup=(\d+)", info).group(1))
    kinds = {k: _kind(k, group, first_static) for k in sizes}
    moving = [b for k, b in sizes.items() if kinds[k] == "moving" and k > 0]   # group 0 is coded from scratch
    static = [b for k, b in sizes.items() if kinds[k] == "static"]
    first = [b for k, b in sizes.items() if kinds[k] in ("first static", "mixed")]
    print(f"{args.model}, {args.size} parameters, {args.epochs} epochs: {frames.shape[0]} frames, "
          f"moving 0..{first_static - 1}, frozen from {first_static}; fit {fit_s:.0f} s, "
          f"{fit['psnr']:.2f} dB, {fit['bpp']:.4f} bpp")
    print(f"{'group':>6}{'frames':>10}  {'kind':<13}{'bytes':>7}")
    for k in sorted(sizes):
        print(f"{k:>6}{f'{k * group}-{(k + 1) * group - 1}':>10}  {kinds[k]:<13}{sizes[k]:>7}")
    ratio = statistics.mean(static) / statistics.mean(moving)
    ratio_with_first = statistics.mean(static + first) / statistics.mean(moving)
    print(f"group 0 (from scratch) {sizes[0]} B; moving groups 1.. mean {statistics.mean(moving):.0f} B; "
          f"first static {first} B; later static mean {statistics.mean(static):.0f} B")
    print(f"static / moving bytes: {ratio:.1%} (with the first static group: {ratio_with_first:.1%})")
    report = {"model": args.model, "size": args.size, "epochs": args.epochs, "seed": args.seed,
              "frames": int(frames.shape[0]), "first_static_frame": first_static, "group": group,
              "fit_s": fit_s, "psnr": fit["psnr"], "bpp": fit["bpp"], "bytes": fit.get("bytes"),
              "group_bytes": {str(k): sizes[k] for k in sorted(sizes)},
              "kinds": {str(k): kinds[k] for k in sorted(sizes)},
              "static_over_moving": ratio, "static_over_moving_with_first": ratio_with_first}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
