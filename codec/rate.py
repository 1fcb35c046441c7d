"""The differentiable code length of symbols under the file's LAPLACE entropy model (FORMAT.md §7.2), in JAX.

The file's LAPLACE table is a two-sided geometric distribution with a spike at zero:
    p(0) = p0,    p(k ≠ 0) = (1 − p0) · θ^|k| / Z,    Z = Σ_{k≠0} θ^|k| = 2θ / (1 − θ)
with θ = n_theta / 65536 and p0 = n_p0 / 65536. Training needs this mass at real-valued (soft-rounded
or noisy) symbols x, so it is written as a continuous density integrated over the unit cell
[x − ½, x + ½]; at an integer x that integral is exactly p(x) above. The density:
  - outside the zero cell, |y| > ½: a Laplace shape, P(Y > y) = (1 − p0)/2 · θ^(y − ½) for y ≥ ½
    (and its mirror image), so the cell of k ≥ 1 holds (1 − p0)/2 · θ^(k−1) · (1 − θ) = p(k);
  - inside the zero cell, |y| ≤ ½: the same shape θ^|y|, scaled to hold p0 in all.
With p0 = 1 − √θ (the Laplace's own mass in the zero cell) the density is exactly Laplace(0, b) with
b = −1/ln θ, the discretized Laplace of the project's older rate estimate (`from_scale`); other p0 add
or remove a spike at zero.

Where the estimate departs from the file's integer table, and by how much:
  - support: the table only covers [lo, hi] = [min, max] of the tensor's symbols, so its nonzero
    symbols share the mass the infinite distribution puts outside it. With `support=None` the estimate
    ignores this and charges every nonzero symbol −log2(kept fraction of the tail) bits more: for a
    symmetric Laplace-like tensor the tail past its largest |k| is about 1/n of each side's mass (n
    nonzero symbols), a few bits per tensor (measured 0.3 to 10 bits on 1,000 to 10,000 symbols: at
    most 0.1 % of payloads over 2,000 bits, 2.7 % of a 313-bit one); for a one-sided tensor (all
    symbols > 0) one whole bit per symbol. With `support=(lo, hi)` it renormalises as the table does.
  - the +1 floor: every table entry first gets a count of 1 out of 2^24, so the table's mass is
    2^-24 + (1 − size·2^-24) · p(k). With `support` the estimate applies the same floor (an outlier
    costs at most 24 bits, as in the file); without it, a symbol with p(k) < 2^-24 costs more than in
    the file (−log2 p(k) instead of about 24 bits) and every other symbol up to 1.45·size·2^-24 less.
  - the spike and the fixed point: the table floors the spike to free·n_p0/65536 counts and rounds the
    nonzero shares to integers (largest remainder), so each entry is within 2 counts out of 2^24 of
    its exact mass: a symbol whose entry holds c counts differs by at most log2(1 + 2/c) bits. Its
    powers of θ are truncated at 2^-38 each (in all < 1/(1 − θ) units lost per power), which matters
    only for a support far from zero, where θ^min|k| nears 2^-38: there the table gives nearly all
    the mass to the symbol nearest zero and the estimate does not follow it.
  - when zero is not in the support the table ignores n_p0, and so does the estimate with `support`.
The parameters are clamped to the numerators the encoder writes, n_theta and n_p0 in 1..65535 (it
writes n_p0 = 0 for a tensor without zeros, read here as 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from codec.entropy import LAPLACE, PRECISION, EntropyModel, ideal_bits
from codec.vecmath import expm1

ONE = 1 << 16   # the file's fixed-point 1.0 for θ and p0 (u16 numerators)
N_MIN, N_MAX = 1, ONE - 1   # the u16 numerators the encoder writes (n_p0 = 0 only without zeros)
LOGIT_MIN, LOGIT_MAX = math.log(N_MIN / (ONE - N_MIN)), math.log(N_MAX / (ONE - N_MAX))   # ±11.09
_LN2 = math.log(2.0)
_TINY = float(np.finfo(np.float32).tiny)   # keeps log() finite where a mass underflows to 0
Support = tuple[ArrayLike, ArrayLike] | None   # a tensor's (lo, hi) = (min, max) symbol, or None: unbounded


class LaplaceParams(NamedTuple):
    """Unconstrained parameters: θ = sigmoid(theta_logit), p0 = sigmoid(p0_logit); any reals are valid.

    θ ∈ (0, 1) is the ratio p(k + 1) / p(k) of neighbouring nonzero symbols, p0 the mass of 0. Fields
    are arrays of any broadcastable shape (one model per tensor, or per row or column).
    """

    theta_logit: jax.Array
    p0_logit: jax.Array


def _clamped(logit: jax.Array) -> jax.Array:
    """The logit clamped to what the file can store, straight through: past a bound the gradient is the
    bound's own, which points back inside whenever the data lie inside, so a parameter is never stuck
    there; when the data sit at the bound (all |k| = 1, or no zeros) it is ~2^-16 per symbol, so the
    logit barely drifts."""
    logit = jnp.asarray(logit, jnp.float32)
    return logit + jax.lax.stop_gradient(jnp.clip(logit, LOGIT_MIN, LOGIT_MAX) - logit)


def log_theta(params: LaplaceParams) -> tuple[jax.Array, jax.Array]:
    """(ln θ, ln(1 − θ)) of the clamped θ, each accurate for θ near 0 and near 1."""
    u = _clamped(params.theta_logit)
    return jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u)


def log_p0(params: LaplaceParams) -> tuple[jax.Array, jax.Array]:
    """(ln p0, ln(1 − p0)) of the clamped p0."""
    v = _clamped(params.p0_logit)
    return jax.nn.log_sigmoid(v), jax.nn.log_sigmoid(-v)


def from_file(n_theta: int, n_p0: int) -> LaplaceParams:
    """The params of the file's (n_theta, n_p0): θ = n_theta/65536, p0 = n_p0/65536 (n_p0 = 0 read as 1,
    the smallest spike the estimate allows: 2^-16 of mass moves from the nonzero symbols to 0)."""
    n_theta, n_p0 = (min(max(int(n), N_MIN), N_MAX) for n in (n_theta, n_p0))
    def logit(n: int) -> jax.Array:
        return jnp.float32(math.log(n / (ONE - n)))
    return LaplaceParams(logit(n_theta), logit(n_p0))


def from_scale(b: ArrayLike) -> LaplaceParams:
    """A plain Laplace(0, b) discretized on unit cells: θ = e^(−1/b), p0 = 1 − e^(−1/(2b)) (no extra spike).

    The file holds it unclamped for 0.0902 ≤ b ≤ 65535 (θ = e^(−1/b) within 2^-16 .. 1 − 2^-16).
    """
    c = 1.0 / jnp.asarray(b, jnp.float32)
    # logit(e^-c) = -ln(e^c - 1) = -c - ln(1 - e^-c) and logit(1 - e^-c/2) = c/2 + ln(1 - e^-c/2): finite for
    # large c (a narrow Laplace) and exact for tiny c (a wide one), where 1 - e^-c would cancel.
    return LaplaceParams(-c - jnp.log(-jnp.expm1(-c)), 0.5 * c + jnp.log(-jnp.expm1(-0.5 * c)))


def to_file(params: LaplaceParams) -> tuple[int, int]:
    """(n_theta, n_p0) for the file: round(65536·θ), round(65536·p0), each clamped to 1..65535.

    One scalar model (a file stores one per tensor); computed in float64 so that
    to_file(from_file(n, m)) == (n, m) for every stored pair.
    """
    def numerator(logit) -> int:
        u = np.asarray(logit, np.float64)
        if u.size != 1:
            raise ValueError(f"a file stores one LAPLACE model per tensor, got params of shape {u.shape}")
        u = float(np.clip(u.reshape(()), LOGIT_MIN, LOGIT_MAX))
        return min(max(round(ONE / (1.0 + math.exp(-u))), N_MIN), N_MAX)
    return numerator(params.theta_logit), numerator(params.p0_logit)


def _log_kept(ln_theta: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """ln of the fraction of the nonzero mass (Z) that falls on nonzero symbols of [lo, hi]; −inf if none.

    The symbols k1..k2 ≥ 1 hold Σ θ^k / Z = ½ · θ^(k1−1) · (1 − θ^(k2−k1+1)); likewise the negative
    side.
    """
    def side(first: jax.Array, last: jax.Array) -> jax.Array:
        count = last - first + 1
        safe = jnp.maximum(count, 1.0)   # both branches of `where` are differentiated: keep this one finite
        value = -_LN2 + (first - 1.0) * ln_theta + jnp.log(-jnp.expm1(safe * ln_theta))
        return jnp.where(count >= 1, value, -jnp.inf)
    return jnp.logaddexp(side(jnp.maximum(lo, 1.0), hi), side(jnp.maximum(-hi, 1.0), -lo))


def _weights(params: LaplaceParams, support: Support) -> tuple[jax.Array, jax.Array]:
    """(zero cell's weight, ln of the tail's weight): the masses by which the zero cell's and the tail's
    normalised shapes are multiplied, renormalised to `support` as the table is."""
    ln_theta, _ = log_theta(params)
    ln_p0, ln_q0 = log_p0(params)
    if support is None:
        return jnp.exp(ln_p0), ln_q0
    lo, hi = (jax.lax.stop_gradient(jnp.asarray(s, jnp.float32)) for s in support)
    has_zero = (lo <= 0) & (hi >= 0)
    no_tail = (lo == 0) & (hi == 0)   # support {0}: zero takes all the mass
    kept = _log_kept(ln_theta, lo, jnp.where(no_tail, 1.0, hi))   # a finite stand-in keeps gradients finite
    tail = jnp.where(has_zero, ln_q0, 0.0) - kept
    centre = jnp.where(has_zero, jnp.exp(ln_p0), 0.0)
    return jnp.where(no_tail, 1.0, centre), jnp.where(no_tail, -jnp.inf, tail)


class _Terms(NamedTuple):
    """What `_cell_bits` needs of a model, each an array of the models' shape (`_model_terms`)."""

    ln_theta: jax.Array
    ln_1m_theta: jax.Array       # ln(1 − θ)
    zero_weight: jax.Array       # the zero cell's weight over 2(1 − √θ)
    sqrt_theta: jax.Array
    one_minus_sqrt: jax.Array    # 1 − √θ, to full precision near θ = 1
    tail_weight: jax.Array
    ln_tail: jax.Array
    scale: jax.Array | None      # the table's 1 − size·2^-24 (None: no support, no floor)


