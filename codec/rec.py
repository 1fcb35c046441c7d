"""Relative-entropy coding (REC): send one sample of a factorized Gaussian posterior as 16-bit indices.

RECOMBINER (He et al. 2023, after COMBINER, Guo et al. 2023) does not quantize weights: the encoder fits a
posterior q = N(q_mean, q_scale²) per element against a prior p = N(p_mean, p_scale²) that the decoder
knows, and transmits one *sample* of q. This module is the coding step, on flat float arrays of elements
already in coding order.

Blocks. Elements are packed greedily, in order, into blocks whose expected KL(q‖p) stays within a budget
of about BLOCK_BITS (`plan_blocks`, integer arithmetic so both sides get the same blocks).

Candidates. For block b the candidates k = 0..CANDIDATES-1 are x_k[e] = p_mean[e] + p_scale[e] · z(seed,
id_e, k) for the block's elements e, where z is a standard normal that both sides compute bit for bit:

    key = fmix32(seed)                    fmix32 = murmur3's 32-bit finalizer (xor-shift, multiply; wraps)
    h   = fmix32(fmix32(id ^ key) + k · 0x9E3779B9)      all uint32; 0x9E3779B9 = 2^32 / golden ratio
    z   = NORMAL[h >> 16]                 NORMAL[i] = Φ⁻¹((i + 0.5) / 2^16) rounded to float32

The inner fmix32 gives each element a pseudo-random 32-bit stream start; adding k times an odd constant
gives 2^16 distinct hash inputs per element, and the outer fmix32 decorrelates neighbouring candidates.
The table quantizes the normal to 2^16 equiprobable levels (spacing 3.8e-5 at 0, 0.1 at ±4) and truncates
it at ±4.32: a posterior further than that from its prior's mean cannot be reached.

Selection (encoder only, `select`). The log importance weight of candidate k is Σ_e log q(x_k[e]) −
log p(x_k[e]); the encoder adds the block's ordered Gumbel sequence G_k = −log(E_0 + … + E_k), E_i ~
Exp(1) drawn from `fold_in(key, b)` (the A* / PFR form with a fixed budget that COMBINER's `irec.py`
uses) and sends argmax_k as 16 bits. The decoder (`regenerate`) needs only the seed, ids, prior and
indices, never the Gumbels or q. With N candidates the chosen sample has density
q(x) · N ∫_0^{1/w(x)} (1 − E_q[min(v, 1/W)])^{N−1} dv, w = q/p (derived in tests/codec/test_rec.py);
it approaches q once N is well above 2^KL. At N = 2^KL exactly it leans towards p: for 8-element 16-bit
blocks the chosen samples sit ~3 bits below the KL in log q/p, with 44% more squared error than q's
samples. RECOMBINER accepts this fixed-budget bias; its encoder re-tunes the blocks not yet coded.

Throughput: `select` scores ~6e8 element-candidates/s on this 2-core CPU (64 blocks of 128 or 512
elements per call, jax 0.10.2, measured with other jobs sharing the cores; up to 1.1e9 for one chunk when
less loaded), so a clip of ~2e11 takes ~6 minutes here. The table gather costs about two thirds of it.
Blocks of <= 16 elements run at ~2.5e8/s: drawing a block's 2^16 Gumbels then costs as much as scoring.
Measure with `.venv/bin/python -c 'from codec import rec; print(rec._benchmark())'`.
"""

from __future__ import annotations

import functools
import hashlib
import statistics

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_BITS = 16                    # RECOMBINER: one 16-bit index per block (struct 'H' in COMBINER's code)
CANDIDATES = 1 << BLOCK_BITS

_U32 = (1 << 32) - 1
_FMIX_C1 = 0x85EBCA6B              # murmur3 fmix32 multipliers (Appleby, MurmurHash3.cpp)
_FMIX_C2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B9               # floor(2^32 / φ): odd, so k · _GOLDEN is distinct for every k < 2^32

# SHA-256 of normal_table()'s little-endian float32 bytes as computed with CPython's NormalDist (Wichura's
# AS241, float64) on x86-64 glibc. Every machine must build exactly this table or decode other samples.
_TABLE_SHA256 = "1cfbba1e07e34386a57626f82aeb43e6ed54ba70a3ea6b7d964dc66a841074a8"

_CHUNK_BYTES = 16 << 20            # one (rows, CANDIDATES) float32 array; ~6 live at once: ~100 MB a chunk
_MAX_ROWS = _CHUNK_BYTES // (4 * CANDIDATES)   # 64 blocks scored together
_MIN_WIDTH = 8                     # padded block widths: powers of two from 8, few shapes to compile


