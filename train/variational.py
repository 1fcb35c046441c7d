"""Variational fits for relative-entropy-coded families (ModelSpec.rec_collections): the β-ELBO fit of one clip's
posterior, its progressive coding, and the prior learning that makes the shared asset.

Everything here works on one flat vector of elements per clip (the coded collections raveled, jax.flatten_util
order, concatenated in sorted collection order), a factorised Gaussian posterior N(mean, exp(log_scale)²) over
it, and the prior's tables indexed by each element's entry (RecLayout.entry). The family only renders: its
`render` gets the sampled collections plus the shared network (ModelSpec.asset_collections).

The loss of a step is  MSE(rendered batch, frames) + Σ_e β_e · KL_e / pixels  (KL in bits, so β is a price in
MSE per bit per pixel). When a clip is encoded, β is one number per 16-bit block, and every REC_BETA_EVERY steps
a block whose KL is over its budget gets a dearer β, one under BETA_LOW of it a cheaper one (RECOMBINER's rule):
each block then carries about 16 bits of KL, what relative-entropy coding with 2^16 candidates sends well. In
prior learning β is one number adjusted so the training set's mean KL stays in the window the target rate sets.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from codec import api, assets, rec
from codec.params import flatten
from codec.samples import (Layout, Prior, RecSection, asset_arrays, blocks_of, coding_order, decode_flat, layout_of,
                           nested, plan, prior_of_asset, split_flat)
from inr import registry
from inr.errors import ConfigError, NervaError

BETA_EVERY = 10          # steps between β updates (the reference's period)
BETA_LOW = 15.6 / 16.0   # a block under this share of its budget gets a cheaper β (the reference: 15.6 of 16 bits)
# The reference multiplies a block's β by 1.05 per update over 30,000 steps (3,000 updates); a fit of a few
# thousand steps cannot wait that long, so β moves by (KL / budget)^BETA_GAIN, at most BETA_MAX_STEP either way
BETA_GAIN = 1.0
BETA_MAX_STEP = 2.0
MIN_LOG_SCALE, MAX_LOG_SCALE = -12.0, 2.0


def variables_of(config, layout: Layout, flat, shared: dict) -> dict:
    """The render variables: each coded collection unraveled from its piece of `flat`, plus the shared network."""
    spec = registry.spec_of(config)
    like = jax.eval_shape(lambda: spec.init(config, jax.random.key(0)))
    out = dict(shared)
    for name, piece in split_flat(layout, flat).items():
        _, unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like[name]))
        out[name] = unravel(piece)
    return out


def initial_flat(config, layout: Layout, key) -> jax.Array:
    """The family's initial values of the coded collections, flat (the prior means start from them)."""
    v = registry.spec_of(config).init(config, key)
    return jnp.concatenate([ravel_pytree(v[n])[0] for n in layout.names])


def initial_shared(config, key) -> dict:
    spec = registry.spec_of(config)
    v = spec.init(config, key)
    return {n: v[n] for n in sorted(spec.asset_collections)}


# --------------------------------------------------------------------------------------------------------------
# The β-ELBO step


def _loss(config, layout: Layout, post: dict, shared: dict, p_mean, p_scale, beta, fixed, coded, frames, idx, key):
    """(loss, (mse, kl bits per element)) of one clip's batch of frames `idx`; p_mean, p_scale, beta: (N,), each
    element's prior and price (gathered from the tables once per fit or round, not in every step)."""
    spec = registry.spec_of(config)
    scale = jnp.exp(post["log_scale"])
    eps = jax.random.normal(key, post["mean"].shape)
    flat = jnp.where(coded, fixed, post["mean"] + scale * eps)
    frames_hat = spec.render(config, variables_of(config, layout, flat, shared), idx)
    mse = jnp.mean(jnp.square(frames_hat - frames))
    kl = rec.kl_bits(post["mean"], scale, p_mean, p_scale)
    kl = jnp.where(coded, 0.0, kl)
    pixels = config.geometry.pixels
    return mse + jnp.sum(beta * kl) / pixels, (mse, kl)


