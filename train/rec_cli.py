"""`nerva fit --pipeline rec` and `nerva train-prior`: relative-entropy-coded fits against a learned prior.

A `rec` fit finds its prior (--prior, $NERVA_PRIORS, or the priors shipped with nerva: of the model's priors
there, the one learned for the rate nearest the target), fits the clip's posterior, codes it in 16-bit blocks
and writes the file; it checkpoints at every boundary (after the fit, after each coding round) beside the
output, and --resume continues from there. `train-prior` learns a prior from training clips (by default
train.prior_data's recipe, which never holds a test clip) and checkpoints after every round.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from codec import assets
from codec.container import write_atomic
from inr import registry
from inr.config import Geometry
from inr.errors import ConfigError
from inr.video import Video, read_video
from train import prior_data, variational
from train.progress import progress_for

MAX_STEPS = 10 ** 7


def _bar(quiet: bool, total: int):
    """progress(done, total, mse) over train.progress's bar (tqdm on a terminal, timed lines elsewhere)."""
    if quiet:
        return None, lambda: None
    bar = progress_for(sys.stderr)(total)
    seen = [0]

    def progress(done: int, _total: int, mse: float) -> None:
        bar.update(done - seen[0])
        seen[0] = done
        if done % 10 == 0:
            bar.set_postfix_str(f"PSNR {-10 * np.log10(max(mse, 1e-12)):.2f} dB")
    return progress, bar.close


def find_prior(spec, asset_path: str | None, bpp: float) -> assets.Asset:
    """--prior's asset, or the model's prior for the rate nearest `bpp` in $NERVA_PRIORS and the shipped priors."""
    if asset_path:
        asset = assets.load(Path(asset_path))
        if asset.meta.get("model") != spec.name:
            raise ConfigError(f"--prior {asset_path} is a prior for {str(asset.meta.get('model'))[:40]!r}, not {spec.name}")
        return asset
    found = []
    for place in assets.search_path():
        for p in sorted(place.glob("*.npz")) if place.is_dir() else []:
            try:
                a = assets.load(p)
            except Exception:   # noqa: BLE001 - an unreadable file in a search directory is skipped
                continue
            if a.meta.get("model") == spec.name and isinstance(a.meta.get("target_bpp"), (int, float)):
                found.append(a)
    if not found:
        raise ConfigError(f"no prior for {spec.name} found in {', '.join(map(str, assets.search_path()))}; learn "
                          f"one with `nerva train-prior --bpp {bpp:g} -o prior.npz` and pass --prior prior.npz")
    return min(found, key=lambda a: abs(np.log(a.meta["target_bpp"] / bpp)))


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def fit_rec(video: Video, output: Path, args, resume: bool = False) -> tuple[dict, variational.Coded, assets.Asset]:
    """Fits and writes `output` (atomically); the checkpoint `<output>.rec.npz` is removed once the file is written."""
    spec, overrides = registry.parse(args.model)
    frames = video.frames
    geometry = Geometry.of(*frames.shape[:3], fps=video.fps)
    try:
        config = spec.for_size(geometry, 0, **overrides)
    except ValueError as e:
        raise ConfigError(f"{args.model}: {e}") from None
    asset = find_prior(spec, getattr(args, "prior", None), args.bpp)
    preset = spec.preset
    epochs = args.epochs or preset["epochs"]
    batch = args.batch or 2
    steps = max(1, int(round(epochs * geometry.frames / batch)))
    steps = min(steps, MAX_STEPS)
    chunks = variational.RecSettings.chunks
    # re-tuning between coding rounds takes half the fit's steps in all (the reference: max(30000 / groups, 50)
    # steps per group after its 30,000-step fit)
    settings = variational.RecSettings(steps=steps, chunks=chunks, retune=max(10, steps // (2 * chunks)),
                                       batch=batch, lr=args.lr or preset["lr"], seed=args.seed)
    ckpt = output.with_name(output.name + ".rec.npz")
    fingerprint = _fingerprint(config.to_dict(), dataclasses.asdict(settings), asset.digest, args.bpp,
                               hashlib.sha256(np.ascontiguousarray(frames)).digest())
    state = _load_encode_state(ckpt, fingerprint) if resume and ckpt.is_file() else None
    if resume and state is None:
        print(f"nerva: no checkpoint at {ckpt}; starting from scratch", file=sys.stderr)
    progress, close = _bar(args.quiet, settings.steps + (settings.chunks - 1) * settings.retune)
    from train.cli import ctrl_c_stops   # train.cli imports this module
    t0 = time.perf_counter()
    try:
        with ctrl_c_stops() as stop:
            data, coded = variational.encode_file(
                config, frames.astype(np.float32) / 255.0, asset, args.bpp, settings, progress, state=state,
                after_round=lambda st: _save_encode_state(ckpt, st, fingerprint), stop=stop)
    finally:
        close()
    seconds = time.perf_counter() - t0
    write_atomic(output, data)
    ckpt.unlink(missing_ok=True)
    return {"encode_s": seconds, "params": int(coded.flat.size), "blocks": int(coded.indices.size),
            "prior": asset.id, "prior_bytes": asset.size}, coded, asset


def _save_encode_state(path: Path, st: variational.EncodeState, fingerprint: str) -> None:
    arrays = {"post/mean": st.post["mean"], "post/log_scale": st.post["log_scale"], "beta": st.beta,
              "coded": st.coded.astype(np.int32), "fixed": st.fixed, "indices": st.indices.astype(np.int32),
              **variational.opt_arrays(st.opt)}
    assets.save(path, "rec-encode-state", arrays, {"fingerprint": fingerprint, "round": st.round, "done": st.done,
                                                   "history": st.history})


def _load_encode_state(path: Path, fingerprint: str) -> variational.EncodeState:
    a = assets.load(path)
    if a.meta.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path} is the checkpoint of another encode (other clip, prior or options); remove it or "
                          "run without --resume")
    v = a.arrays
    return variational.EncodeState(
        int(a.meta["round"]), {"mean": np.array(v["post/mean"]), "log_scale": np.array(v["post/log_scale"])},
        np.array(v["beta"]), v["coded"].astype(bool), np.array(v["fixed"]), v["indices"].astype(np.uint16),
        int(a.meta["done"]), [tuple(h) for h in a.meta["history"]], variational.opt_leaves(v))


