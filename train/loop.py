"""The one fitting loop: runs a TrainConfig's phases over a video for any registered model family."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
import time
import zlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from codec.api import QuantPolicy
from codec.decoder import DEFAULT_BATCH
from codec.metrics import mean_psnr, psnr
from codec.params import first_match, flatten, path_str, unflatten
from codec.prune import magnitude_masks
from codec.quant import fake_quantize
from inr import registry
from inr.memory import check_program
from train import quantsim, rd
from train.losses import LOSSES
from train.schedule import Phase, TrainConfig

def prunable(spec) -> Callable[[str], bool]:
    """Whether global magnitude pruning may touch the tensor at a 'collection/path' (the family's rules)."""
    return lambda path: first_match(path, spec.prune_rules, False)


@dataclasses.dataclass
class FitResult:
    variables: Any                 # float variables after the last phase (what gets quantized)
    history: list[dict]            # one row per logged interval and per phase end
    seconds: float                 # wall time of all phases, compilation included
    train_frames_per_s: float      # frames through forward+backward per second, compile excluded
    float_psnr: float | None       # PSNR of the float model before quantization-aware fine-tuning
    aux: Any = None                # encode-time state after the last phase (learned steps, encoders)
    steps: dict = dataclasses.field(default_factory=dict)   # {path: float32 steps} learned by rate-distortion
                                                            # phases, which the file must use ({}: none)
    step_scale: float = 1.0        # the factor train.encode scaled those steps by to land on a target bpp

    @property
    def final_lambda(self) -> float | None:
        """λ at the end of a rate-distortion fit (the bpp controller's last value, or the fixed rate weight)."""
        ends = [h["lambda"] for h in self.history if "lambda" in h]
        return ends[-1] if ends else None


@dataclasses.dataclass
class _State:
    variables: Any
    aux: Any
    opt_state: Any
    masks: Any
    steps: Any      # {path: log step per channel} of every stored tensor, trained by rate-distortion phases
    control: Any = dataclasses.field(default_factory=dict)   # the bpp controller (train.rd.Control) of
                                                             # a schedule with a target bpp, else {}

    def tree(self):
        return {"variables": self.variables, "aux": self.aux, "opt": self.opt_state, "masks": self.masks,
                "steps": self.steps, "control": self.control}

    @classmethod
    def of(cls, t):
        return cls(t["variables"], t["aux"], t["opt"], t["masks"], t["steps"], t["control"])


def _optimizer_of(clip_norm: float, beta1: float, beta2: float) -> optax.GradientTransformation:
    """Clipped Adam on all trainable tensors raveled into one vector: the same arithmetic, but a few ops
    instead of ~10 per tensor (NIRVANA's 30 groups × 12 tensors: step compile 125 -> 50 s, and 2.2x the
    steps per second on carphone)."""
    return optax.flatten(optax.chain(optax.clip_by_global_norm(clip_norm), optax.scale_by_adam(beta1, beta2)))


def _lr(hp: dict, step):
    """Linear warmup from 0.1·lr, then cosine to 0 (NeRV/HNeRV's per-iteration schedule)."""
    s = jnp.asarray(step, jnp.float32)
    warm, n_steps = hp["warm"].astype(jnp.float32), hp["n_steps"].astype(jnp.float32)
    up = hp["lr"] * (0.1 + 0.9 * s / jnp.maximum(warm, 1.0))
    frac = (s - warm) / jnp.maximum(n_steps - warm, 1.0)
    down = hp["lr"] * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.clip(frac, 0.0, 1.0)))
    return jnp.where(s < warm, up, down)


def _lr_scaler(config) -> Callable:
    """Multiplies each stored tensor's update by its config learning-rate rule (e.g. CAM tables 10x), and
    the learned quantization steps' by rd.STEP_LR_MULT; updates are keyed by state path
    ('variables/params/...', 'steps/params/...'), the config's rules by 'params/...'."""
    rules = config.lr_multipliers()

    def scale(path: str) -> float:
        if path.startswith("steps/"):
            return rd.STEP_LR_MULT
        return first_match(path.partition("/")[2], rules, 1.0) if path.startswith("variables/") else 1.0
    return lambda updates: {p: u * scale(p) for p, u in updates.items()}


