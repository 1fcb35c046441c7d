"""Relative-entropy coding: the shared normals, block planning, KL, and that chosen samples follow the law
of a fixed-budget ordered-Gumbel selection (derived here independently of codec/rec.py)."""

import functools
import hashlib
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import rec

REPO = pathlib.Path(__file__).resolve().parents[2]
N = rec.CANDIDATES


def fmix32_int(h: int) -> int:
    """murmur3's fmix32 on a Python int, masking to 32 bits by hand."""
    m = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


# ---------------------------------------------------------------------------------------------- the table

def test_normal_table_is_monotone_symmetric_and_matches_scipy_ndtri():
    z = rec.normal_table()
    assert z.dtype == np.float32 and z.shape == (N,) and not z.flags.writeable
    assert np.all(np.diff(z) > 0)
    np.testing.assert_array_equal(z, -z[::-1])
    ref = scipy.special.ndtri((np.arange(N) + 0.5) / N).astype(np.float32)   # float64 → float32, like the table
    assert np.all(np.abs(z - ref) <= np.spacing(np.abs(ref)))                  # at most one float32 ulp apart


def test_normal_table_moments_are_those_of_the_midpoint_discretized_normal():
    z = rec.normal_table().astype(np.float64)
    assert abs(z.mean()) < 1e-12   # symmetric pairs cancel; float64 summing error ≤ 65536 · 4.33 · 1.1e-16
    # The table is the midpoint rule for E[Z²] = ∫_0^1 Φ⁻¹(u)² du on 2^16 cells. Cell i (z-bounds b_i, b_{i+1})
    # holds ∫ z² φ = G(b_{i+1}) − G(b_i) with G(z) = Φ(z) − z φ(z), so the table falls short of 1 by
    # Σ_i [G(b_{i+1}) − G(b_i) − z_i²/N] > 0 (Φ⁻¹² is convex). The 256 outermost cells a side carry all of
    # it but the interior midpoint error, (1/(24 N²)) |Δf'| ≈ 3e-8 for f = Φ⁻¹² (f' = 2z/φ(z) ≈ −1400 at
    # the 256th cell); float32 rounding of the z_i moves the mean square by < 1e-9.
    cells = 256
    b = scipy.special.ndtri(np.arange(cells + 1) / N)
    with np.errstate(invalid="ignore"):   # b_0 = −∞: G(−∞) = 0
        g = scipy.stats.norm.cdf(b) - np.nan_to_num(b * scipy.stats.norm.pdf(b))
    mid = scipy.special.ndtri((np.arange(cells) + 0.5) / N)
    deficit = 2 * np.sum(np.diff(g) - mid**2 / N)
    assert 1e-5 < deficit < 3e-5   # truncating at ±4.32 and the coarse tail cells lose ~2e-5 of the variance
    assert abs(np.mean(z**2) - (1 - deficit)) < 5e-8

# -------------------------------------------------------------------------------------------- the normals

def test_normals_hash_matches_a_hand_computed_value():
    seed, element, candidate = 3_000_000_019, 123_456, 54_321
    key = fmix32_int(seed)
    h = fmix32_int((fmix32_int(element ^ key) + candidate * 0x9E3779B9) & 0xFFFFFFFF)
    expected = np.float32(scipy.special.ndtri(((h >> 16) + 0.5) / N))
    assert rec.normals(seed, np.array([element]), np.array([candidate]))[0] == expected


def test_normals_jax_equals_normals_bit_for_bit():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 2**32, 500, dtype=np.uint64).astype(np.uint32)
    cand = rng.integers(0, N, 300)
    for seed in (0, 7, 2**32 - 1):
        want = rec.normals(seed, ids[:, None], cand[None, :])
        got = jax.jit(rec.normals_jax)(np.uint32(seed), ids[:, None], cand[None, :])
        assert want.shape == (500, 300) and got.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(got).view(np.uint32), want.view(np.uint32))


