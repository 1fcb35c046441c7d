"""Rate–distortion training of any family's stored tensors: learned quantization steps and their estimated bits.

Every stored tensor w gets a learned step per output channel (log-parametrized, as the file stores one
float16 step per channel) and is trained on w_hat = step · q, where the symbols q are
  - "noise": q = noisy_soft_round(w / step) with the soft-rounding temperature and the Kumaraswamy noise
    annealed over the phase (train.quantsim; NVRC's schedule by default), then
  - "ste": q = round(w / step) straight through (the file's own symbols in the forward pass),
one compiled program for both (the mode is an argument).
The rate is the code length of q under the file's LAPLACE model (codec.rate) at the parameters that
minimise the rounded symbols' code length on their support (codec.rate.fit_to_support, what the encoder's
own fit finds), both held constant in a step: at that optimum the
code length's derivative in the parameters is zero, so nothing is lost to first order, and the estimate
is the table the encoder can write for those symbols.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from codec import api, rate
from codec.entropy import LAPLACE
from codec.params import flatten, unflatten
from codec.quant import channel_axes
from inr import registry
from train import quantsim

MODES = ("noise", "ste")
ANNEAL = quantsim.Anneal()   # NVRC's weight schedule: temperature 0.5 -> 0.3, Kumaraswamy a 2 -> 1
INIT_BITS = 6     # steps start where 2^6 levels span each channel's range (the fixed-bit pipeline's best depth)
STEP_LR_MULT = 30.0   # log steps move 30x faster than weights: a step travels ~ln 4-8 from its start
MIN_STEP = 1e-6
# A float16 step costs 2 side bytes; per output channel it pays where a channel has many weights. Measured
# on 32 carphone frames (NeRV 30k, whose channels hold 72-80 weights): one step per tensor everywhere saves
# ~1.8 KB of ~10 KB files. 128 follows the suggestion for larger channels (not yet measured).
PER_CHANNEL_MIN = 128   # a channel of zeros gets this step (its symbols are 0 whatever the step)
# The symbols keep one LAPLACE table per tensor: with the step per channel above, a table per output or input
# channel (NVRC's +13 % ablation) would make a 0.09 bpp carphone file 1.2 % smaller for HNeRV and nothing for
# NeRV, NeRV++ or CAM, at most 2.9 % even with its headers free (bench/channel_tables.py, bench/README.md).
# --bpp under rate-distortion training sizes the model for this many file bits per parameter: the rate term
# then has room to trade (a fit at a fixed λ spends ~1.7 bits per parameter on 32 carphone frames at λ 0.03,
# against 6.8 for fit + QAT at 6 bits), and the bpp controller (Control) lands the file on the target
CONTROL_BITS_PER_PARAM = 3.0
# λ starts at CONTROL_START · MSE / bpp. Measured on carphone (NeRV 51k parameters, 0.05 bpp, 30 epochs): the
# controller settles near MSE / bpp / 20, and starting at MSE / bpp crushed the rate to half the target in the
# first 100 steps, which the rest of the fit spent recovering; a start below the target's λ costs nothing
CONTROL_START = 0.05
# log λ moves by CONTROL_GAIN times the log ratio of estimated to target payload per step, or by
# CONTROL_TRAVEL over the phase where that is larger, so that a short phase (a tiny clip's 32 steps) still
# moves λ far enough. At a fixed λ the rate falls as the learning rate decays (the weights' random walk
# across bin edges quiets while the rate term's pull towards zero stays): in the straight-through phase
# of carphone NeRV at 0.043 bpp it fell 7 % over its last 300 steps. A gain of 0.02 followed too slowly
# and the file missed by more than LANDING_TOLERANCE, and scaling the steps of straight-through-trained
# weights to land it cost 0.3–0.7 dB (26.57 -> 25.86 dB at 0.043 bpp, 29.11 -> 28.84 at 0.2); 0.06 landed
# both with no scaling (26.71 dB @0.0414, 29.17 @0.1927), 0.2 too, with 0.2 dB less at 0.043.
CONTROL_GAIN = 0.06
# ... towards CONTROL_AIM times the target's bits. The integral controller lags the rate, which keeps falling
# while the learning rate decays, so aimed at the target itself the files fell 2.3–4.9 % short (the
# rate-distortion sweeps at c6bb1b2 / 8e3037c), and where one fell more than LANDING_TOLERANCE short its steps
# were scaled to land it, which costs straight-through-trained weights dearly (train.encode). Aimed 3 % above
# (one fit each, 30 + 3 epochs, file PSNR @ file bpp): HNeRV carphone 0.043 bpp 26.24 dB @0.0416 unscaled
# against 25.69 @0.0414 scaled, 0.2 28.97 @0.1961 against 28.94 @0.1905; bigbuckbunny 320×180 0.093 27.64
# @0.0894 unscaled against 27.00 @0.0891 scaled.
CONTROL_AIM = 1.03
CONTROL_TRAVEL = 24.0
CONTROL_MAX_MOVE = 1.0    # ... the log ratio clipped to ±1: one step changes λ by at most 2 %
LAMBDA_RANGE = (1e-7, 1e4)   # λ stays in this range (the upper end is --lambda's limit)


def initial_steps(variables) -> dict:
    """{path: log steps}: one step per output channel where a channel holds at least PER_CHANNEL_MIN
    weights, else one for the whole tensor (FORMAT.md version 2), each spanning its range
    [min(w, 0), max(w, 0)] in 2^INIT_BITS levels."""
    def log_step(w):
        axes = channel_axes(w.shape) if per_channel(w.shape) else tuple(range(w.ndim))
        span = jnp.maximum(w.max(axis=axes), 0.0) - jnp.minimum(w.min(axis=axes), 0.0) if w.size else jnp.zeros(1)
        return jnp.log(jnp.maximum(jnp.atleast_1d(span) / (2 ** INIT_BITS - 1), MIN_STEP))
    return {p: log_step(jnp.asarray(w, jnp.float32)) for p, w in flatten(variables)}


def per_channel(shape: tuple[int, ...]) -> bool:
    """Whether a tensor of `shape` gets a step per output channel (last axis): only where a channel's
    PER_CHANNEL_MIN or more weights repay the 2 side bytes of its step."""
    return len(shape) >= 2 and math.prod(shape[:-1]) >= PER_CHANNEL_MIN


def steps_of(log_steps: dict) -> dict:
    """{path: float32 steps} as the file will hold them (rounded to float16), for the encoder."""
    return {p: _file_step(s) for p, s in log_steps.items()}


def _file_step(log_step):
    return jnp.exp(log_step).astype(jnp.float16).astype(jnp.float32)


def _step(log_step):
    """The step a forward pass uses: float16-rounded as the file stores it, gradient through exp."""
    s = jnp.exp(log_step)
    return s + jax.lax.stop_gradient(_file_step(log_step) - s)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Symbols:
    """Every stored tensor's symbols end to end in one flat float32 array (`values`, a pytree leaf), in
    sorted path order, with the tensors' paths and shapes (static: they shape the jitted program).
    One array, so that rounding, noise and the rate estimate are a few ops for the whole model rather
    than a few per tensor."""

    values: jax.Array
    paths: tuple[str, ...] = dataclasses.field(metadata={"static": True})
    shapes: tuple[tuple[int, ...], ...] = dataclasses.field(metadata={"static": True})

    @property
    def segments(self) -> rate.Segments:
        """The nonempty tensors' runs in `values` (an empty tensor has no symbols to code)."""
        return rate.Segments(tuple(math.prod(s) for s in self.shapes if math.prod(s)))

    def as_dict(self) -> dict:
        """{path: symbols of the tensor's own shape}."""
        parts = _split(self.values, [math.prod(shape) for shape in self.shapes])
        return {p: part.reshape(shape) for p, shape, part in zip(self.paths, self.shapes, parts)}

    @staticmethod
    def of(symbols: dict) -> "Symbols":
        """{path: symbols} laid end to end in sorted path order."""
        items = sorted(symbols.items())
        values = [jnp.ravel(jnp.asarray(q, jnp.float32)) for _, q in items]
        return Symbols(jnp.concatenate(values) if values else jnp.zeros((0,), jnp.float32),
                       tuple(p for p, _ in items), tuple(tuple(jnp.shape(q)) for _, q in items))