def trainable(state, train_only: str) -> dict:
    """The tensors a phase may change (`Phase.train_only`; "" = all) of {'variables': ..., 'aux': ...},
    keyed by path ('variables/params/...', 'aux/...'). Only these get gradients and optimizer state, so a
    phase that trains a small part of a large state (NIRVANA's current group) pays for that part only."""
    return {p: x for p, x in flatten(state) if not train_only or re.fullmatch(train_only, p)}


def _merged(state, tensors: dict):
    """`state` with the tensors at the paths of `tensors` replaced."""
    return unflatten(state, {**dict(flatten(state)), **tensors})


@dataclasses.dataclass(frozen=True)
class _Shape:
    """What a phase's compiled programs depend on. A phase's numbers (learning rate, warmup, length, first
    frame, rate weight) are arguments instead, so phases that differ only in them (fit and prune; NIRVANA's
    warm-started groups) share one compiled step."""

    use_encoder: bool
    quantize: bool
    rd: str            # "": none; "train": the stored tensors on their learned steps, noisy or rounded by
                       # the phase's numbers (both rd modes share a program); "round": rounded (evaluation)
    train_only: str
    rated: bool
    controlled: bool   # λ follows a target bpp (train.rd.Control) instead of the phase's fixed rate weight
    span: int          # frames in the phase's range
    batch: int

    @classmethod
    def forward_of(cls, config, phase: Phase, evaluating: bool = False) -> "_Shape":
        """The part the forward pass depends on (the evaluation program's key). A phase "uses the encoder"
        only where the family has one (encode-time state), so that phases of a family without one that
        differ only in that flag share their compiled programs. Evaluation of a rate-distortion phase
        rounds as the file will (no noise)."""
        rd_mode = ("round" if evaluating else "train") if phase.rd else ""
        return cls(phase.use_encoder and _has_aux(config), phase.quantize, rd_mode, "", False, False, 0, 0)

    @classmethod
    def of(cls, config, phase: Phase, train_batch: int, n_frames: int) -> "_Shape":
        start, stop = phase.frame_range(n_frames)
        return dataclasses.replace(cls.forward_of(config, phase), train_only=phase.train_only,
                                   rated=bool(phase.rate_weight or phase.target_bpp),
                                   controlled=phase.target_bpp > 0, span=stop - start,
                                   batch=phase.batch_size(train_batch, n_frames))


@functools.lru_cache(maxsize=64)
def _has_aux(config) -> bool:
    """Whether the family keeps encode-time state (ModelSpec.init_aux returns any tensor), from shapes."""
    spec = registry.spec_of(config)
    return bool(jax.tree.leaves(jax.eval_shape(lambda: spec.init_aux(config, jax.random.key(0)))))


