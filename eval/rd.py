"""Rate–distortion sweeps: INR rate points and classical baselines on one clip, as rows with provenance.

Every row is measured the same way: the codec's own file/bitstream is decoded and compared with the
*decoded source frames* (codec.metrics convention). INR bytes are the .nerva file size; baseline
bytes are the sum of the video packets. Finished rows (by key) are skipped, so a sweep resumes.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from codec.api import QuantPolicy
from codec.container import write_atomic
from codec.decoder import measure_file
from eval import baselines
from eval.results import Row, append_row, done_keys, new_row, read_rows, row_key
from inr import registry
from inr.config import Geometry
from inr.errors import ConfigError
from train import presets
from train.encode import encode, make_config, params_for_bpp

BPP_RANGE = (0.02, 0.5)   # INR points are spread log-uniformly over this range of target bpp
RD = "+rd"   # a model name with this suffix ('hnerv+rd') sweeps the rate-distortion pipeline: one fit per target
             # bpp, λ following the target (train.rd.Control), the model sized for it
GROUPS = {"x264": ("x264-medium", "x264-veryslow"), "x265": ("x265-medium", "x265-veryslow"),
          "av1": ("av1",)}


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep: an INR at a parameter budget and bit depth, or a baseline at a CRF."""

    codec: str
    preset: str          # "params=50000,bits=8,epochs=60,seed=0", "bpp=0.05,epochs=60,seed=0" (RD) or "crf28"
    n_params: int = 0
    bits: int = 8
    crf: int = 0
    bpp: float = 0.0     # the target of a rate-distortion point (codec 'MODEL+rd')

    def key(self, clip: str, frames: int) -> str:
        return row_key(self.codec, clip, frames, self.preset)


def expand_codecs(names: str) -> list[str]:
    """'hnerv,x265' -> ['hnerv', 'x265-medium', 'x265-veryslow']; unknown names are ConfigErrors.

    Models may carry config overrides (inr.registry.parse): 'nerv,hnerv:cam_nodes=30'.
    """
    out = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in GROUPS:
            out += GROUPS[name]
        elif name in baselines.CODECS or name in registry.names(listed_only=False):
            out.append(name)
        elif ":" in name or name.endswith(RD):   # config overrides (hnerv:cam_nodes=30), the RD pipeline
            spec = registry.parse(name.removesuffix(RD))[0]
            if name.endswith(RD) and "pipeline" not in spec.fit_options:
                raise ConfigError(f"{name}: {spec.name} has no rate-distortion pipeline of nerva's (its rate "
                                  f"is its own); sweep it as {spec.name}")
            out.append(name)
        else:
            raise ConfigError(f"unknown codec {name!r}; choose from {', '.join(registry.names())}, "
                              f"{', '.join(GROUPS)} or {', '.join(baselines.CODECS)}")
    return out


def inr_points(model: str, geometry: Geometry, n_points: int, bits: int = 8, epochs: float = 60,
               seed: int = 0, sizes: tuple[int, ...] | None = None,
               bpp_range: tuple[float, float] = BPP_RANGE) -> list[Point]:
    """Parameter budgets for `n_points` target bpps spread over `bpp_range` (log scale), or exactly
    `sizes` when given (to compare models at matched sizes).

    Budgets below the model's smallest size (e.g. HNeRV's embeddings alone, or a tiny clip) are
    replaced by a log-spaced ladder from the smallest feasible size to the top of the range (at least
    4× the smallest), so every codec gets `n_points` distinct points.
    """
    if sizes is None:
        spec = registry.parse(model)[0]
        lo, hi = (params_for_bpp(spec, geometry, b, bits) for b in bpp_range)
        smallest = _smallest_size(model, geometry, bits)
        lo, hi = max(lo, smallest), max(hi, 4 * smallest)
        sizes = sorted({round(lo * (hi / lo) ** (i / max(n_points - 1, 1))) for i in range(n_points)})
    return [Point(model, f"params={n},bits={bits},epochs={epochs:g},seed={seed}", n_params=n, bits=bits)
            for n in sizes]


def rd_points(model: str, geometry: Geometry, n_points: int, epochs: float = 60, seed: int = 0,
              bpp_range: tuple[float, float] = BPP_RANGE) -> list[Point]:
    """Rate-distortion points of `model` ('nerv+rd'): `n_points` target bpps spread over `bpp_range` (log
    scale), each with the size `nerva fit --pipeline rd --bpp` gives it (at least the family's smallest)."""
    lo, hi = bpp_range
    targets = [lo * (hi / lo) ** (i / max(n_points - 1, 1)) for i in range(n_points)]
    return [Point(model, f"bpp={b:.4g},epochs={epochs:g},seed={seed}", bpp=float(f"{b:.4g}")) for b in targets]