def make_posterior_step(config, layout: Layout, optimizer: optax.GradientTransformation) -> Callable:
    """A jitted step on one clip's posterior (the prior and shared network fixed):
    (post, opt_state, frames (B,H,W,3), idx, key, beta per block (B,), block of each element (N,), fixed (N,),
    coded (N,), each element's prior mean and scale (N,), shared) -> (post, opt_state, mse, kl (N,))."""
    def step(post, opt_state, frames, idx, key, beta_block, block_of, fixed, coded, p_mean, p_scale, shared):
        grad_fn = jax.value_and_grad(_loss, argnums=2, has_aux=True)
        (_, (mse, kl)), g = grad_fn(config, layout, post, shared, p_mean, p_scale, beta_block[block_of], fixed,
                                    coded, frames, idx, key)
        updates, opt_state = optimizer.update(g, opt_state, post)
        post = optax.apply_updates(post, updates)
        post = {"mean": post["mean"],
                "log_scale": jnp.clip(post["log_scale"], MIN_LOG_SCALE, MAX_LOG_SCALE)}
        return post, opt_state, mse, kl
    return jax.jit(step, donate_argnums=(0, 1))


# --------------------------------------------------------------------------------------------------------------
# Prior learning: every training clip's posterior, the shared network and the prior, by alternating updates


def closed_form_prior(layout: Layout, means: jax.Array, log_scales: jax.Array):
    """The prior maximising the training posteriors' expected likelihood, per table entry (RECOMBINER's update):
    mean = the mean of its elements' posterior means, variance = the mean of their posterior variances plus the
    variance of their means. means, log_scales: (clips, N). -> (mean (M,), log_scale (M,))."""
    m = layout.n_entries
    ids = jnp.broadcast_to(jnp.asarray(layout.entry), means.shape).reshape(-1)
    count = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, m)
    mean = jax.ops.segment_sum(means.reshape(-1), ids, m) / count
    second = jax.ops.segment_sum((jnp.square(means) + jnp.exp(2 * log_scales)).reshape(-1), ids, m) / count
    var = jnp.maximum(second - jnp.square(mean), 1e-24)
    return mean, 0.5 * jnp.log(var)


def mean_kl_per_entry(layout: Layout, kl: jax.Array) -> jax.Array:
    """(clips, N) KL bits -> (M,) mean KL of an element of each entry: the expected KL table of the prior."""
    m = layout.n_entries
    ids = jnp.broadcast_to(jnp.asarray(layout.entry), kl.shape).reshape(-1)
    count = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, m)
    return jax.ops.segment_sum(kl.reshape(-1), ids, m) / count


def make_prior_step(config, layout: Layout, optimizer: optax.GradientTransformation) -> Callable:
    """A jitted joint step over all training clips (same geometry): their posteriors and the shared network.
    (params {post: {mean, log_scale} (clips, N), shared}, opt_state, frames (clips, B, H, W, 3), idx (clips, B),
    key, beta (scalar), each element's prior mean and scale (N,)) -> (params, opt_state, mse (clips,), kl (clips, N))."""
    def clip_loss(post, shared, p_mean, p_scale, beta, frames, idx, key):
        n = post["mean"].shape[0]
        return _loss(config, layout, post, shared, p_mean, p_scale, beta, jnp.zeros((n,)), jnp.zeros((n,), bool),
                     frames, idx, key)

    def total(params, p_mean, p_scale, beta, frames, idx, keys):
        losses, (mse, kl) = jax.vmap(clip_loss, in_axes=(0, None, None, None, None, 0, 0, 0))(
            params["post"], params["shared"], p_mean, p_scale, beta, frames, idx, keys)
        return jnp.sum(losses), (mse, kl)

    def step(params, opt_state, frames, idx, key, beta, p_mean, p_scale):
        keys = jax.random.split(key, frames.shape[0])
        (_, (mse, kl)), g = jax.value_and_grad(total, has_aux=True)(params, p_mean, p_scale, beta, frames, idx, keys)
        updates, opt_state = optimizer.update(g, opt_state, params)
        params = optax.apply_updates(params, updates)
        post = params["post"]
        params = {"post": {"mean": post["mean"],
                           "log_scale": jnp.clip(post["log_scale"], MIN_LOG_SCALE, MAX_LOG_SCALE)},
                  "shared": params["shared"]}
        return params, opt_state, mse, kl
    return jax.jit(step, donate_argnums=(0, 1))