def test_normals_look_standard_normal_and_independent():
    draws = rec.normals(11, np.arange(400)[:, None], np.arange(500)[None, :]).astype(np.float64)
    assert scipy.stats.kstest(draws.ravel(), "norm").pvalue > 1e-3   # 2e5 draws; the 2^-16 grid moves D by < 2e-5
    streams = rec.normals(11, np.arange(40)[:, None], np.arange(N)[None, :]).astype(np.float64)
    r = np.corrcoef(streams)[np.triu_indices(40, 1)]           # 780 element pairs, each r ~ N(0, 1/65536)
    assert np.abs(r).max() < 5 / 256
    lag = np.corrcoef(streams[:, :-1].ravel(), streams[:, 1:].ravel())[0, 1]   # neighbouring candidates
    assert abs(lag) < 4 / np.sqrt(streams.size)
    other_seed = rec.normals(12, np.arange(40)[:, None], np.arange(N)[None, :]).astype(np.float64)
    assert abs(np.corrcoef(streams.ravel(), other_seed.ravel())[0, 1]) < 4 / np.sqrt(streams.size)


# ------------------------------------------------------------------------------------------- plan_blocks

def plan_blocks_reference(kl, budget, max_dims):
    """Element by element: close the block when the next element would overflow its budget or its size."""
    starts, total, count = [0], 0, 0
    for i, k in enumerate(kl):
        if count and (total + k > budget or count == max_dims):
            starts.append(i)
            total, count = 0, 0
        total, count = total + k, count + 1
    if len(kl):
        starts.append(len(kl))
    return starts


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=80), st.integers(0, 100), st.integers(1, 12))
def test_plan_blocks_matches_the_per_element_reference(kl, budget, max_dims):
    starts = rec.plan_blocks(np.array(kl, np.int64), budget, max_dims)
    assert starts.dtype == np.int64
    assert starts.tolist() == plan_blocks_reference(kl, budget, max_dims)


def test_plan_blocks_on_a_clip_sized_input_fills_each_block_to_its_budget():
    rng = np.random.default_rng(1)
    kl = rng.geometric(1 / 2500, 3_000_000).astype(np.int64)   # ~2e4 blocks of 16 bits in 1/1024-bit units
    kl[::1000] = 100_000
    budget = 16 * 1024 * 25
    starts = rec.plan_blocks(kl, budget, 300)
    assert starts[0] == 0 and starts[-1] == kl.size and np.all(np.diff(starts) > 0)
    sums = np.add.reduceat(kl, starts[:-1])
    sizes = np.diff(starts)
    assert np.all((sums <= budget) | (sizes == 1)) and sizes.max() <= 300
    full = sizes[:-1] == 300
    next_kl = kl[starts[1:-1]]
    assert np.all(full | (sums[:-1] + next_kl > budget))   # a block closes only when the next would not fit
    assert 1.5e4 < starts.size < 3e4


# ------------------------------------------------------------------------------------------------ kl_bits

@pytest.mark.parametrize("qm, qs, pm, ps", [(0.3, 0.1, 0.0, 1.0), (-2.0, 0.5, 1.0, 0.7), (1.0, 2.0, 1.0, 0.5),
                                            (0.0, 1.0, 0.0, 1.0)])
