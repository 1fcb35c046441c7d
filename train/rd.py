"""Rate–distortion training of any family's stored tensors: learned quantization steps and their estimated bits.

Every stored tensor w gets a learned step per output channel (log-parametrized, as the file stores one
float16 step per channel) and is trained on w_hat = step · q, where the symbols q are
  - "noise": q = noisy_soft_round(w / step) with the soft-rounding temperature and the Kumaraswamy noise
    annealed over the phase (train.quantsim; NVRC's schedule by default), then
  - "ste": q = round(w / step) straight through (the file's own symbols in the forward pass).
The rate is the code length of q under the file's LAPLACE model (codec.rate) at the parameters that
minimise the rounded symbols' code length on their support (codec.rate.fit_to_support, what the encoder's
own fit finds), both held constant in a step: at that optimum the
code length's derivative in the parameters is zero, so nothing is lost to first order, and the estimate
is the table the encoder can write for those symbols.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from codec import rate
from codec.params import flatten, unflatten
from codec.quant import channel_axes
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


def quantized(variables, log_steps: dict, mode: str, key, progress, anneal: quantsim.Anneal):
    """(variables on the learned grid, {path: symbols}) for a forward pass in `mode` at `progress` (0..1)."""
    flat = dict(flatten(variables))
    temperature, a = anneal.at(progress)
    out, symbols = {}, {}
    for i, (p, w) in enumerate(sorted(flat.items())):
        s = _step(log_steps[p])
        x = w / s
        q = quantsim.noisy_soft_round(x, jax.random.fold_in(key, i), temperature, a) if mode == "noise" \
            else quantsim.round_ste(x)
        out[p], symbols[p] = q * s, q
    return unflatten(variables, out), symbols


def bits(symbols: dict) -> jax.Array:
    """Estimated payload bits of every tensor's symbols under its own LAPLACE model."""
    total = jnp.float32(0.0)
    for q in symbols.values():
        if q.size == 0:
            continue
        k = jax.lax.stop_gradient(jnp.round(q))
        support = (k.min(), k.max())
        params = jax.tree.map(jax.lax.stop_gradient, rate.fit_to_support(k, support))
        total = total + rate.bits(q, params, support=support)
    return total