def restored(fresh, leaves: list | None):
    """An optimizer state shaped like `fresh` holding `leaves` (a checkpoint's), or `fresh` where there are none."""
    if leaves is None:
        return fresh
    treedef = jax.tree.structure(fresh)
    if treedef.num_leaves != len(leaves):
        raise ConfigError("the checkpoint's optimizer state does not fit this run; start afresh")
    return jax.tree.unflatten(treedef, [jnp.asarray(x) for x in leaves])


def adjusted_beta(beta: np.ndarray, block_kl: np.ndarray, open_: np.ndarray, target: float = rec.BLOCK_BITS
                  ) -> np.ndarray:
    """Each open block's β after an update: dearer when its KL is over `target` bits, cheaper under BETA_LOW of
    it, in proportion to the miss (log scale), coded blocks unchanged."""
    ratio = np.clip(block_kl / target, 1e-6, None) ** BETA_GAIN
    move = open_ & ((block_kl > target) | (block_kl < BETA_LOW * target))
    return np.where(move, beta * np.clip(ratio, 1 / BETA_MAX_STEP, BETA_MAX_STEP), beta).astype(np.float32)


def frame_batches(rng: np.random.Generator, n_frames: int, batch: int) -> np.ndarray:
    """`batch` distinct random frames (sorted), a fresh draw per step."""
    return np.sort(rng.choice(n_frames, size=min(batch, n_frames), replace=False)).astype(np.int32)


# --------------------------------------------------------------------------------------------------------------
# Encoding one clip: the β-ELBO fit, then progressive coding of its blocks


class Interrupted(NervaError):
    """Stopped at a boundary on request (Ctrl-C); the checkpoint written there resumes it."""

    def __init__(self, step: int, total: int):
        super().__init__(f"interrupted at step {step} of {total}")
        self.step, self.total = step, total


@dataclasses.dataclass(frozen=True)
class RecSettings:
    steps: int = 2000           # β-ELBO steps before any block is coded
    chunks: int = 16            # coding rounds: each codes 1/chunks of the blocks, in coding order
    retune: int = 100           # steps re-tuning the blocks not yet coded after each round
    batch: int = 2              # frames per step
    lr: float = 2e-3
    seed: int = 0               # the shared randomness of the candidates (in the file) and the fit's noise
    block_kl: float = 16.0      # the KL per block β aims at: 16 bits is what a 16-bit index sends, but at that KL
                                # the chosen samples are biased (codec/rec.py: ~3 bits short, 44 % more squared error)


@dataclasses.dataclass
class Coded:
    """A coded clip: what the file holds, and the encoder's view of it."""

    starts: np.ndarray          # (B+1,) blocks over the coding order
    order: np.ndarray           # (N,) coding position -> element
    indices: np.ndarray         # (B,) uint16
    kl_scale: float             # the expected-KL table's factor that gave these blocks (in the file)
    flat: np.ndarray            # (N,) float32: the transmitted sample, element order
    history: list               # per logged step: (step, mse, kl bits of the uncoded blocks, blocks coded)


def scale_for_blocks(layout: Layout, kl_table: np.ndarray, seed: int, blocks: int) -> float:
    """The KL table's factor whose plan has about `blocks` blocks (bisection on its log; the count grows with it)."""
    order = coding_order(layout, seed)   # the order does not depend on the factor: sorted once
    lo, hi = -30.0, 30.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if blocks_of(layout, kl_table, order, float(np.exp2(mid))).size - 1 < blocks:
            lo = mid
        else:
            hi = mid
    return float(np.float32(np.exp2(hi)))   # float32 so the file holds it exactly