def _near_mass(a: jax.Array, t: _Terms) -> jax.Array:
    """Mass of [a − ½, a + ½] for 0 ≤ a ≤ 1: part of the zero cell plus part of the first tail cell.

    Zero cell (shape θ^|y|, mass 1): from a − ½ to ½ it holds (θ^(a−½) − θ^½) / (2(1 − √θ)) for a ≥ ½
    and (2 − θ^(½−a) − θ^½) / (2(1 − √θ)) below; tail (mass 1): from ½ to a + ½ it holds (1 − θ^a) / 2.
    Written with expm1 so that θ near 1 (ln θ ~ −2^-16) loses no precision; the factors that depend on
    the model alone come in `t`, computed once per model.
    """
    upper_half = a >= 0.5
    e = expm1(jnp.where(upper_half, a - 1.0, 0.5 - a) * t.ln_theta)
    in_zero_cell = jnp.where(upper_half, t.sqrt_theta * e, t.one_minus_sqrt - e)
    return t.zero_weight * in_zero_cell - 0.5 * t.tail_weight * expm1(a * t.ln_theta)


def symbol_bits(x: ArrayLike, params: LaplaceParams, support: Support = None) -> jax.Array:
    """−log2 of the model's mass on [x − ½, x + ½] for each element of x (float32, x's shape).

    `support`: None for the infinite distribution, or (lo, hi), the file's support (python ints or
    traced scalars, not differentiated), to renormalise and floor the masses as the table does.
    Finite value and gradient for every real x (|x| of thousands included) and every parameter.
    """
    return _cell_bits(jnp.asarray(x, jnp.float32), _model_terms(params, support))