@functools.cache
def normal_table() -> np.ndarray:
    """Φ⁻¹((i + 0.5) / 2^16) as float32 (CANDIDATES,), read-only; raises RuntimeError if this machine's
    float64 arithmetic builds a table other than the one every encoder and decoder must share."""
    inv_cdf = statistics.NormalDist().inv_cdf
    table = np.array([inv_cdf((i + 0.5) / CANDIDATES) for i in range(CANDIDATES)]).astype("<f4")
    if hashlib.sha256(table.tobytes()).hexdigest() != _TABLE_SHA256:
        raise RuntimeError("this machine's libm builds a different normal table: REC samples would not decode")
    table.flags.writeable = False
    return table


@functools.cache
def _device_table() -> jax.Array:
    with jax.ensure_compile_time_eval():   # a concrete array even when first asked for inside a jit trace
        return jnp.asarray(normal_table())


def _fmix32(h):
    """murmur3's finalizer on uint32 arrays (NumPy or JAX, both wrap on multiply)."""
    h = h ^ (h >> 16)
    h = h * np.uint32(_FMIX_C1)
    h = h ^ (h >> 13)
    h = h * np.uint32(_FMIX_C2)
    return h ^ (h >> 16)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= _U32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def _check_ids(ids, what: str = "element ids") -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integers, got dtype {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() > _U32):
        raise ValueError(f"{what} must lie in [0, 2**32)")
    return ids.astype(np.uint32)


def _element_keys(seed: int, ids: np.ndarray) -> np.ndarray:
    """fmix32(id ^ fmix32(seed)), uint32 (N,): the per-element half of the hash."""
    key = _fmix32(np.array([seed], np.uint32))
    return _fmix32(np.atleast_1d(ids).astype(np.uint32) ^ key).reshape(np.shape(ids))


def element_keys(seed: int, ids: np.ndarray) -> np.ndarray:
    """The per-element half of the hash, uint32: also what the coding order shuffles a stage by (its elements
    sorted by it), so that order is the same on every machine."""
    return _element_keys(_check_seed(seed), _check_ids(ids))