@dataclasses.dataclass
class EncodeState:
    """Where an encode stands at a boundary (after the β-ELBO fit, after each coding round): what a checkpoint
    holds. `round` is the number of coding rounds done (-1: the fit has not finished)."""

    round: int
    post: dict                  # {"mean", "log_scale"} (N,)
    beta: np.ndarray            # (B,) per block
    coded: np.ndarray           # (N,) bool
    fixed: np.ndarray           # (N,) float32: the coded elements' transmitted values
    indices: np.ndarray         # (B,) uint16
    done: int                   # steps run
    history: list
    opt: list | None = None     # the optimizer state's leaves (None: not started)


def encode_clip(config, frames: np.ndarray, prior: Prior, blocks: int, settings: RecSettings,
                progress: Callable | None = None, state: EncodeState | None = None,
                after_round: Callable | None = None, stop: Callable[[], bool] = lambda: False) -> Coded:
    """Fits the clip's posterior and codes it in `blocks` 16-bit blocks (rate = 16 · blocks bits + the file's
    header). frames: (T, H, W, 3) float32 in [0, 1].

    Every step's randomness derives from (seed, step number) and each round's selection from (seed, round), and
    the optimizer's state is part of `state`, so an encode resumed from `state` (what `after_round` got at a
    boundary) is the uninterrupted encode. The optimizer is never restarted: a fresh Adam moves every parameter by
    about the learning rate in its first steps, whatever its gradient, which on SIREN weights (×w0 = 30) undoes the
    fit (carphone at 0.1 bpp: 23.9 dB at the fit's end, 16.9 dB after 16 rounds re-tuned by fresh optimizers). `stop()` true at a boundary raises Interrupted after `after_round`."""
    layout = layout_of(config)
    s = settings
    kl_scale = scale_for_blocks(layout, prior.kl, s.seed, blocks)
    order, starts = plan(layout, prior.kl, s.seed, kl_scale)
    n_blocks = starts.size - 1
    block_of = np.empty(layout.n, np.int64)
    block_of[order] = np.repeat(np.arange(n_blocks), np.diff(starts))
    p_mean = prior.mean[layout.entry]
    p_scale = prior.scale[layout.entry]
    if state is None:
        state = EncodeState(-1, {"mean": p_mean.copy(), "log_scale": prior.init_log_scale[layout.entry].copy()},
                            np.full(n_blocks, prior.beta, np.float32), np.zeros(layout.n, bool),
                            np.zeros(layout.n, np.float32), np.zeros(n_blocks, np.uint16), 0, [])
    elif state.indices.shape != (n_blocks,) or state.coded.shape != (layout.n,):
        raise ConfigError("the encode checkpoint belongs to another plan (other blocks or model); start afresh")
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(s.lr))
    step = make_posterior_step(config, layout, optimizer)
    base = jax.random.key(s.seed)
    frames_dev = jnp.asarray(frames)
    p_mean_dev, p_scale_dev, block_of_dev = jnp.asarray(p_mean), jnp.asarray(p_scale), jnp.asarray(block_of)
    total_steps = s.steps + (s.chunks - 1) * s.retune

    def run(n_steps: int):
        post = jax.tree.map(jnp.array, state.post)
        opt_state = restored(optimizer.init(post), state.opt)
        beta, coded, fixed = state.beta, jnp.asarray(state.coded), jnp.asarray(state.fixed)
        for _ in range(n_steps):
            rng = np.random.default_rng([s.seed, state.done])
            idx = frame_batches(rng, config.geometry.frames, s.batch)
            post, opt_state, mse, kl = step(post, opt_state, frames_dev[idx], jnp.asarray(idx),
                                            jax.random.fold_in(base, state.done), jnp.asarray(beta), block_of_dev,
                                            fixed, coded, p_mean_dev, p_scale_dev, prior.shared)
            state.done += 1
            if state.done % BETA_EVERY == 0:
                block_kl = np.bincount(block_of, weights=np.asarray(kl), minlength=n_blocks)
                open_ = ~np.bincount(block_of, weights=state.coded, minlength=n_blocks).astype(bool)
                beta = adjusted_beta(beta, block_kl, open_, s.block_kl)
                state.history.append((state.done, float(mse), float(block_kl[open_].sum()), int((~open_).sum())))
            if progress is not None:
                progress(state.done, total_steps, float(mse))
        state.post = jax.tree.map(np.asarray, post)
        state.opt = [np.asarray(x) for x in jax.tree.leaves(opt_state)]
        state.beta = beta

    def boundary():
        if after_round is not None:
            after_round(state)
        if stop():
            raise Interrupted(state.done, total_steps)

    if state.round < 0:
        run(s.steps)
        state.round = 0
        boundary()
    edges = np.linspace(0, n_blocks, s.chunks + 1).round().astype(np.int64)
    while state.round < s.chunks:
        c = state.round
        chunk = np.arange(edges[c], edges[c + 1])
        if chunk.size:
            q_mean = state.post["mean"][order]
            q_scale = np.exp(state.post["log_scale"])[order]
            state.indices[chunk] = rec.select(s.seed, jax.random.fold_in(jax.random.key(s.seed + 1), c), q_mean,
                                              q_scale, p_mean[order], p_scale[order], order.astype(np.uint32),
                                              starts, chunk)
            lo, hi = starts[chunk[0]], starts[chunk[-1] + 1]
            pos = order[lo:hi]
            state.fixed[pos] = rec.regenerate(s.seed, p_mean[pos], p_scale[pos], pos.astype(np.uint32),
                                              starts[chunk[0]:chunk[-1] + 2] - lo, state.indices[chunk])
            state.coded[pos] = True
        if c < s.chunks - 1:
            run(s.retune)
        state.round = c + 1
        if state.round < s.chunks:
            boundary()
    flat = decode_flat(layout, prior, s.seed, kl_scale, state.indices)
    assert np.array_equal(flat, state.fixed), "the regenerated sample differs from the one the encoder fixed"
    return Coded(starts, order, state.indices, kl_scale, flat, state.history)