def _flat(variables, log_steps: dict, step_of):
    """(every tensor's weights end to end, each weight's step, paths, shapes) in sorted path order: a
    tensor's steps (one, or one per output channel = last axis) broadcast over its weights; `step_of`
    maps all tensors' log steps at once."""
    items = flatten(variables)
    paths = tuple(p for p, _ in items)
    shapes = tuple(tuple(jnp.shape(w)) for _, w in items)
    if not items:
        return jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.float32), paths, shapes
    weights = jnp.concatenate([jnp.ravel(jnp.asarray(w, jnp.float32)) for _, w in items])
    logs = [jnp.ravel(jnp.asarray(log_steps[p], jnp.float32)) for p in paths]
    for shape, log in zip(shapes, logs):
        if log.size != 1 and not (shape and log.size == shape[-1]):
            raise ValueError(f"{log.size} steps for a tensor of shape {shape}: one, or one per last-axis channel")
    steps = _split(step_of(jnp.concatenate(logs)), [log.size for log in logs])
    spread = [jnp.ravel(jnp.broadcast_to(step, shape)) for step, shape in zip(steps, shapes)]
    return weights, jnp.concatenate(spread), paths, shapes


def _split(flat, sizes: list[int]) -> list:
    """`flat` cut into consecutive pieces of `sizes` by one split, whose gradient is one concatenation (cut
    by a static slice each, the gradient is a zero-padded copy of the whole array per piece, all summed).
    One training step at 176×144, batch 2 (30 steps each; by slices -> by the split): NeRV++ 92k in 70
    tensors noisy 109.6 -> 99.1 ms, straight-through 98.6 -> 83.9 ms; HNeRV 131k in 15 tensors noisy 50.7 ->
    42.8 ms, straight-through 47.8 -> 40.6 ms (its 6-bit QAT step: 41-43 ms)."""
    return jnp.split(flat, np.cumsum(sizes)[:-1].tolist()) if sizes else []