def test_kl_bits_matches_numerical_integration(qm, qs, pm, ps):
    q, p = scipy.stats.norm(qm, qs), scipy.stats.norm(pm, ps)
    integrand = lambda x: q.pdf(x) * (q.logpdf(x) - p.logpdf(x))
    nats, _ = scipy.integrate.quad(integrand, qm - 40 * qs, qm + 40 * qs, epsabs=1e-13, limit=200)
    assert rec.kl_bits(qm, qs, pm, ps) == pytest.approx(nats / np.log(2), rel=1e-9, abs=1e-12)
    on_device = rec.kl_bits(jnp.float32(qm), jnp.float32(qs), jnp.float32(pm), jnp.float32(ps))
    assert isinstance(on_device, jax.Array)
    assert float(on_device) == pytest.approx(nats / np.log(2), rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------- the law of the selected samples

def selection_density_ratio(log_w, weight, n):
    """q̃(x)/q(x) at sample points x_j with log weights log_w = log q/p (nats), for the fixed-budget rule;
    `weight` ∝ q/r makes the points (drawn from r) stand for q.

    Candidate k gets the k-th arrival time Γ_k of a unit Poisson process (G_k = −log Γ_k) and wins iff
    Γ_k / w_k is the smallest. Given Γ_{n+1} = T the first n arrivals are i.i.d. U(0, T), and the candidates
    are i.i.d. from p, so candidate 1 at x wins with probability w ∫_0^{1/w} ψ(v)^{n−1} dv, ψ(v) = E_p[(1 −
    v W)_+] = 1 − E_q[min(1/W, v)]. Hence q̃ = q · h(w), h(w) = ∫_0^{n/w} (1 − E_q[min(n/W, u)]/n)^{n−1} du
    (u = n v), every term an expectation under q."""
    u = np.concatenate([[0.0], np.geomspace(1e-6, 1e6 * n, 20_000)])
    t = n * np.exp(np.minimum(-log_w, np.log(1e6)))   # n / w, capped at u's end (only min(t, u) is used)
    order = np.argsort(t)
    t_sorted, w_sorted = t[order], weight[order] / weight.sum()
    k = np.searchsorted(t_sorted, u)
    below = np.concatenate([[0.0], np.cumsum(w_sorted * t_sorted)])[k]
    mass_above = 1.0 - np.concatenate([[0.0], np.cumsum(w_sorted)])[k]
    f = np.exp((n - 1) * np.log1p(-np.minimum((below + u * mass_above) / n, 1.0)))
    integral = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(u))])
    return np.interp(t, u, integral)


# Three block kinds, each 8 elements with the same standardized posterior N(mu, s²) against N(0, 1):
# KL per element 1, 2 or 3 bits, so blocks of 8, 16 or 24 bits coded with 2^16 candidates.
DIMS = 8
BLOCK_KINDS = {"8 bits": (0.5, 1.0), "16 bits": (0.3, 2.0), "24 bits": (0.2, 3.0)}   # (s, bits per element)
BLOCKS_PER_KIND = 384


def posterior_mean(s, bits):
    """mu with KL(N(mu, s²) ‖ N(0, 1)) = bits: log(1/s) + (s² + mu²)/2 − 1/2 = bits · ln 2."""
    return np.sqrt(2 * (bits * np.log(2) - np.log(1 / s) - s * s / 2 + 0.5))


def log_normal(x, mean, sd):
    return np.sum(-0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), axis=-1)


@functools.cache
def expected_moments(s, bits, n=N, per_rung=50_000):
    """(E[log q/p] in bits, E[‖x − q_mean‖²/D]) of the chosen sample under the fixed-budget law, and the
    same under q. Points come from an equal mixture of the geometric bridge p^(1−β) q^β (Gaussian),
    β = 0, 0.1, …, 1: with n ≪ 2^KL the law sits between p and q, where q itself almost never samples."""
    mu = posterior_mean(s, bits)
    beta = np.linspace(0, 1, 11)
    precision = 1 - beta + beta / s**2
    means, sds = beta * mu / s**2 / precision, 1 / np.sqrt(precision)
    rng = np.random.default_rng(5)
    x = np.concatenate([m + sd * rng.standard_normal((per_rung, DIMS)) for m, sd in zip(means, sds)])
    log_r = np.logaddexp.reduce([log_normal(x, m, sd) for m, sd in zip(means, sds)]) - np.log(beta.size)
    log_q, log_p = log_normal(x, mu, s), log_normal(x, 0.0, 1.0)
    to_q = np.exp(log_q - log_r)
    chosen = to_q * selection_density_ratio(log_q - log_p, to_q, n)
    moments = lambda w: (np.sum(w * (log_q - log_p)) / w.sum() / np.log(2),
                         np.sum(w * np.mean((x - mu) ** 2, axis=1)) / w.sum())
    return moments(chosen), moments(to_q)