def _model_terms(params: LaplaceParams, support: Support) -> _Terms:
    """The `_Terms` of a model, per model (any shape)."""
    ln_theta, ln_1m_theta = log_theta(params)
    centre, ln_tail = _weights(params, support)
    one_minus_sqrt = -jnp.expm1(0.5 * ln_theta)
    near = (ln_theta, ln_1m_theta, centre / (2.0 * one_minus_sqrt), jnp.exp(0.5 * ln_theta), one_minus_sqrt,
            jnp.exp(ln_tail), ln_tail)
    if support is None:
        return _Terms(*near, None)
    lo, hi = (jax.lax.stop_gradient(jnp.asarray(s, jnp.float32)) for s in support)
    return _Terms(*near, 1.0 - (hi - lo + 1.0) * 2.0 ** -PRECISION)


def _cell_bits(x: jax.Array, t: _Terms) -> jax.Array:
    """`symbol_bits` of x from its model's `_model_terms` (broadcast against x)."""
    a = x * jnp.sign(x)   # |x| whose slope at 0 is 0 (jnp.abs has 1): the symmetric model's own slope there
    near = _near_mass(jnp.minimum(a, 1.0), t)
    # a ≥ 1: the cell lies in the tail, mass = tail · ½ θ^(a−1) (1 − θ), in log space for large a.
    far = t.ln_tail - _LN2 + (jnp.maximum(a, 1.0) - 1.0) * t.ln_theta + t.ln_1m_theta
    if t.scale is None:
        ln_mass = jnp.where(a < 1.0, jnp.log(jnp.maximum(near, _TINY)), far)
    else:   # the table's +1 floor: 2^-24 + (1 − size·2^-24) · p. A mass exp(far) that underflows is far
        # below the floor, which then holds the whole mass (as in the file)
        mass = jnp.where(a < 1.0, jnp.maximum(near, 0.0), jnp.exp(jnp.minimum(far, 0.0)))
        ln_mass = jnp.log(t.scale * mass + 2.0 ** -PRECISION)
    return -ln_mass / _LN2


