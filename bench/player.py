"""Player benchmark: sustained playback frames/s and seek latency of `nerva play`, for every registered model.

For each registered model at its preset's default size on carphone (176×144, 120 frames, 29.97 fps), a .nerva
file of the initialised network quantized at 8 bits is served by `codec.play` and driven in headless Chromium
through the page's own functions (the ones its buttons call). Decode cost does not depend on the weights'
values (every layer is dense), so a fitted file of the same config plays at the same speed. The server's cache
is cut to its floor (the playhead's batch and the prefetch: 12 frames), so that looping playback and seeks
measure decoding, as they would on a long video, not replays from memory. Measured:
  - playback at the file's fps (1×, looping) for PLAY_S seconds: frames drawn per second of page time;
  - playback "as fast as it decodes" for PLAY_S seconds: frames put on the canvas per second (above the
    display's refresh rate not every one of them is painted; the figure measures the decode path);
  - seek latency: SEEKS seeks to random frames while playing at 1×, each from the call to the frame on the
    canvas (the page's performance.now: request, decode if not prefetched, transfer, putImageData);
  - the engine alone (no browser, no HTTP): `Player.frames` frames/s from a cold cache, and the latency of
    `Player.frame(k)` for random far k right after 10 frames of playback (so prefetch is busy).
Chromium runs on the same 2 cores as the decoder: the figures are what a person sees on this machine.

Prints a table and writes bench/results/player_<clip>.json. With --screenshot, also saves a screenshot of the
page playing --file (with --reference) to the given PNG.

    python bench/player.py                                  # every model (about 3 minutes on 2 cores)
    python bench/player.py --models hnerv
    python bench/player.py --models hnerv --screenshot docs/player.png --file nerva-demo/carphone.nerva \\
        --reference carphone

Needs Chromium (Debian's `chromium`, or NERVA_CHROMIUM) and Playwright (the test extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from codec import api
from codec.play import find_chromium, open_server
from codec.player import Player
from eval.rd import load_clip
from inr import registry
from inr.config import Geometry
from inr.video import bundled_clip
from speed import others_busy   # bench/speed.py
from table import print_table, provenance   # bench/table.py
from train import presets

PLAY_S = 4.0
SEEKS = 20
COLUMNS = [("model", "model", "{}"), ("params", "params", "{:,}"), ("play_fps", "1× fps", "{:.1f}"),
           ("target_fps", "target", "{:.2f}"), ("max_fps", "max fps", "{:.1f}"),
           ("seek_ms_p50", "seek p50 ms", "{:.0f}"), ("seek_ms_p95", "seek p95 ms", "{:.0f}"),
           ("seek_ms_max", "seek max ms", "{:.0f}"), ("engine_fps", "engine fps", "{:.1f}"),
           ("engine_seek_ms_p50", "engine seek p50 ms", "{:.1f}"), ("engine_seek_ms_max", "engine seek max", "{:.1f}")]




def make_file(model: str, geometry: Geometry, folder: Path) -> tuple[Path, int]:
    spec, overrides = registry.parse(model)
    config = spec.for_size(geometry, presets.preset(model).size, **overrides)
    variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
    data = api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=8)))
    path = folder / f"{model}.nerva"
    path.write_bytes(data)
    return path, sum(x.size for x in jax.tree.leaves(variables))


def engine(path: Path, rng: np.random.Generator) -> dict:
    with Player(path) as p:
        p.warmup()
        t = time.perf_counter()
        p.frames()
        fps = len(p) / (time.perf_counter() - t)
    times = []
    for k in rng.integers(0, 120, 10):
        with Player(path) as p:   # a fresh cache each time: every seek decodes
            for i in range(10):
                p.frame(i)
            k = int(max(k, 30))
            t = time.perf_counter()
            p.frame(k)
            times.append(1000 * (time.perf_counter() - t))
    return {"engine_fps": fps, "engine_seek_ms_p50": statistics.median(times), "engine_seek_ms_max": max(times)}


def page_rate(page, seconds: float) -> float:
    a = page.evaluate("nerva.state()")
    time.sleep(seconds)
    b = page.evaluate("nerva.state()")
    return 1000 * (b["drawn"] - a["drawn"]) / (b["now"] - a["now"])


def browser_run(browser, path: Path, rng: np.random.Generator) -> dict:
    with open_server(path, cache_mb=None).start() as server:   # the cache keeps only what prefetch needs
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=120_000)
        page.evaluate("nerva.setLoop(true)")
        page.evaluate("nerva.play()")
        time.sleep(0.5)
        play_fps = page_rate(page, PLAY_S)
        seeks = []
        for k in rng.integers(0, server.player.num_frames, SEEKS):
            ms = page.evaluate(f"nerva.seek({int(k)})")
            if ms is not None:
                seeks.append(ms)
            time.sleep(0.3)
        page.evaluate("nerva.pause()")
        page.evaluate("nerva.setSpeed('max')")
        page.evaluate("nerva.play()")
        time.sleep(0.5)
        max_fps = page_rate(page, PLAY_S)
        page.evaluate("nerva.pause()")
        page.close()
        seeks.sort()
        return {"target_fps": server.player.fps, "play_fps": play_fps, "max_fps": max_fps, "seeks": len(seeks),
                "seek_ms_p50": statistics.median(seeks), "seek_ms_p95": seeks[int(0.95 * (len(seeks) - 1))],
                "seek_ms_max": seeks[-1]}


def screenshot(browser, file: Path, reference, out: Path) -> None:
    with open_server(file, reference=reference).start() as server:
        page = browser.new_page(viewport={"width": 960, "height": 700})
        page.goto(server.url)
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=120_000)
        page.evaluate("nerva.play()")
        time.sleep(1.5)
        page.evaluate("nerva.seek(57)")
        page.evaluate("nerva.play()")
        time.sleep(1.2)                    # the overlay shows playback fps, the last seek and PSNR
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        page.close()
    print(f"screenshot -> {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default="carphone")
    ap.add_argument("--models", default=",".join(registry.names()))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--screenshot", type=Path, help="also save a screenshot of the page playing --file here")
    ap.add_argument("--file", type=Path, help="the .nerva file for --screenshot")
    ap.add_argument("--reference", help="its source (a bundled clip name or a path) for --screenshot")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    t0, busy = time.time(), others_busy()
    if busy is not None and busy > 0.1:
        print(f"warning: other processes keep {busy:.0%} of the CPUs busy", flush=True)
    video, clip = load_clip(args.clip)
    geometry = Geometry.of(*video.frames.shape[:3], fps=video.fps)
    rows = []
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        if not find_chromium():
            sys.exit("no Chromium: install Debian's chromium or set NERVA_CHROMIUM")
        browser = pw.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox", "--disable-gpu"])
        if args.models:
            for model in args.models.split(","):
                path, params = make_file(model, geometry, Path(tmp))
                rng = np.random.default_rng(0)
                row = {"model": model, "params": params, "bytes": path.stat().st_size,
                       **browser_run(browser, path, rng), **engine(path, rng)}
                rows.append(row)
                print(f"done {model}: 1x {row['play_fps']:.1f} fps, max {row['max_fps']:.1f} fps, "
                      f"seek p50 {row['seek_ms_p50']:.0f} ms", flush=True)
        if args.screenshot:
            ref = args.reference
            if ref and not Path(ref).exists():
                ref = bundled_clip(ref)
            screenshot(browser, args.file, ref, args.screenshot)
        browser.close()
    if rows:
        meta = {"clip": clip, "shape": list(video.frames.shape[:3]), "play_s": PLAY_S, "seeks": SEEKS,
                **provenance(busy)}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"player_{clip}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        print(f"{clip}: {video.num_frames} frames {video.width}x{video.height} at {video.fps:.2f} fps; "
              f"seek = call to frame on the canvas, {SEEKS} random seeks while playing")
        print_table(rows, COLUMNS)
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