# --------------------------------------------------------------------------------------------------------------
# nerva train-prior


def _training_clips(args) -> tuple[np.ndarray, dict]:
    """(clips (n, F, H, W, 3) float32, provenance) from the given videos (cut into consecutive F-frame segments at
    --size) or the default recipe."""
    h, w = args.size
    if not args.clips:
        recipe = prior_data.Recipe(clips=args.count, frames=args.frames, height=h, width=w, seed=args.seed)
        clips = prior_data.training_clips(recipe)
        return np.stack(clips).astype(np.float32) / 255.0, {"recipe": recipe.to_dict(),
                                                             "recipe_hash": prior_data.recipe_hash(recipe, clips)}
    out = []
    for path in args.clips:
        v = read_video(Path(path), size=(h, w))
        for start in range(0, v.frames.shape[0] - args.frames + 1, args.frames):
            out.append(v.frames[start:start + args.frames])
    if not out:
        raise ConfigError(f"the clips hold no segment of {args.frames} frames")
    return np.stack(out).astype(np.float32) / 255.0, {"clips": [str(c) for c in args.clips]}


def cmd_train_prior(args) -> int:
    spec, overrides = registry.parse(args.model)
    if "rec" not in spec.pipelines:
        raise ConfigError(f"{spec.name} has no learned prior (its pipelines: {', '.join(spec.pipelines)})")
    output = Path(args.output)
    if output.is_dir() or not output.parent.is_dir():
        raise ConfigError(f"cannot write the prior to {output}: give a file in an existing directory")
    asset_id = assets.check_id(args.id or output.stem)
    clips, provenance = _training_clips(args)
    geometry = Geometry.of(*clips.shape[1:4])
    config = spec.for_size(geometry, 0, **overrides)
    settings = variational.PriorSettings(rounds=args.rounds, steps=args.steps, target_bpp=args.bpp, seed=args.seed,
                                         beta=args.beta)
    ckpt = output.with_name(output.name + ".state.npz")
    fingerprint = _fingerprint(config.to_dict(), dataclasses.asdict(settings), hashlib.sha256(clips).digest())
    state = variational.load_prior_state(ckpt, fingerprint) if args.resume and ckpt.is_file() else None
    print(f"nerva train-prior: {clips.shape[0]} clips of {geometry.frames}x{geometry.height}x{geometry.width}, "
          f"{settings.rounds} rounds x {settings.steps} steps, target {args.bpp:g} bpp", file=sys.stderr)
    progress, close = _bar(args.quiet, settings.rounds * settings.steps)
    t0 = time.perf_counter()
    try:
        prior, state = variational.learn_prior(
            config, clips, settings, state=state, progress=progress,
            after_round=lambda st: variational.save_prior_state(ckpt, st, settings, fingerprint))
    finally:
        close()
    seconds = time.perf_counter() - t0
    layout = variational.layout_of(config)
    meta = {**provenance, "target_bpp": args.bpp, "settings": dataclasses.asdict(settings),
            "history": state.history, "train_seconds": seconds,
            "expected_kl_bits_per_pixel": float(prior.kl[layout.entry].sum() / geometry.pixels)}
    asset = variational.save_prior(output, asset_id, config, prior, meta)
    ckpt.unlink(missing_ok=True)
    last = state.history[-1]
    print(f"prior    {output}: id {asset.id}, {asset.size:,} bytes, sha256 {asset.digest.hex()[:16]}...")
    print(f"training {seconds:.0f} s this run; last round MSE {last[1]:.5f}, KL {last[2]:.4f} bits/pixel, β {last[3]:.3g}")
    return 0