def bits(x: ArrayLike, params: LaplaceParams, support: Support = None) -> jax.Array:
    """Total code length in bits of all symbols x (any shape): the sum of `symbol_bits`."""
    return jnp.sum(symbol_bits(x, params, support))


def fit(symbols: ArrayLike) -> LaplaceParams:
    """Maximum-likelihood params of integer symbols (any shape) under the infinite distribution, clamped.

    p0 = zeros / count; the nonzero |k| are geometric on 1, 2, ... with ratio θ, whose ML value is
    θ = 1 − n / Σ|k| over the n nonzero symbols. Given real x, the symbols are round(x) for the counts
    and |x| for the sum, so θ is differentiable in x (through the mean magnitude); the counts are not.
    """
    x = jnp.asarray(symbols, jnp.float32)
    nonzero = jnp.round(x) != 0
    n_nonzero = jnp.sum(nonzero, dtype=jnp.float32)
    excess = jnp.sum(jnp.where(nonzero, jnp.abs(x), 0.0)) - n_nonzero   # Σ(|k| − 1)
    return _fit_of_sums(n_nonzero, x.size - n_nonzero, excess)


def _fit_of_sums(n_nonzero: jax.Array, n_zero: jax.Array, excess: jax.Array) -> LaplaceParams:
    """`fit` from its three sums (arrays of any shape: a model each)."""
    def log_ratio(num: jax.Array, den: jax.Array) -> jax.Array:   # clamped ln(num/den); k/0 lands on a bound
        ratio = jnp.log(jnp.maximum(num, _TINY)) - jnp.log(jnp.maximum(den, _TINY))
        return jnp.clip(ratio, LOGIT_MIN, LOGIT_MAX)
    # logit θ = ln(θ / (1 − θ)) = ln(Σ(|k| − 1) / n); logit p0 = ln(zeros / nonzeros)
    return LaplaceParams(log_ratio(excess, n_nonzero), log_ratio(n_zero, n_nonzero))