@pytest.fixture(scope="module")
def coded_blocks():
    """REC samples for BLOCKS_PER_KIND blocks of each kind, in standardized coordinates of each element."""
    rng = np.random.default_rng(3)
    n_blocks = len(BLOCK_KINDS) * BLOCKS_PER_KIND
    size = n_blocks * DIMS
    p_mean, p_scale = rng.normal(size=size), rng.uniform(0.2, 3.0, size)   # a non-standard prior per element
    s, bits = (np.repeat(np.array(v), BLOCKS_PER_KIND * DIMS) for v in zip(*BLOCK_KINDS.values()))
    mu = posterior_mean(s, bits)
    q_mean, q_scale = p_mean + p_scale * mu, p_scale * s
    ids = rng.permutation(size).astype(np.uint32) * 3 + 1000
    starts = np.arange(0, size + 1, DIMS)
    indices = rec.select(99, jax.random.key(4), q_mean, q_scale, p_mean, p_scale, ids, starts,
                         np.arange(n_blocks))
    x = rec.regenerate(99, p_mean, p_scale, ids, starts, indices).astype(np.float64)
    kl = rec.kl_bits(q_mean, q_scale, p_mean, p_scale).reshape(n_blocks, DIMS).sum(1)
    log_ratio = (scipy.stats.norm.logpdf(x, q_mean, q_scale) - scipy.stats.norm.logpdf(x, p_mean, p_scale))
    dist = ((x - q_mean) / p_scale) ** 2
    out = {}
    for i, name in enumerate(BLOCK_KINDS):
        rows = slice(i * BLOCKS_PER_KIND, (i + 1) * BLOCKS_PER_KIND)
        out[name] = dict(kl=kl[rows], log_ratio=log_ratio.reshape(n_blocks, DIMS)[rows].sum(1) / np.log(2),
                         dist=dist.reshape(n_blocks, DIMS)[rows].mean(1))
    return out


def within_standard_errors(samples, expected, k=4.0):
    se = samples.std(ddof=1) / np.sqrt(samples.size)
    return abs(samples.mean() - expected) < k * se, f"mean {samples.mean():.4f} vs {expected:.4f} (SE {se:.4f})"


@pytest.mark.parametrize("kind", list(BLOCK_KINDS))
def test_selected_samples_follow_the_fixed_budget_selection_law(coded_blocks, kind):
    """Mean log q/p and distortion of the chosen samples equal the law's, within 4 standard errors over the
    blocks (the law's own Monte Carlo error, < 0.01 bits and ~1e-4, is far below them)."""
    blocks = coded_blocks[kind]
    (want_log_ratio, want_dist), _ = expected_moments(*BLOCK_KINDS[kind])
    ok, msg = within_standard_errors(blocks["log_ratio"], want_log_ratio)
    assert ok, f"log q/p in bits: {msg}"
    ok, msg = within_standard_errors(blocks["dist"], want_dist)
    assert ok, f"distortion: {msg}"


def test_blocks_well_below_the_budget_are_coded_as_exact_samples_of_q(coded_blocks):
    """With 2^16 candidates for an 8-bit block the law is q to within 1e-3: the chosen samples' mean log q/p
    is the KL and their distortion q's variance s², within 4 standard errors over the blocks."""
    s, bits = BLOCK_KINDS["8 bits"]
    blocks = coded_blocks["8 bits"]
    np.testing.assert_allclose(blocks["kl"], DIMS * bits, rtol=1e-9)
    (law_log_ratio, law_dist), _ = expected_moments(s, bits)
    assert abs(law_log_ratio - DIMS * bits) < 0.01 and abs(law_dist - s * s) < 1e-3
    ok, msg = within_standard_errors(blocks["log_ratio"], DIMS * bits)
    assert ok, msg
    ok, msg = within_standard_errors(blocks["dist"], s * s)
    assert ok, msg