def normals(seed: int, elements: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Shared standard normals z(seed, element, candidate), float32, `elements` broadcast against
    `candidates`; pure uint32 arithmetic and a table lookup, so identical on every machine."""
    seed = _check_seed(seed)
    ids = _check_ids(elements)
    cand = _check_ids(candidates, what="candidates")
    if cand.size and cand.max() >= CANDIDATES:
        raise ValueError(f"candidates must lie in [0, {CANDIDATES})")
    e, c = np.broadcast_arrays(_element_keys(seed, ids), cand)
    h = _fmix32(e.ravel() + c.ravel() * np.uint32(_GOLDEN))
    return normal_table()[h >> 16].reshape(e.shape)


def normals_jax(seed, elements, candidates) -> jax.Array:
    """`normals` in jax.numpy (jittable, no checks): float32 of the broadcast shape, equal bit for bit."""
    seed, elements, candidates = (jnp.asarray(a, jnp.uint32) for a in (seed, elements, candidates))
    e = _fmix32(elements ^ _fmix32(seed))
    h = _fmix32(e + candidates * np.uint32(_GOLDEN))
    return _device_table()[h >> 16]


def plan_blocks(kl_units: np.ndarray, budget_units: int, max_dims: int) -> np.ndarray:
    """Greedy packing in coding order: int64 starts (B+1,), 0 … N. A block takes consecutive elements while
    their KL sum stays <= budget_units (always at least one) and it has at most max_dims of them."""
    kl = np.asarray(kl_units)
    if kl.ndim != 1 or kl.dtype.kind not in "iu":
        raise ValueError(f"kl_units must be a 1-D integer array, got {kl.dtype} of shape {kl.shape}")
    if not all(isinstance(v, (int, np.integer)) for v in (budget_units, max_dims)):
        raise ValueError(f"budget_units and max_dims must be integers, got {budget_units!r}, {max_dims!r}")
    if budget_units < 0 or max_dims < 1:
        raise ValueError(f"need budget_units >= 0 and max_dims >= 1, got {budget_units}, {max_dims}")
    n = kl.size
    if n and (kl.min() < 0 or kl.max() > ((1 << 62) - budget_units) // n):
        raise ValueError("kl_units must be non-negative and small enough that their sum fits in int64")
    total = np.concatenate([[0], np.cumsum(kl, dtype=np.int64)])
    starts = [0]
    while starts[-1] < n:
        s = starts[-1]
        end = int(np.searchsorted(total, total[s] + budget_units, side="right")) - 1   # last sum <= budget
        starts.append(min(max(end, s + 1), s + max_dims, n))
    return np.array(starts, np.int64)


def kl_bits(q_mean, q_scale, p_mean, p_scale):
    """KL(N(q_mean, q_scale²) ‖ N(p_mean, p_scale²)) in bits, elementwise, on NumPy or JAX arrays."""
    xp = jnp if any(isinstance(a, jax.Array) for a in (q_mean, q_scale, p_mean, p_scale)) else np
    ratio = q_scale / p_scale
    nats = -xp.log(ratio) + 0.5 * (ratio * ratio + ((q_mean - p_mean) / p_scale) ** 2 - 1.0)
    return nats / np.log(2.0)


def _check_starts(starts, n: int) -> np.ndarray:
    starts = np.asarray(starts)
    if starts.ndim != 1 or starts.dtype.kind not in "iu" or starts.size < 1:
        raise ValueError(f"starts must be a non-empty 1-D integer array, got {starts.dtype} {starts.shape}")
    if starts[0] != 0 or starts[-1] != n or np.any(np.diff(starts) <= 0):
        raise ValueError(f"starts must rise strictly from 0 to the {n} elements")
    return starts.astype(np.int64)


def _check_blocks(blocks, n_blocks: int) -> np.ndarray:
    blocks = np.asarray(blocks)
    if blocks.ndim != 1 or blocks.dtype.kind not in "iu":
        raise ValueError(f"blocks must be a 1-D integer array, got {blocks.dtype} {blocks.shape}")
    if blocks.size and (blocks.min() < 0 or blocks.max() >= n_blocks):
        raise ValueError(f"block numbers must lie in [0, {n_blocks})")
    return blocks.astype(np.int64)


def _coded_gaussians(n: int, coded: np.ndarray, **arrays) -> list[np.ndarray]:
    """The (N,) posterior and prior arrays, checked, at the elements being coded only (float64)."""
    out = []
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
        a = a[coded].astype(np.float64)
        if not np.all(np.isfinite(a)) or (name.endswith("scale") and np.any(a <= 0)):
            raise ValueError(f"{name} must be finite{' and positive' if name.endswith('scale') else ''}")
        out.append(a)
    return out


def _score_chunk(table, keys, elem_keys, offset, slope, width):
    """Argmax over candidates of log w + ordered Gumbel for a chunk of blocks, int32 (rows,).

    elem_keys, offset, slope: (rows, W); one element slot per loop step, so memory stays
    (rows, CANDIDATES). With t = (x − q_mean)/q_scale = offset + slope · z, log q/p = (z² − t²)/2 + a
    per-block constant that argmax ignores; padded slots (offset 0, slope 1) add exactly 0."""
    cand = jnp.arange(CANDIDATES, dtype=jnp.uint32) * np.uint32(_GOLDEN)

    def add_slot(j, acc):
        col = lambda a: jax.lax.dynamic_slice_in_dim(a, j, 1, axis=1)   # (rows, 1)
        z = table[_fmix32(col(elem_keys) + cand) >> 16]
        t = col(offset) + col(slope) * z
        return acc + (z * z - t * t)

    acc = jax.lax.fori_loop(0, width, add_slot, jnp.zeros((elem_keys.shape[0], CANDIDATES), jnp.float32))
    exp = jax.vmap(lambda k: jax.random.exponential(k, (CANDIDATES,), jnp.float32))(keys)
    gumbel = -jnp.log(jnp.cumsum(exp, axis=1))
    return jnp.argmax(0.5 * acc + gumbel, axis=1).astype(jnp.int32)


# Module level: one compile per (rows, padded width). Always fully optimized: unfused, this loop runs ~5x
# slower, which JAX_DISABLE_MOST_OPTIMIZATIONS (set by the tests for quick compiles) would otherwise cause.
_score_chunk_jit = jax.jit(_score_chunk, compiler_options={"xla_backend_optimization_level": 3,
                                                           "xla_llvm_disable_expensive_passes": False})


def _pad_width(w: int) -> int:
    return max(_MIN_WIDTH, 1 << (w - 1).bit_length())


def select(seed: int, key: jax.Array, q_mean, q_scale, p_mean, p_scale, element_ids, starts,
           blocks) -> np.ndarray:
    """Encoder: the index of one prior candidate per block in `blocks`, uint16 (len(blocks),), chosen by
    ordered-Gumbel importance sampling towards q. Arrays are (N,) in coding order; `starts` (B+1,) from
    `plan_blocks`; `key` is encoder-private (folded with each block number). Work and checks touch only
    the elements of `blocks`, so progressive coding can call this once per few blocks."""
    seed = _check_seed(seed)
    ids = _check_ids(element_ids)
    if ids.ndim != 1:
        raise ValueError(f"element ids must be 1-D, got shape {ids.shape}")
    starts = _check_starts(starts, ids.size)
    blocks = _check_blocks(blocks, starts.size - 1)
    widths = starts[blocks + 1] - starts[blocks]
    first = np.concatenate([[0], np.cumsum(widths)])     # where each block's elements start in `coded`
    coded = np.repeat(starts[blocks] - first[:-1], widths) + np.arange(first[-1])
    qm, qs, pm, ps = _coded_gaussians(ids.size, coded, q_mean=q_mean, q_scale=q_scale, p_mean=p_mean,
                                      p_scale=p_scale)
    if np.unique(ids[coded]).size != coded.size:
        raise ValueError("element ids must be distinct: equal ids share candidate streams")
    slots = (_element_keys(seed, ids[coded]), ((pm - qm) / qs).astype(np.float32), (ps / qs).astype(np.float32))
    order = np.argsort(widths, kind="stable")   # similar widths share a chunk: little padding
    out = np.zeros(blocks.size, np.uint16)
    rows = min(_MAX_ROWS, 1 << max(blocks.size - 1, 0).bit_length())
    for lo in range(0, blocks.size, rows):
        chunk = order[lo:lo + rows]
        out[chunk] = _select_chunk(key, blocks[chunk], first[chunk], widths[chunk], rows, *slots)[:chunk.size]
    return out


def _select_chunk(key, block_ids, first, widths, rows, elem_keys, offset, slope) -> np.ndarray:
    """Gathers a chunk's blocks into padded (rows, W) slot arrays and scores them in one jitted call;
    `first` locates each block's elements in the per-coded-element arrays."""
    width = _pad_width(int(widths.max()))
    slot = np.arange(width)
    valid = np.zeros((rows, width), bool)
    valid[:block_ids.size] = slot < widths[:, None]
    index = np.zeros((rows, width), np.int64)
    index[:block_ids.size] = first[:, None] + np.minimum(slot, widths[:, None] - 1)
    pad_blocks = np.zeros(rows, np.int64)
    pad_blocks[:block_ids.size] = block_ids
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(pad_blocks, jnp.uint32))
    picked = _score_chunk_jit(_device_table(), keys, jnp.asarray(elem_keys[index]),
                              jnp.asarray(np.where(valid, offset[index], 0.0).astype(np.float32)),
                              jnp.asarray(np.where(valid, slope[index], 1.0).astype(np.float32)),
                              jnp.int32(widths.max()))
    return np.asarray(picked)