def file_model(symbols: np.ndarray, params: LaplaceParams) -> EntropyModel:
    """The LAPLACE model a file would store for these integer symbols: support [min, max], `to_file` params."""
    x = np.asarray(symbols).reshape(-1)
    lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
    return EntropyModel(LAPLACE, lo, hi, to_file(params))


def file_bits(symbols: np.ndarray, params: LaplaceParams) -> float:
    """The exact payload bits of integer symbols under `file_model` (codec.entropy's integer table)."""
    return ideal_bits(symbols, file_model(symbols, params))


def fit_to_support(symbols: ArrayLike, support: tuple[ArrayLike, ArrayLike], newton_steps: int = 4) -> LaplaceParams:
    """The params of integer symbols that minimise their code length on the table's `support` (lo, hi).

    `fit`'s θ is the maximum-likelihood value of the untruncated geometric; the file's table renormalises
    θ^|k| to [lo, hi], whose best θ is larger where the symbols fill their support (nearly uniform
    symbols: measured 1.5-3 % fewer bits on 6-bit tensors). p0 stays zeros / count, its ML value on any
    support (the spike is not renormalised). On the support the nonzero symbols cost, up to terms free of
    θ, −(n·ln(1 − θ) + S·ln θ − n·ln kept(θ)) nats (n nonzero symbols, S = Σ(|k| − 1), kept: the share of
    the tail inside [lo, hi]), a function of three numbers: θ's logit takes `newton_steps` Newton steps on
    it from `fit`'s value, each kept only where it lowers it. (The table's +1 floor, which only changes
    what the rarest symbols cost, is left out of the fit.)
    """
    k = jnp.round(jnp.asarray(symbols, jnp.float32))
    nonzero = k != 0
    n = jnp.sum(nonzero, dtype=jnp.float32)
    excess = jnp.sum(jnp.where(nonzero, jnp.abs(k), 0.0)) - n
    return _fit_of_sums_to_support(n, k.size - n, excess, support, newton_steps)


def _fit_of_sums_to_support(n, n_zero, excess, support, newton_steps: int) -> LaplaceParams:
    """`fit_to_support` from `fit`'s three sums and the support (arrays of one shape: a model each).
    The cost is a sum of one term per model, so its gradient is each model's own derivative and the
    gradient of that gradient's sum each model's own second derivative."""
    start = _fit_of_sums(n, n_zero, excess)
    lo, hi = (jnp.asarray(b, jnp.float32) for b in support)

    def costs(u):
        ln_theta, ln_1m_theta = jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u)
        return -(n * ln_1m_theta + excess * ln_theta - n * _log_kept(ln_theta, lo, hi))
    grad = jax.grad(lambda u: jnp.sum(costs(u)))
    curvature = jax.grad(lambda u: jnp.sum(grad(u)))
    def newton(_, u):
        h = curvature(u)
        step = jnp.where(h > 0, grad(u) / jnp.maximum(h, _TINY), 0.0)
        candidate = jnp.clip(u - step, LOGIT_MIN, LOGIT_MAX)
        return jnp.where(costs(candidate) < costs(u), candidate, u)
    # a loop, not unrolled: one compiled body instead of `newton_steps` copies
    u = jax.lax.fori_loop(0, newton_steps, newton, jnp.clip(start.theta_logit, LOGIT_MIN, LOGIT_MAX))
    return LaplaceParams(u, start.p0_logit)