# --------------------------------------------------------------------------------------------------------------
# Learning the prior


@dataclasses.dataclass(frozen=True)
class PriorSettings:
    rounds: int = 60            # alternations: joint steps, then β and the closed-form prior (the reference: 550)
    steps: int = 50             # joint Adam steps per round on every training clip's posterior and the network
    batch: int = 2              # frames per clip per step
    lr: float = 2e-3
    target_bpp: float = 0.1     # the training clips' mean KL is held in [(1 - window) · target, target] bits/pixel
    window: float = 0.3
    beta: float = 1e-4          # the starting price of a bit per pixel, in MSE
    beta_factor: float = 1.5    # the reference's per-round factor
    seed: int = 0


@dataclasses.dataclass
class PriorState:
    """Everything prior learning carries between rounds (what a checkpoint holds)."""

    round: int
    params: dict                # {"post": {"mean", "log_scale"} (clips, N), "shared": {...}}
    prior_mean: np.ndarray
    prior_log_scale: np.ndarray
    beta: float
    history: list               # per round: (round, mean mse, mean KL bits per pixel, β)
    opt: list | None = None     # the optimizer state's leaves (kept across rounds, as in an encode)


def start_prior(config, n_clips: int, settings: PriorSettings) -> PriorState:
    layout = layout_of(config)
    key = jax.random.key(settings.seed)
    k_init, k_shared = jax.random.split(key)
    flat = initial_flat(config, layout, k_init)
    log_scale0 = jnp.log(jnp.asarray(layout.init_scale))
    post = {"mean": jnp.broadcast_to(flat, (n_clips, layout.n)),
            "log_scale": jnp.broadcast_to(log_scale0[layout.entry] - 2.0, (n_clips, layout.n))}
    mean, _ = closed_form_prior(layout, post["mean"], post["log_scale"])
    return PriorState(0, {"post": post, "shared": initial_shared(config, k_shared)}, np.asarray(mean),
                      np.asarray(log_scale0), settings.beta, [])