def _numbers(phase: Phase, n_steps: int, n_frames: int, train_batch: int, frame_pixels: int, seed: int,
             control_steps: int = 0) -> dict:
    """The phase's numbers as step arguments (device scalars); a target bpp becomes the file's bits; the
    quantization noise's seed derives from the run's seed and the phase's name; `control_steps` is the steps
    of all the fit's straight-through phases with a target (the bpp controller's span; 0 where none is)."""
    n_frames_pixels = n_frames * frame_pixels
    start, stop = phase.frame_range(n_frames)
    per_epoch = max((stop - start) // phase.batch_size(train_batch, n_frames), 1)
    return {"lr": jnp.float32(phase.lr), "warm": jnp.int32(max(int(phase.warmup * n_steps), 0)),
            "n_steps": jnp.int32(n_steps), "control_steps": jnp.int32(control_steps),
            "start": jnp.int32(start), "per_epoch": jnp.int32(per_epoch),
            "rate_weight": jnp.float32(phase.rate_weight), "mse_stop": _mse_stop(phase),
            "target_bits": jnp.float32(phase.target_bpp * n_frames_pixels),
            "noise_seed": np.uint32(zlib.crc32(f"{seed}/{phase.name}".encode())), "hard": np.bool_(phase.rd == "ste")}


def _mse_stop(phase: Phase) -> np.float32:
    """The batch MSE at or below which a step reaches `target_psnr` (-1: never). The step and the loop
    compare the same float32 numbers, so they agree on which step stopped."""
    return np.float32(10.0 ** (-phase.target_psnr / 10.0) if phase.target_psnr > 0 else -1.0)


def _forward_fn(config, shape: _Shape, policy: QuantPolicy | None) -> Callable:
    """(variables, aux, idx, frames, log steps, noise key, progress, hard) -> (predicted frames, {path:
    symbols}), as a phase of this shape sees them; the symbols are those of a rate-distortion phase ({}
    otherwise), rounded where `hard` (train.rd.quantized)."""
    spec = registry.spec_of(config)

    def forward(variables, aux, idx, frames, log_steps, key, progress, hard):
        symbols = {}
        if shape.rd:
            variables, symbols = rd.quantized(variables, log_steps, hard, key, progress, rd.ANNEAL)
        elif shape.quantize:   # the weights the file will hold: on the learned steps, or at the policy's bits
            learned = spec.learned_steps(config, variables, aux)
            variables = jax.tree_util.tree_map_with_path(
                lambda p, w: _on_steps(w, learned[path_str(p)]) if path_str(p) in learned
                else fake_quantize(w, policy.bits_for(path_str(p))), variables)
        if shape.use_encoder:
            return spec.train_render(config, variables, aux, idx, frames), symbols
        return spec.render(config, variables, idx), symbols
    return forward


def _on_steps(w, steps):
    """Straight-through rounding onto learned steps, float16 as the file stores them (the rounding of
    train.quantsim.round_ste: forward steps · round(w / steps), gradient the identity)."""
    s = jax.lax.stop_gradient(jnp.asarray(steps, jnp.float32).astype(jnp.float16).astype(jnp.float32))
    return s * quantsim.round_ste(w / s)


def _policy_key(shape: _Shape, policy: QuantPolicy) -> QuantPolicy | None:
    """The quantization policy only shapes quantization-aware programs."""
    return policy if shape.quantize and not shape.rd else None


@functools.lru_cache(maxsize=64)
def _step_program(config, optimizer: tuple, loss: str, shape: _Shape, policy: QuantPolicy | None):
    """The jitted step: (state tree, batch (B,H,W,3) uint8, its frame indices (B,), local step, numbers) ->
    (state tree, {loss, mse, bpp (estimated), lambda}). Memoized on its (hashable) arguments, so repeated phases and fits reuse the
    compiled step."""
    tx = _optimizer_of(*optimizer)
    forward = _forward_fn(config, shape, policy)
    loss_fn = LOSSES[loss]
    lr_scaled = _lr_scaler(config)
    spec = registry.spec_of(config)
    pixels = shape.span * config.geometry.height * config.geometry.width

    def step(tree, batch, idx, s, hp):
        target = batch.astype(jnp.float32) / 255.0
        state = {"variables": tree["variables"], "aux": tree["aux"]}
        if shape.rd:   # the learned steps train with the weights
            state["steps"] = tree["steps"]
        weight = jnp.exp(tree["control"]["log_lambda"]) if shape.controlled else hp["rate_weight"]
        # the noise's random bits from XLA's own generator ("rbg"), not threefry: 0.48 ms instead of 1.28 ms
        # for 84k weights per step on this CPU (jitted medians). Its stream is deterministic on a given
        # backend and JAX version, which is what a re-run with the same seed needs; a file never depends on
        # it beyond the trained weights
        key = jax.random.fold_in(jax.random.key(hp["noise_seed"], impl="rbg"), s)
        progress = s.astype(jnp.float32) / jnp.maximum(hp["n_steps"] - 1, 1).astype(jnp.float32)

        def objective(tensors):
            full = _merged(state, tensors)
            pred, symbols = forward(full["variables"], full["aux"], idx, target, full.get("steps", tree["steps"]),
                                    key, progress, hp["hard"])
            loss = loss_fn(pred, target)
            bits = jnp.float32(0.0)
            if shape.rated:
                own = rd.bits(spec.rate_symbols(config, full["variables"], full["aux"], idx))
                bits = own + rd.bits(symbols)
                loss = loss + weight * bits / pixels
            return loss, (jnp.mean((pred - target) ** 2), jax.lax.stop_gradient(bits))

        tensors = trainable(state, shape.train_only)
        (loss, (mse, bits)), grads = jax.value_and_grad(objective, has_aux=True)(tensors)
        control = tree["control"]
        if shape.controlled:   # λ follows the target in the straight-through mode only (train.rd.Control)
            moved = rd.controlled(control, bits, hp["target_bits"], hp["control_steps"])
            control = jax.tree.map(lambda new, old: jnp.where(hp["hard"], new, old), moved, control)
        updates, opt = tx.update(grads, tree["opt"], tensors)
        updates = lr_scaled(updates)
        # A step whose (pre-update) batch already reaches the phase's target PSNR changes nothing: the
        # phase ends on exactly the weights that were measured.
        lr = jnp.where(mse <= hp["mse_stop"], 0.0, _lr(hp, s))
        opt = jax.tree.map(lambda new, old: jnp.where(mse <= hp["mse_stop"], old, new), opt, tree["opt"])
        masks = dict(flatten({"variables": tree["masks"]}))
        tensors = {p: (x - lr * updates[p]) * masks[p] if p in masks else x - lr * updates[p]
                   for p, x in tensors.items()}
        state = _merged(state, tensors)
        return {"variables": state["variables"], "aux": state["aux"], "opt": opt,
                "masks": tree["masks"], "steps": state.get("steps", tree["steps"]), "control": control}, {"loss": loss, "mse": mse, "bpp": bits / pixels, "lambda": weight}
    g = config.geometry
    return _Program(jax.jit(step, donate_argnums=0),
                    f"a training step at {g.width}x{g.height} with {shape.batch} frames per step",
                    "fit fewer frames per step (--batch), a smaller model (--size) or smaller frames (--resize)")


class _Program:
    """A jitted program compiled ahead of its first run, once per argument signature, so that its working
    memory is checked against what the device has before it runs (inr.memory.check_program): a fit that
    cannot run stops with a clear message before its first step, not with an allocation failure in it."""

    def __init__(self, jitted, what: str, hint: str):
        self.jitted, self.what, self.hint = jitted, what, hint
        self._compiled: dict = {}

    def compiled(self, *args):
        """The compiled program for arguments shaped like `args`."""
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple((np.shape(x), x.dtype, getattr(x, "weak_type", False)) for x in leaves))
        if key not in self._compiled:
            compiled = self.jitted.lower(*args).compile()
            check_program(compiled, self.what, self.hint)
            self._compiled[key] = compiled
        return self._compiled[key]

    def __call__(self, *args):
        return self.compiled(*args)(*args)

    def lower(self, *args):
        return self.jitted.lower(*args)