def test_blocks_at_the_budget_land_about_three_bits_below_their_kl(coded_blocks):
    """With 2^KL candidates the law leans towards the prior: log q/p ~3 bits under the 16-bit KL and the
    distortion ~44% above q's s²; the coded blocks are that far off too (more than 5 standard errors)."""
    s, bits = BLOCK_KINDS["16 bits"]
    blocks = coded_blocks["16 bits"]
    np.testing.assert_allclose(blocks["kl"], DIMS * bits, rtol=1e-9)
    (law_log_ratio, law_dist), _ = expected_moments(s, bits)
    assert 2.5 < DIMS * bits - law_log_ratio < 3.5 and 1.3 < law_dist / (s * s) < 1.6
    for values, exact_q in ((blocks["log_ratio"], DIMS * bits), (blocks["dist"], s * s)):
        ok, msg = within_standard_errors(values, exact_q, k=5.0)
        assert not ok, f"indistinguishable from q: {msg}"


def test_far_fewer_candidates_than_two_to_the_kl_distort_clearly_more(coded_blocks):
    """2^16 candidates for a 24-bit block: the distortion is more than 3x q's, by over 10 standard errors."""
    s, bits = BLOCK_KINDS["24 bits"]
    dist = coded_blocks["24 bits"]["dist"]
    se = dist.std(ddof=1) / np.sqrt(dist.size)
    assert dist.mean() - 3 * s * s > 10 * se
    assert coded_blocks["24 bits"]["log_ratio"].mean() < DIMS * bits - 16


# ---------------------------------------------------------------------------- select ⇄ regenerate, by hand