def learn_prior(config, clips: np.ndarray, settings: PriorSettings, state: PriorState | None = None,
                progress: Callable | None = None, after_round: Callable | None = None) -> tuple[Prior, PriorState]:
    """RECOMBINER's prior learning on `clips` (n, T, H, W, 3) float32 in [0, 1], all of `config`'s geometry.
    Resumes from `state` (a previous round's); `after_round(state)` is called after every round (checkpoints)."""
    layout = layout_of(config)
    s = settings
    state = state or start_prior(config, clips.shape[0], s)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(s.lr))
    step = make_prior_step(config, layout, optimizer)
    clips_dev = jnp.asarray(clips)
    params = jax.tree.map(jnp.array, state.params)   # own buffers: the step donates them
    budget = s.target_bpp * config.geometry.pixels
    for r in range(state.round, s.rounds):
        # each round's randomness derives from the round number alone and the optimizer's state is part of the
        # state, so a run resumed at a round boundary is the uninterrupted run
        rng = np.random.default_rng([s.seed, r])
        key = jax.random.fold_in(jax.random.key(s.seed), r)
        opt_state = restored(optimizer.init(params), state.opt)
        p_mean = jnp.asarray(state.prior_mean)[layout.entry]   # the prior is fixed within a round
        p_scale = jnp.exp(jnp.asarray(state.prior_log_scale))[layout.entry]
        for i in range(s.steps):
            idx = np.stack([frame_batches(rng, config.geometry.frames, s.batch) for _ in range(clips.shape[0])])
            key, sub = jax.random.split(key)
            batch = jax.vmap(lambda c, i: c[i])(clips_dev, jnp.asarray(idx))
            params, opt_state, mse, kl = step(params, opt_state, batch, jnp.asarray(idx), sub,
                                              jnp.float32(state.beta), p_mean, p_scale)
            if progress is not None:
                progress(r * s.steps + i + 1, s.rounds * s.steps, float(jnp.mean(mse)))
        kl_clip = float(jnp.mean(jnp.sum(kl, axis=1)))
        if kl_clip > budget:
            state.beta *= s.beta_factor
        elif kl_clip < (1.0 - s.window) * budget:
            state.beta /= s.beta_factor
        mean, log_scale = closed_form_prior(layout, params["post"]["mean"], params["post"]["log_scale"])
        state.prior_mean, state.prior_log_scale = np.asarray(mean), np.asarray(log_scale)
        state.params = jax.tree.map(np.asarray, params)
        state.opt = [np.asarray(x) for x in jax.tree.leaves(opt_state)]
        params = jax.tree.map(jnp.array, state.params)   # the step donates its inputs
        state.round = r + 1
        state.history.append((r + 1, float(jnp.mean(mse)), kl_clip / config.geometry.pixels, state.beta))
        if after_round is not None:
            after_round(state)
    return prior_of(config, layout, state), state


def save_prior_state(path, state: PriorState, settings: PriorSettings, fingerprint: str) -> None:
    """Writes prior learning's state after a round (atomically, as a codec.assets archive of plain arrays) with what identifies the
    run (`fingerprint`: the clips, config and settings), so that --resume never continues another run."""
    arrays = {"prior_mean": state.prior_mean, "prior_log_scale": state.prior_log_scale,
              "post/mean": state.params["post"]["mean"], "post/log_scale": state.params["post"]["log_scale"]}
    for name, tree in state.params["shared"].items():
        for path_, leaf in flatten(tree):
            arrays[f"shared/{name}/{path_}"] = leaf
    arrays.update(opt_arrays(state.opt))
    meta = {"round": state.round, "beta": state.beta, "history": state.history, "fingerprint": fingerprint,
            "settings": dataclasses.asdict(settings)}
    assets.save(path, "prior-learning-state", {k: np.asarray(v) for k, v in arrays.items()}, meta)