@functools.partial(jax.jit, static_argnums=2)
def _permutation(key, epoch, span: int):
    return jax.random.permutation(jax.random.fold_in(key, epoch), span)


@dataclasses.dataclass(frozen=True)
class _Step:
    """A compiled step program bound to one phase's numbers: step(tree, frames, key, local step).

    The clip stays on the host as uint8 and only a step's batch goes to the device: a device copy of the
    clip would be a second clip in memory on CPU (bigbuckbunny at 720p: 365 MB), and a batch of two 720p
    frames is 5.5 MB to transfer. Local step s takes batch s mod per_epoch of epoch s // per_epoch's
    permutation of the phase's frames (drawn once per epoch from the phase's key), in index order: the
    loss is a mean over the batch, and a batch that covers a range of frames (NIRVANA's whole group) is
    then that range in order."""

    program: Any
    numbers: dict
    span: int
    batch: int
    _perm: dict = dataclasses.field(default_factory=dict, compare=False)   # the last draw; the compiled step

    def indices(self, key, s: int) -> np.ndarray:
        per_epoch, start = int(self.numbers["per_epoch"]), int(self.numbers["start"])
        epoch, k = divmod(int(s), per_epoch)
        if self._perm.get("of") != (id(key), epoch):
            self._perm.update(of=(id(key), epoch), perm=np.asarray(_permutation(key, np.int32(epoch), self.span)))
        return np.sort(start + self._perm["perm"][k * self.batch:(k + 1) * self.batch]).astype(np.int32)

    def arguments(self, frames: np.ndarray, key, s) -> tuple:
        idx = self.indices(key, s)
        return np.ascontiguousarray(frames[idx]), idx, np.int32(s)

    def __call__(self, tree, frames: np.ndarray, key, s):
        args = (tree, *self.arguments(frames, key, s), self.numbers)
        if "compiled" not in self._perm:   # a phase's arguments keep one signature: look it up once
            self._perm["compiled"] = self.program.compiled(*args)
        return self._perm["compiled"](*args)

    def lower(self, tree, frames: np.ndarray, key, s):
        return self.program.lower(tree, *self.arguments(frames, key, s), self.numbers)