class Segments(NamedTuple):
    """Many tensors' symbols laid end to end in one flat array: `sizes[i]` elements of tensor i (each
    at least 1), in order. Static (python ints), so it shapes a jitted program without being traced.

    Per-segment values reach their elements as broadcasts joined end to end rather than a gather by
    segment id: an elementwise loop that gathers is not vectorized on XLA's CPU backend (measured on
    NeRV's 44k symbols in 14 tensors: the code lengths 2.6 ms with gathered terms, 0.73 ms spread).
    Per-segment sums and extremes are static slices reduced where there are few segments, and
    scatters (jax.ops.segment_sum/max) beyond SLICED_SEGMENTS: a scatter is a serial loop on CPU, but
    each slice adds to the compile. Value and gradient of the code length of 84k symbols (jitted): NeRV's
    14 tensors 1.8 s to compile and 0.85 ms to run by slices, 0.9 s and 1.6 ms by scatters; NeRV++'s 70
    tensors 4.9 s and 1.1 ms by slices, 1.6 s and 1.6 ms by scatters (a fit runs it about two thousand
    times). Both are exact, so alike, on the integer-valued arrays they are given here.
    """

    sizes: tuple[int, ...]

    def _ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.sizes), dtype=np.int32), self.sizes)

    def _reduce(self, reducer, scatter, x: jax.Array) -> jax.Array:
        if len(self.sizes) > SLICED_SEGMENTS:
            flat = x.reshape(-1, x.shape[-1])
            ids, n = self._ids(), len(self.sizes)
            out = jax.vmap(lambda row: scatter(row, ids, n, indices_are_sorted=True))(flat)
            return out.reshape(*x.shape[:-1], n)
        parts, first = [], 0
        for n in self.sizes:
            parts.append(reducer(x[..., first:first + n], axis=-1))
            first += n
        return jnp.stack(parts, axis=-1)

    def sum(self, x: jax.Array) -> jax.Array:
        """Each segment's sum over x's last axis: (..., S) for x (..., N); exact for integer values."""
        return self._reduce(jnp.sum, jax.ops.segment_sum, jnp.asarray(x))

    def max(self, x: jax.Array) -> jax.Array:
        """Each segment's maximum over x's last axis: (..., S) for x (..., N)."""
        return self._reduce(jnp.max, jax.ops.segment_max, jnp.asarray(x))

    def spread(self, values: jax.Array) -> jax.Array:
        """Each segment's value (`values[..., i]`) repeated over its elements: (..., N) for (..., S)."""
        values = jnp.asarray(values)
        return jnp.concatenate([jnp.broadcast_to(values[..., i:i + 1], (*values.shape[:-1], n))
                                for i, n in enumerate(self.sizes)], axis=-1)


SLICED_SEGMENTS = 24   # Segments sums and extremes by static slices up to this many segments, else scatters


def segment_support(symbols: ArrayLike, segments: Segments) -> tuple[jax.Array, jax.Array]:
    """(lo, hi): each segment's (min, max) of the rounded flat symbols, float32 arrays of a value each."""
    k = jnp.round(jnp.asarray(symbols, jnp.float32))
    high = segments.max(jnp.stack([-k, k]))
    return -high[0], high[1]


def segment_fit_to_support(symbols: ArrayLike, segments: Segments, support: tuple[ArrayLike, ArrayLike],
                           newton_steps: int = 4) -> LaplaceParams:
    """`fit_to_support` of every segment of the flat symbols at once: params of a value per segment."""
    k = jnp.round(jnp.asarray(symbols, jnp.float32))
    nonzero = k != 0
    n, magnitude = segments.sum(jnp.stack([nonzero.astype(jnp.float32), jnp.abs(k)]))
    size = jnp.asarray(segments.sizes, jnp.float32)
    return _fit_of_sums_to_support(n, size - n, magnitude - n, support, newton_steps)


def segment_symbol_bits(x: ArrayLike, segments: Segments, params: LaplaceParams,
                        support: tuple[ArrayLike, ArrayLike]) -> jax.Array:
    """`symbol_bits` of each element of the flat x under its own segment's model on its support
    (`params` and `support`: a value per segment): the model's terms are computed once per segment and
    spread to the elements."""
    terms = segments.spread(jnp.stack(_model_terms(params, support)))
    return _cell_bits(jnp.asarray(x, jnp.float32), _Terms(*terms))