def quantized(variables, log_steps: dict, hard, key, progress, anneal: quantsim.Anneal):
    """(variables on the learned grid, Symbols) for a forward pass at `progress` (0..1): rounded straight
    through where `hard` (a bool, or traced: the "ste" mode, the file's own symbols), else noisy
    soft-rounded (the "noise" mode)."""
    temperature, a = anneal.at(progress)
    w, s, paths, shapes = _flat(variables, log_steps, _step)

    def noisy(w, s):
        q = quantsim.noisy_soft_round(w / s, key, temperature, a)
        return q * s, q

    def rounded(w, s):
        q = quantsim.round_ste(w / s)
        return q * s, q

    # One conditional on `hard` serves both modes, so that both phases of rate-distortion training share a
    # compiled step (one compile of ~3.5 s less per fit). It also keeps the quantizer a program of its
    # own: without it XLA's CPU fusion pulls the per-weight chain (random bits, soft rounding) into each
    # consumer of a bias, a broadcast over batch × pixels, and recomputes it per pixel. Measured on NeRV
    # 90k at 176×144, batch 2, value and gradient of the noisy step: 35 ms fused, 21 ms so (11.5 ms
    # without quantization); jax.lax.optimization_barrier does not stop it (the CPU pipeline removes
    # barriers before fusion).
    values, q = jax.lax.cond(jnp.asarray(hard), rounded, noisy, w, s)
    return unflatten(variables, Symbols(values, paths, shapes).as_dict()), Symbols(q, paths, shapes)


def file_symbols(variables, log_steps: dict) -> Symbols:
    """round(w / step) of every tensor: the symbols a file of these weights on these steps holds."""
    w, s, paths, shapes = _flat(variables, log_steps, _file_step)
    return Symbols(jnp.round(w / s), paths, shapes)


def bits(symbols) -> jax.Array:
    """Estimated payload bits of every tensor's symbols (Symbols, or {path: symbols}) under its own
    LAPLACE model."""
    if isinstance(symbols, dict):
        symbols = Symbols.of(symbols)
    if not symbols.values.size:
        return jnp.float32(0.0)
    segments = symbols.segments
    k = jax.lax.stop_gradient(jnp.round(symbols.values))
    support = rate.segment_support(k, segments)
    params = jax.tree.map(jax.lax.stop_gradient, rate.segment_fit_to_support(k, segments, support))
    return jnp.sum(rate.segment_symbol_bits(symbols.values, segments, params, support))


def file_of(config, variables, aux, rd_steps: dict, policy):
    """({path: QuantizedTensor}, file bytes) of a fitted state: tensors with rate-distortion steps
    (`rd_steps`, float32 as steps_of gives them) and those whose steps the family learned
    (ModelSpec.learned_steps, with its rate_symbols) on those, both coded with the LAPLACE model their
    rate was estimated with; the rest at the policy's bits."""
    spec = registry.spec_of(config)
    steps = {**rd_steps, **spec.learned_steps(config, variables, aux)}
    quantized = api.quantize_variables(variables, policy, steps)
    quantized = {p: dataclasses.replace(q, kinds=(LAPLACE,)) if p in steps else q for p, q in quantized.items()}
    return quantized, api.compress(config, quantized)