def make_step(config, train: TrainConfig, phase: Phase, n_steps: int, policy: QuantPolicy, n_frames: int) -> _Step:
    """The step of `phase`: (state tree, frames (T,H,W,3) uint8 on the host, key, local step) -> (state
    tree, {loss, mse, bpp, lambda})."""
    shape = _Shape.of(config, phase, train.batch, n_frames)
    program = _step_program(config, (train.clip_norm, train.beta1, train.beta2), train.loss, shape,
                            _policy_key(shape, policy))
    g = config.geometry
    # the bpp controller runs over every straight-through phase with the target, carrying λ from one to the next
    control_steps = sum(n for p, n in zip(train.phases, phase_steps(train, n_frames)) if p.target_bpp and p.rd == "ste")
    numbers = _numbers(phase, n_steps, n_frames, train.batch, g.height * g.width, train.seed, control_steps)
    return _Step(program, numbers, shape.span, shape.batch)


def phase_steps(train: TrainConfig, n_frames: int) -> list[int]:
    out = []
    for p in train.phases:
        start, stop = p.frame_range(n_frames)
        per_epoch = max((stop - start) // p.batch_size(train.batch, n_frames), 1)
        out.append(max(1, math.ceil(p.epochs * per_epoch)))
    return out


@functools.lru_cache(maxsize=64)
def _eval_program(config, shape: _Shape, policy: QuantPolicy | None):
    g = config.geometry
    forward = _forward_fn(config, shape, policy)

    def frames_of(variables, aux, idx, frames, log_steps):   # evaluation rounds: no noise, no progress
        return forward(variables, aux, idx, frames, log_steps, jax.random.key(0), 1.0, True)[0]
    return _Program(jax.jit(frames_of),
                    f"evaluating the model at {g.width}x{g.height}, {DEFAULT_BATCH} frames at a time",
                    "use a smaller model (--size) or smaller frames (--resize)")


def _eval_fn(config, phase: Phase, policy: QuantPolicy):
    """The jitted forward pass as `phase` sees the model (shared by phases of the same kind)."""
    shape = _Shape.forward_of(config, phase, evaluating=True)
    return _eval_program(config, shape, _policy_key(shape, policy))


def _evaluate(fn, state: "_State", frames: np.ndarray, batch: int = DEFAULT_BATCH, start: int = 0,
              stop: int | None = None) -> float:
    """Mean per-frame PSNR (dB) of the model as a phase sees it (jitted `fn`), over frames [start, stop).

    Batches are the decoder's size (its working memory at 720p is a quarter of a batch of 8) and the last
    one is padded with its final frame, so that one program is compiled per phase kind."""
    out = []
    stop = frames.shape[0] if stop is None else stop
    for i in range(start, stop, batch):
        idx = np.minimum(np.arange(i, i + batch), stop - 1).astype(np.int32)
        target = jnp.asarray(frames[idx]).astype(jnp.float32) / 255.0
        pred = fn(state.variables, state.aux, idx, target, state.steps)
        out.append(np.asarray(psnr(target, jnp.clip(pred, 0.0, 1.0)))[:stop - i])
    return float(mean_psnr(np.concatenate(out)))


def _start_phase(spec, config, train, k: int, state: _State, frames, policy: QuantPolicy,
                 ended_psnr: float | None = None) -> _State:
    """Phase-start actions: store encoder embeddings after the last encoder phase, prune, start the learned
    steps and the bpp controller, new optimizer. `ended_psnr` is the previous phase's end PSNR over every
    frame where this process measured it (the controller's start reads it instead of measuring again, unless
    this phase prunes first)."""
    phase = train.phases[k]
    prev_encoder = k > 0 and train.phases[k - 1].use_encoder
    variables, masks = state.variables, state.masks
    if prev_encoder and not phase.use_encoder:
        variables = spec.finalize(config, variables, state.aux, frames)
    # the step donates its state: give every leaf its own buffer
    variables, aux = _own_buffers(spec.start_phase(config, variables, state.aux, phase))
    if phase.sparsity > 0:
        masks = magnitude_masks(variables, prunable(spec), phase.sparsity)
        variables = jax.tree.map(lambda p, m: p * m, variables, masks)
    steps = state.steps
    if phase.rd and not (k > 0 and train.phases[k - 1].rd):   # the grid starts from the trained weights
        steps = _initial_steps(variables)
    control = state.control
    if phase.target_bpp and not (k > 0 and train.phases[k - 1].target_bpp):
        # λ starts at the slope the fit's distortion suggests; the side information (header, tables,
        # steps) is what a file of this state spends besides the estimated payload. The previous phase's
        # end PSNR is that of this state as that phase sees it (storing HNeRV's embeddings changes no
        # value its encoder-driven evaluation reads), so it is measured again only after a resume.
        if ended_psnr is None or phase.sparsity > 0:   # none measured, or this phase's pruning changed the state
            ended_psnr = _evaluate(_eval_fn(config, train.phases[max(k - 1, 0)], policy),
                                   dataclasses.replace(state, variables=variables, aux=aux), frames)
        mse = 10.0 ** (-ended_psnr / 10.0)
        control = rd.start_control(config, variables, aux, steps, policy, mse, phase)
    return _with_optimizer(train, k, _State(variables, aux, None, masks, steps, control))


_initial_steps = jax.jit(rd.initial_steps)


def init_state(spec, config, train: TrainConfig) -> _State:
    key = jax.random.key(train.seed)
    variables = jax.jit(spec.init, static_argnums=0, compiler_options=rd.ONCE_OPTIONS)(
        config, jax.random.fold_in(key, 0))
    aux = jax.jit(spec.init_aux, static_argnums=0, compiler_options=rd.ONCE_OPTIONS)(
        config, jax.random.fold_in(key, 1))
    variables, aux = _own_buffers((variables, aux))
    masks = jax.tree.map(jnp.ones_like, variables)
    # steps only for a schedule that learns them (their shapes must be known from the start: checkpoints)
    steps = _initial_steps(variables) if any(ph.rd for ph in train.phases) else {}
    control = rd.Control.zero() if any(ph.target_bpp for ph in train.phases) else {}
    return _with_optimizer(train, 0, _State(variables, aux, None, masks, steps, control))


def _with_optimizer(train: TrainConfig, k: int, state: _State) -> _State:
    """`state` with a fresh optimizer state over the tensors phase k trains."""
    phase = train.phases[k]
    tree = {"variables": state.variables, "aux": state.aux, **({"steps": state.steps} if phase.rd else {})}
    tensors = trainable(tree, phase.train_only)
    return dataclasses.replace(state, opt_state=_optimizer_init(train.clip_norm, train.beta1, train.beta2)(tensors))


@functools.lru_cache(maxsize=16)
def _optimizer_init(clip_norm: float, beta1: float, beta2: float) -> Callable:
    """The optimizer's init as one jitted program (compiled once per tree structure, without LLVM
    optimisation): run eagerly, its many small ops each compile on first use (~2 s per new structure)."""
    return jax.jit(_optimizer_of(clip_norm, beta1, beta2).init, compiler_options=rd.ONCE_OPTIONS)


def _own_buffers(tree):
    """A copy in which no two leaves share a device buffer (an init may return one array in several places,
    e.g. NIRVANA's identical groups), since the jitted step donates every leaf."""
    seen, out = set(), []
    leaves, treedef = jax.tree.flatten(tree)
    for x in leaves:
        out.append(jnp.array(x, copy=True) if id(x) in seen else x)
        seen.add(id(x))
    return jax.tree.unflatten(treedef, out)


class _Meter:
    """Running means of loss and MSE between progress-bar updates, and the compile-free step timing."""

    def __init__(self):
        self.sums, self.n = {}, 0
        self.timed_frames, self.timed_s = 0, 0.0

    def add(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.n += 1

    def row(self, phase: str, step: int) -> dict:
        """The interval's means: loss, PSNR of the mean MSE, and for a rated phase its estimated bpp (of
        the stored tensors) and λ."""
        mean = {k: v / self.n for k, v in self.sums.items()}
        row = {"phase": phase, "step": step, "loss": mean["loss"],
               "psnr": -10 * math.log10(max(mean["mse"], 1e-12))}
        if mean.get("bpp", 0.0) > 0:
            row.update(bpp_estimate=mean["bpp"], lambda_mean=mean["lambda"])
        self.sums, self.n = {}, 0
        return row


class Interrupted(KeyboardInterrupt):
    """The fit stopped on request (Ctrl-C) after `step` global steps, with the state checkpointed there."""

    def __init__(self, step: int, total: int):
        super().__init__(f"stopped at step {step} of {total}")
        self.step, self.total = step, total


@dataclasses.dataclass
class _Run:
    """What every phase of one fit reports to: progress, history, checkpoints, the stop request."""

    meter: _Meter
    history: list
    bar: Any
    checkpointer: Any
    stop: Callable[[], bool] | None
    log_every: int
    total: int

    def after_step(self, step: int, tree) -> None:
        """Checkpoints (every N steps, or at once when a stop was asked for) and stops if asked to."""
        asked = self.stop is not None and self.stop()
        if self.checkpointer is not None:
            self.checkpointer.maybe_save(step, tree, force=asked)
        if asked:
            raise Interrupted(step, self.total)


def _run_phase(step, tree, frames, key, steps: range, done: int, phase: Phase, run: _Run,
               frames_per_step: int):
    """Runs local steps `steps` of one phase; returns (state tree, global steps done). A phase with a
    `target_psnr` ends at the first step whose PSNR (before its update) reaches it; that step leaves the
    state unchanged, and the global step count jumps to the phase's end, so a resumed run skips the same
    steps. Without a target, a step's loss is read only once the next step is under way, so the host
    never idles the device between steps."""
    mse_stop = _mse_stop(phase)
    lag = 0 if mse_stop >= 0 else 1
    pending, reached, meter = collections.deque(), False, run.meter
    for s in steps:
        ts = time.perf_counter()
        tree, metrics = step(tree, frames, key, s)
        pending.append((s, metrics))
        while len(pending) > lag or (pending and s == steps[-1]):
            ps, metrics = pending.popleft()
            mse = metrics["mse"]
            meter.add(metrics)
            reached = float(mse) <= mse_stop
            skip = steps[-1] - ps if reached else 0
            done += 1 + skip
            if meter.n == run.log_every or ps == steps[-1] or reached:
                run.history.append(meter.row(phase.name, done))
                if run.bar:   # before the update, so that a line the bar prints shows these numbers
                    run.bar.set_postfix_str(f"{phase.name} loss {run.history[-1]['loss']:.4f} "
                                            f"psnr {run.history[-1]['psnr']:.2f}")
            if run.bar:
                run.bar.update(1 + skip)
        if s > 0:   # the first step of a phase pays for compilation
            meter.timed_frames += frames_per_step
            meter.timed_s += time.perf_counter() - ts
        run.after_step(done + len(pending), tree)
        if reached:
            break
    return tree, done


def _resume(checkpointer, train: TrainConfig, starts, state: _State) -> tuple[int, _State]:
    """(global step, state) of the latest checkpoint, or (0, `state`). A checkpoint at step s was saved
    in the phase k with starts[k] < s <= starts[k+1]: its optimizer state covers that phase's tensors."""
    if checkpointer is None:
        return 0, state

    def like(step: int):
        k = max(int(np.searchsorted(starts, step, side="left")) - 1, 0)
        return _with_optimizer(train, k, state).tree()
    restored = checkpointer.restore(like)
    return (0, state) if restored is None else (restored[0], _State.of(restored[1]))


def fit(config, frames: np.ndarray, train: TrainConfig, policy: QuantPolicy, *, progress=None,
        checkpointer=None, log_every: int = 50, stop: Callable[[], bool] | None = None) -> FitResult:
    """Fits `config`'s model to `frames` through every phase of `train`.

    Args:
      frames: (T, H, W, 3) uint8, the source video; it stays on the host, and each step sends only its
        batch to the device, as uint8, and converts it to float there.
      progress: optional callable(total_steps) -> bar with .update(n), .set_postfix_str(s), .close().
      checkpointer: optional train.checkpoint.Checkpointer; its latest state (if any) is resumed.
      stop: optional callable polled after every step; once it returns True the state is checkpointed
        at that step (with a checkpointer) and Interrupted is raised.
    Returns:
      FitResult with the float variables to quantize, history and speed figures.
    """
    spec = registry.spec_of(config)
    steps = phase_steps(train, frames.shape[0])
    starts = np.cumsum([0] + steps)
    done, state = _resume(checkpointer, train, starts, init_state(spec, config, train))
    shuffle_key = jax.random.fold_in(jax.random.key(train.seed), 2)
    bar = progress(int(starts[-1])) if progress else None
    if bar and done:
        bar.update(done)
    run = _Run(_Meter(), [], bar, checkpointer, stop, log_every, int(starts[-1]))
    t0, float_psnr, ended_psnr = time.perf_counter(), None, None
    for k, phase in enumerate(train.phases):
        if done >= starts[k + 1]:
            continue
        if done <= starts[k]:
            state = _start_phase(spec, config, train, k, state, frames, policy, ended_psnr)
        step = make_step(config, train, phase, steps[k], policy, frames.shape[0])
        tree, done = _run_phase(step, state.tree(), frames, jax.random.fold_in(shuffle_key, k),
                                range(done - starts[k], steps[k]), done, phase, run,
                                phase.batch_size(train.batch, frames.shape[0]))
        state = _State.of(tree)
        start, stop_frame = phase.frame_range(frames.shape[0])
        end_psnr = _evaluate(_eval_fn(config, phase, policy), state, frames,
                             start=start, stop=stop_frame)
        run.history.append({"phase": phase.name, "step": done, "phase_end_psnr": end_psnr,
                            **({"lambda": float(jnp.exp(state.control["log_lambda"]))} if phase.target_bpp
                               else {"lambda": phase.rate_weight} if phase.rate_weight else {})})
        if not (phase.quantize or phase.rd):
            float_psnr = end_psnr
        ended_psnr = None if phase.frames else end_psnr   # over every frame, as the controller's start reads it
    if bar:
        bar.close()
    variables = state.variables
    if train.phases[-1].use_encoder:
        variables = spec.finalize(config, variables, state.aux, frames)
    meter = run.meter
    fps = meter.timed_frames / meter.timed_s if meter.timed_s > 0 else float("nan")
    steps = rd.steps_of(state.steps) if any(p.rd for p in train.phases) else {}
    return FitResult(variables, run.history, time.perf_counter() - t0, fps, float_psnr, state.aux, steps)