def _rd_config(model: str, geometry: Geometry, bpp: float):
    """The model config of a rate-distortion point: sized for the target, or the smallest there is."""
    name = model.removesuffix(RD)
    try:
        return presets.rd_config(name, geometry, bpp)
    except ConfigError:
        return make_config(name, geometry, n_params=_smallest_size(name, geometry, 8))


def _smallest_size(model: str, geometry: Geometry, bits: int) -> int:
    """A parameter budget just above the model's smallest configuration for this geometry."""
    n = 1000
    while True:
        try:
            make_config(model, geometry, n_params=n, bits=bits)
            return n
        except ConfigError:
            n = int(n * 1.25)
            if n > 10**9:
                raise


def baseline_points(codec: str, n_points: int) -> list[Point]:
    ladder = baselines.CODECS[codec].crfs
    idx = np.unique(np.round(np.linspace(0, len(ladder) - 1, n_points)).astype(int))
    return [Point(codec, f"crf{ladder[i]}", crf=ladder[i]) for i in idx]


def _coded_against_a_prior(codec: str) -> bool:
    """Whether `codec` fits by relative-entropy coding against a learned prior (its only pipeline is "rec")."""
    return registry.parse(codec.removesuffix(RD))[0].pipelines[0] == "rec"


def run_rec(point: Point, frames: np.ndarray, fps: float, clip: str, epochs: float, seed: int, workdir: Path,
            prior: str | None) -> Row:
    """A relative-entropy-coded point: `nerva fit --pipeline rec --bpp`'s fit, its file decoded and measured."""
    import argparse

    from train import rec_cli
    from inr.video import Video
    args = argparse.Namespace(model=point.codec, prior=prior, bpp=point.bpp, epochs=epochs, batch=None, lr=None,
                              seed=seed, quiet=True)
    path = workdir / "point.nerva"
    extra, coded, asset = rec_cli.fit_rec(Video(frames, fps), path, args)
    rep = measure_file(path, frames, priors=[asset.path])
    return new_row(codec=point.codec, preset=point.preset, clip=clip, shape=frames.shape[:3],
                   num_bytes=rep.bytes, quality=rep.quality, encode_s=extra["encode_s"], decode_fps=rep.decode_fps,
                   config={"model": rep.config.to_dict(), "target_bpp": point.bpp, "prior": asset.id,
                           "prior_sha256": asset.digest.hex(), "prior_bytes": asset.size,
                           "blocks": extra["blocks"], "elements": extra["params"], "epochs": epochs})


def run_inr(point: Point, frames: np.ndarray, fps: float, clip: str, epochs: float, seed: int,
            workdir: Path) -> Row:
    """Fits, writes the .nerva file, decodes the file and measures it."""
    geometry = Geometry.of(*frames.shape[:3], fps=fps)
    if point.bpp:
        config = _rd_config(point.codec, geometry, point.bpp)
        train = presets.train_config(point.codec.removesuffix(RD), epochs, seed=seed, config=config,
                                     target_bpp=point.bpp)
    else:
        config = make_config(point.codec, geometry, n_params=point.n_params, bits=point.bits)
        train = presets.train_config(point.codec, epochs, seed=seed, config=config)
    t = time.perf_counter()
    enc = encode(config, frames, train, QuantPolicy(bits=point.bits))
    encode_s = time.perf_counter() - t
    path = write_atomic(workdir / "point.nerva", enc.data)
    rep = measure_file(path, frames)
    return new_row(codec=point.codec, preset=point.preset, clip=clip, shape=frames.shape[:3],
                   num_bytes=rep.bytes, quality=rep.quality, encode_s=encode_s, decode_fps=rep.decode_fps,
                   config={"model": config.to_dict(), "train": train.to_dict(), "bits": point.bits,
                           "float_psnr": enc.fit.float_psnr,
                           "train_fps": enc.fit.train_frames_per_s,
                           **({"target_bpp": point.bpp, "lambda": enc.fit.final_lambda} if point.bpp else {})})


def plan(codecs: list[str], geometry: Geometry, n_points: int, bits: int = 8, epochs: float = 60,
         seed: int = 0, sizes: tuple[int, ...] | None = None,
         bpp_range: tuple[float, float] = BPP_RANGE) -> list[Point]:
    points = []
    for codec in codecs:
        if codec in baselines.CODECS:
            points += baseline_points(codec, n_points)
        elif codec.endswith(RD) or _coded_against_a_prior(codec):
            points += rd_points(codec, geometry, n_points, epochs, seed, bpp_range)
        else:
            points += inr_points(codec, geometry, n_points, bits, epochs, seed, sizes, bpp_range)
    return points