def regenerate(seed: int, p_mean, p_scale, element_ids, starts, indices) -> np.ndarray:
    """Decoder: every element's transmitted value p_mean + p_scale · z(seed, id, index of its block),
    float32 (N,), computed in float32 (prior cast to float32) exactly as the encoder's candidates."""
    seed = _check_seed(seed)
    ids = _check_ids(element_ids)
    if ids.ndim != 1:
        raise ValueError(f"element ids must be 1-D, got shape {ids.shape}")
    n = ids.size
    pm, ps = (np.asarray(a, np.float32) for a in (p_mean, p_scale))
    if pm.shape != (n,) or ps.shape != (n,):
        raise ValueError(f"p_mean and p_scale must have shape ({n},), got {pm.shape} and {ps.shape}")
    starts = _check_starts(starts, n)
    indices = np.asarray(indices)
    if indices.shape != (starts.size - 1,) or indices.dtype.kind not in "iu":
        raise ValueError(f"indices must be {starts.size - 1} integers, one per block, got {indices.dtype} "
                         f"{indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= CANDIDATES):
        raise ValueError(f"indices must lie in [0, {CANDIDATES})")
    per_element = np.repeat(indices.astype(np.uint32), np.diff(starts))
    return pm + ps * normals(seed, ids, per_element)


def _benchmark(blocks: int = 64, width: int = 128, repeats: int = 3) -> float:
    """Element-candidates scored per second by `select` after compiling: the module docstring's figure."""
    import time

    n = blocks * width
    rng = np.random.default_rng(0)
    args = (rng.normal(size=n), np.full(n, 0.5), np.zeros(n), np.ones(n), np.arange(n),
            np.arange(0, n + 1, width), np.arange(blocks))
    select(0, jax.random.key(0), *args)
    t = time.perf_counter()
    for _ in range(repeats):
        select(0, jax.random.key(0), *args)
    return repeats * n * CANDIDATES / (time.perf_counter() - t)