def test_regenerate_returns_the_candidate_that_select_scored_highest(tmp_path):
    rng = np.random.default_rng(8)
    dims = np.array([5, 3, 7, 1])
    starts = np.concatenate([[0], np.cumsum(dims)])
    size = int(starts[-1])
    p_mean, p_scale = rng.normal(size=size), rng.uniform(0.5, 2.0, size)
    q_mean, q_scale = p_mean + p_scale * rng.normal(0, 1.2, size), p_scale * rng.uniform(0.2, 0.6, size)
    ids = rng.choice(1 << 20, size, replace=False).astype(np.uint32)
    seed, key = 2024, jax.random.key(17)
    blocks = np.array([2, 0, 3, 1])   # any order, any subset
    indices = rec.select(seed, key, q_mean, q_scale, p_mean, p_scale, ids, starts, blocks)
    assert indices.dtype == np.uint16 and indices.shape == (4,)
    in_order = np.empty(4, np.int64)
    in_order[blocks] = indices
    x = rec.regenerate(seed, p_mean, p_scale, ids, starts, in_order)
    assert x.dtype == np.float32
    for b in range(4):
        e = slice(starts[b], starts[b + 1])
        cand = (p_mean[e, None].astype(np.float32)
                + p_scale[e, None].astype(np.float32) * rec.normals(seed, ids[e, None], np.arange(N)[None, :]))
        np.testing.assert_array_equal(x[e], cand[:, in_order[b]])
        c = cand.astype(np.float64)
        log_w = np.sum(scipy.stats.norm.logpdf(c, q_mean[e, None], q_scale[e, None])
                       - scipy.stats.norm.logpdf(c, p_mean[e, None], p_scale[e, None]), axis=0)
        exp = np.asarray(jax.random.exponential(jax.random.fold_in(key, b), (N,), jnp.float32), np.float64)
        score = log_w - np.log(np.cumsum(exp))
        top2 = np.sort(score)[-2:]
        assert top2[1] - top2[0] > 1e-3   # no near-tie that float32 scoring could resolve either way
        assert in_order[b] == np.argmax(score)

    np.savez(tmp_path / "args.npz", p_mean=p_mean, p_scale=p_scale, ids=ids, starts=starts, indices=in_order)
    code = ("import hashlib, numpy as np; from codec import rec; "
            f"a = np.load({str(tmp_path / 'args.npz')!r}); "
            f"print(hashlib.sha256(rec.regenerate({seed}, a['p_mean'], a['p_scale'], a['ids'], a['starts'], "
            "a['indices']).tobytes()).hexdigest())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == hashlib.sha256(x.tobytes()).hexdigest()


def test_select_compiles_once_per_padded_width():
    rng = np.random.default_rng(9)
    before = rec._score_chunk_jit._cache_size()
    for width in (9, 12, 16, 13):   # all pad to 16 slots; two blocks each, so the same (rows, width) shape
        size = 2 * width
        rec.select(1, jax.random.key(0), rng.normal(size=size), np.full(size, 0.5), np.zeros(size),
                   np.ones(size), np.arange(size), np.array([0, width, size]), np.array([0, 1]))
    assert rec._score_chunk_jit._cache_size() == before + 1


# ------------------------------------------------------------------------------------------- bad inputs

def test_bad_inputs_raise_value_errors_that_say_what_is_wrong():
    size = 6
    pm, ps, ids, starts = np.zeros(size), np.ones(size), np.arange(size), np.array([0, 2, 6])
    good = dict(q_mean=np.zeros(size), q_scale=np.full(size, 0.5), p_mean=pm, p_scale=ps)
    key = jax.random.key(0)
    cases = [
        (lambda: rec.regenerate(-1, pm, ps, ids, starts, [0, 1]), "seed"),
        (lambda: rec.regenerate(2**32, pm, ps, ids, starts, [0, 1]), "seed"),
        (lambda: rec.regenerate(0, pm[:5], ps, ids, starts, [0, 1]), "p_mean and p_scale"),
        (lambda: rec.regenerate(0, pm, ps, ids, starts, [0, 1, 2]), "one per block"),
        (lambda: rec.regenerate(0, pm, ps, ids, starts, [0, N]), "indices must lie"),
        (lambda: rec.regenerate(0, pm, ps, ids, starts, [-1, 0]), "indices must lie"),
        (lambda: rec.regenerate(0, pm, ps, ids, np.array([0, 2, 5]), [0, 1]), "starts"),
        (lambda: rec.regenerate(0, pm, ps, ids, np.array([0, 3, 3, 6]), [0, 1, 2]), "starts"),
        (lambda: rec.regenerate(0, pm, ps, ids - 1, starts, [0, 1]), "element ids"),
        (lambda: rec.normals(0, np.array([1]), np.array([N])), "candidates"),
        (lambda: rec.normals(2**32, np.array([1]), np.array([0])), "seed"),
        (lambda: rec.plan_blocks(np.array([1, -1]), 10, 4), "non-negative"),
        (lambda: rec.plan_blocks(np.array([1.0]), 10, 4), "integer"),
        (lambda: rec.plan_blocks(np.array([1]), 10, 0), "max_dims"),
        (lambda: rec.plan_blocks(np.array([1]), 10.5, 4), "must be integers"),
        (lambda: rec.select(0, key, **good, element_ids=ids, starts=starts, blocks=[2]), "block numbers"),
        (lambda: rec.select(0, key, **good, element_ids=ids[:5], starts=[0, 2, 5], blocks=[0]),
         "q_mean must have shape (5,)"),
        (lambda: rec.select(0, key, **{**good, "q_scale": np.zeros(size)}, element_ids=ids, starts=starts,
                            blocks=[0]), "q_scale must be finite and positive"),
        (lambda: rec.select(0, key, **good, element_ids=np.zeros(size, int), starts=starts, blocks=[0]),
         "distinct"),
    ]
    for call, words in cases:
        with pytest.raises(ValueError, match=re.escape(words)):
            call()