def sweep(frames: np.ndarray, fps: float, clip: str, codecs: list[str], out: Path, n_points: int = 4,
          epochs: float = 60, seed: int = 0, bits: int = 8, progress=None,
          sizes: tuple[int, ...] | None = None, bpp_range: tuple[float, float] = BPP_RANGE,
          prior: str | None = None) -> list[Row]:
    """Runs every point not already in `out` (JSON lines), appending one row per point (`prior`: the learned prior
    of a relative-entropy-coded model, else the one nearest each target rate, train.rec_cli.find_prior).

    Returns all rows of this clip and frame count found in `out` afterwards.
    """
    geometry = Geometry.of(*frames.shape[:3], fps=fps)
    finished = done_keys(out)
    todo = [p for p in plan(codecs, geometry, n_points, bits, epochs, seed, sizes, bpp_range)
            if p.key(clip, geometry.frames) not in finished]
    bar = progress(len(todo)) if progress else None
    with tempfile.TemporaryDirectory() as tmp:
        for p in todo:
            if p.key(clip, geometry.frames) in done_keys(out):
                continue   # another sweep writing to the same file finished it meanwhile
            if bar:
                bar.set_postfix_str(f"{p.codec} {p.preset}")
            if p.codec in baselines.CODECS:
                row = baselines.run_point(frames, fps, clip, p.codec, p.crf, Path(tmp))
            elif _coded_against_a_prior(p.codec):
                row = run_rec(p, frames, fps, clip, epochs, seed, Path(tmp), prior)
            else:
                row = run_inr(p, frames, fps, clip, epochs, seed, Path(tmp))
            append_row(out, row)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    return [r for r in read_rows(out) if r.clip == clip and r.frames == geometry.frames]


def bd_table(rows: list[Row], anchors=("x265-medium", "x264-medium"), metric: str = "psnr") -> list[dict]:
    """BD-rate (%, piecewise cubic) of every codec against each anchor; None where curves don't allow it."""
    from eval.bdrate import bd_rate
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.codec, []).append(r)
    table = []
    for codec, group in sorted(groups.items()):
        entry = {"codec": codec, "points": len(group)}
        for anchor in anchors:
            if anchor not in groups:
                continue
            a = groups[anchor]
            try:
                entry[f"vs {anchor}"] = bd_rate([r.bpp for r in a], [getattr(r, metric) for r in a],
                                                [r.bpp for r in group], [getattr(r, metric) for r in group])
            except ValueError as e:
                entry[f"vs {anchor}"] = None
                entry.setdefault("why", {})[f"vs {anchor}"] = _bd_failure(str(e))
        table.append(entry)
    return table


def _bd_failure(message: str) -> str:
    """A few words for a BD-rate that cannot be computed (from eval.bdrate's ValueError)."""
    for needle, words in (("needs at least", "too few points"), ("do not overlap", "no overlap"),
                          ("increase strictly", "not monotonic")):
        if needle in message:
            return words
    return "invalid curve"


def format_bd_table(table: list[dict]) -> str:
    cols = [k for k in table[0] if k.startswith("vs ")] if table else []
    if not cols:
        return "no BD-rate table: the sweep has no x265-medium or x264-medium rows to compare against"
    lines = ["codec | points | " + " | ".join(f"BD-rate {c}" for c in cols),
             "--- | --- | " + " | ".join("---" for _ in cols)]
    for e in table:
        cells = [f"n/a ({e['why'][c]})" if e[c] is None else f"{e[c]:+.1f}%" for c in cols]
        lines.append(f"{e['codec']} | {e['points']} | " + " | ".join(cells))
    return "\n".join(lines)


def load_clip(name: str, frames=None, resize=None):
    """A bundled clip by name ('carphone', 'bigbuckbunny') or any video path, with range and resize."""
    from inr.video import bundled_clip, read_video
    path = Path(name)
    if not path.exists() and "/" not in name and "." not in name:
        path = bundled_clip(name)
    start, stop = frames or (0, None)
    return read_video(path, start, stop, size=resize), path.stem.replace("_pristine", "")


def cmd_rd(args) -> int:
    """`nerva rd`: sweep, write rows, draw the RD plot, print the BD-rate table."""
    from tqdm import tqdm

    from eval import plots
    video, clip = load_clip(args.clip, args.frames, args.resize)
    if args.resize:
        clip += f"@{args.resize[1]}x{args.resize[0]}"
    codecs = expand_codecs(args.codecs)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise ConfigError(f"output directory {out.parent} does not exist")
    t = time.perf_counter()
    progress = None if args.quiet else (lambda n: tqdm(total=n, unit="point", dynamic_ncols=True))
    rows = sweep(video.frames, video.fps, clip, codecs, out, args.points, args.epochs, args.seed,
                 args.bits, progress, args.sizes, args.bpp_range or BPP_RANGE, getattr(args, "prior", None))
    rows = [r for r in rows if r.codec in codecs]
    stem = out.with_suffix("")
    paths = plots.save(rows, stem, f"{clip}: {video.num_frames} frames {video.width}x{video.height}")
    print(f"{len(rows)} rows in {out} ({time.perf_counter() - t:.0f} s); plots: "
          + ", ".join(str(p) for p in paths))
    print(format_bd_table(bd_table(rows)))
    return 0