def load_prior_state(path, fingerprint: str) -> PriorState:
    """The state `save_prior_state` wrote; ConfigError if it belongs to another run."""
    a = assets.load(path)
    if a.meta.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path} is the checkpoint of another prior-learning run (other clips, model or "
                          "settings); remove it or run without --resume")
    shared = nested({k: np.array(v) for k, v in a.collection("shared").items()})
    params = {"post": {"mean": np.array(a.arrays["post/mean"]), "log_scale": np.array(a.arrays["post/log_scale"])},
              "shared": shared}
    return PriorState(int(a.meta["round"]), params, np.array(a.arrays["prior_mean"]),
                      np.array(a.arrays["prior_log_scale"]), float(a.meta["beta"]),
                      [tuple(h) for h in a.meta["history"]], opt_leaves(a.arrays))


def opt_arrays(leaves: list | None) -> dict:
    """A checkpoint's arrays for an optimizer state's leaves ('opt/0', 'opt/1', ...; int32 and float32 only)."""
    return {f"opt/{i}": np.asarray(x) for i, x in enumerate(leaves or [])}


def opt_leaves(arrays: dict) -> list | None:
    n = sum(1 for k in arrays if k.startswith("opt/"))
    return [np.array(arrays[f"opt/{i}"]) for i in range(n)] if n else None



def prior_of(config, layout: Layout, state: PriorState) -> Prior:
    """The asset's tables from a prior-learning state: the expected KL per entry is measured on the training
    posteriors against the final prior."""
    post = state.params["post"]
    scale = np.exp(state.prior_log_scale).astype(np.float32)
    kl = rec.kl_bits(post["mean"], jnp.exp(post["log_scale"]), jnp.asarray(state.prior_mean)[layout.entry],
                     jnp.asarray(scale)[layout.entry])
    ids = jnp.broadcast_to(jnp.asarray(layout.entry), post["mean"].shape).reshape(-1)
    count = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, layout.n_entries)
    init_log_scale = jax.ops.segment_sum(post["log_scale"].reshape(-1), ids, layout.n_entries) / count
    return Prior(np.asarray(state.prior_mean, np.float32), scale, np.asarray(mean_kl_per_entry(layout, kl), np.float32),
                 np.asarray(init_log_scale, np.float32), float(state.beta),
                 jax.tree.map(np.asarray, state.params["shared"]))


# --------------------------------------------------------------------------------------------------------------
# Files and assets


def save_prior(path, asset_id: str, config, prior: Prior, meta: dict | None = None) -> assets.Asset:
    """Writes `prior` as a shared asset for files of `config`'s family and architecture."""
    spec = registry.spec_of(config)
    arch = registry.spec_of(config).asset_fields(config)
    record = {**(meta or {}), "model": spec.name, "architecture": arch}
    return assets.save(path, asset_id, asset_arrays(prior), record)


def blocks_for(config, bpp: float, overhead_bytes: int) -> int:
    """16-bit blocks that make a file of about `bpp` bits per pixel: every byte counts, the header and the REC
    section's fixed fields (`overhead_bytes`) included."""
    bits = bpp * config.geometry.pixels - 8 * overhead_bytes
    if bits < rec.BLOCK_BITS:
        raise ConfigError(f"--bpp {bpp:g} leaves no room for a single 16-bit block on this clip after the file's "
                          f"{overhead_bytes} bytes of header; ask for more")
    return int(bits // rec.BLOCK_BITS)


def encode_file(config, frames: np.ndarray, asset: assets.Asset, bpp: float, settings: RecSettings,
                progress: Callable | None = None, **resume) -> tuple[bytes, Coded]:
    """Fits and codes a clip against the prior `asset` into a complete .nerva file of about `bpp`."""
    prior = prior_of_asset(config, asset)
    layout = layout_of(config)
    empty = RecSection(layout.names, asset.id, asset.digest, settings.seed, 1.0, np.zeros(0, np.uint16))
    overhead = len(api.compress(config, {}, rec=empty)) + 4   # + the block count's longer varint
    coded = encode_clip(config, frames, prior, blocks_for(config, bpp, overhead), settings, progress, **resume)
    section = RecSection(layout.names, asset.id, asset.digest, settings.seed, coded.kl_scale, coded.indices)
    return api.compress(config, {}, rec=section), coded