class Control:
    """The bpp controller's state, a pytree checkpointed with the fit: log λ and the file's side bits
    (header, entropy tables, steps), which the target leaves out of the payload the rate term steers.

    Each straight-through step moves log λ by a gain · log(estimated payload bits / target payload bits)
    (the gain is CONTROL_GAIN, or CONTROL_TRAVEL / steps where the straight-through phases run fewer than
    400 steps): an integral controller on the log rate, so λ grows while the estimate is over the target and
    shrinks while under. The estimate it follows is that of the phase's own symbols, the file's (same
    float16 steps, same rounding), whose payload it gives within 2 %, so a fit whose last steps sit on the
    target writes a file on it.

    A noisy phase holds the λ it starts with: its weights answer λ in their noisy estimate, not in the
    rounded one, which moved little while λ grew, and the λ so reached then crushed the rate as soon as
    rounding took over (carphone HNeRV 150k at 0.2 bpp: the rounded estimate fell from 0.265 to 0.114 bpp in
    the first 100 straight-through steps and ended over 10 % under the target; landed by scaling the steps,
    28.41 dB). Held, the file lands with no scaling (29.16 dB @0.1925), and NeRV (0.043: 26.76 dB @0.0414,
    0.2: 29.30 @0.1943) and HNeRV 113k (0.2: 28.70 @0.1983) come out as when the noisy phase moved λ."""

    @staticmethod
    def zero() -> dict:
        return {"log_lambda": jnp.float32(0.0), "side_bits": jnp.float32(0.0)}


# Programs that run once per fit (initialisation, train.loop; the controller's start, below) are compiled
# without LLVM optimisation: 4-5x faster to compile (random initialisers are slow to compile on CPU), and they
# run in milliseconds either way.
ONCE_OPTIONS = {"xla_backend_optimization_level": 0}

# The payload estimate of a file of this state as one program: run op by op, its per-segment ops each
# compiled on first use (measured on carphone, NeRV 90k: the controller's start, file write included,
# 8.6 s op by op, 2.4 s as one program); under ONCE_OPTIONS HNeRV 131k on carphone 4.5 s -> 2.7 s to compile
# (two fits running beside it), the same bits.
_file_bits = jax.jit(lambda variables, log_steps: bits(file_symbols(variables, log_steps)),
                     compiler_options=ONCE_OPTIONS)


def start_control(config, variables, aux, log_steps: dict, policy, mse: float, phase) -> dict:
    """The controller at the start of the first phase with a target bpp: λ from the phase's rate weight,
    or (0) CONTROL_START · MSE / bpp; the side bits from a file of this state."""
    _, data = file_of(config, variables, aux, steps_of(log_steps), policy)
    side_bits = max(8.0 * len(data) - float(_file_bits(variables, log_steps)), 0.0)
    weight = phase.rate_weight if phase.rate_weight > 0 else CONTROL_START * mse / phase.target_bpp
    weight = min(max(weight, LAMBDA_RANGE[0]), LAMBDA_RANGE[1])
    return {"log_lambda": jnp.float32(math.log(weight)), "side_bits": jnp.float32(side_bits)}


def controlled(control: dict, estimate, target_bits, n_steps) -> dict:
    """One controller step (inside the jitted training step) from this step's estimated payload bits, in a
    fit whose phases with the target run `n_steps` steps together, towards CONTROL_AIM · `target_bits`."""
    payload = jnp.maximum(CONTROL_AIM * target_bits - control["side_bits"], 1.0)
    error = jnp.log(jnp.maximum(jax.lax.stop_gradient(estimate), 1.0)) - jnp.log(payload)
    gain = jnp.maximum(CONTROL_GAIN, CONTROL_TRAVEL / jnp.maximum(n_steps, 1))
    log_lambda = control["log_lambda"] + gain * jnp.clip(error, -CONTROL_MAX_MOVE, CONTROL_MAX_MOVE)
    lo, hi = (math.log(x) for x in LAMBDA_RANGE)
    return {"log_lambda": jnp.clip(log_lambda, lo, hi), "side_bits": control["side_bits"]}
