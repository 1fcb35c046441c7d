"""Entropy coding of integer arrays: integer probability models, their bytes, one range-coded stream."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import constriction
import numpy as np

from codec.bytesio import ByteReader, ByteWriter, FormatError

# Model kinds. The ids are written into .nerva files: never renumber, only append.
#   id | name      | params                         | table total
#   ---+-----------+--------------------------------+------------
#    0 | UNIFORM   | ()                             | 2**24
#    1 | LAPLACE   | (n_theta, n_p0), both u16      | 2**24
#    2 | HISTOGRAM | (p, f[lo], ..., f[hi])         | 2**p
UNIFORM = 0
LAPLACE = 1
HISTOGRAM = 2
KIND_NAMES = {UNIFORM: "uniform", LAPLACE: "laplace", HISTOGRAM: "histogram"}

# constriction's Python `Categorical` quantizes to 24-bit fixed point (its
# DefaultContiguousCategoricalEntropyModel). Every table here has a power-of-two total <= 2**24,
# so it maps onto the coder's table without any rounding (see `_coding_table`).
PRECISION = 24
MAX_SUPPORT = 1 << 20  # hi - lo + 1; bounds table memory and the Laplace loop, far above 16-bit weights
_LAPLACE_ONE = 1 << 38  # fixed-point 1.0 for theta**d; w * (2**24) stays below 2**63 in int64
_MAX_HISTOGRAM_PRECISION = 16  # above this, table bytes grow faster than the payload shrinks

# The powers theta**d of a LAPLACE table (FORMAT.md §7.2 step 2) reach 0 after at most 1,037,195 steps
# (n_theta = 65535 decays slowest; each product truncates), so a table's power loop never exceeds 2**20.
LAPLACE_MAX_POWERS = 1 << 20

# Table work a file may ask of a reader (FORMAT.md §11): every model costs its support, a LAPLACE model
# also its powers. Building a table costs ~0.03-0.4 us per entry, so a file gets a fixed 2**20 entries
# (16-bit tiny models: about 10 tensors of up to 2**17 symbols) plus 64 per byte of the file (a dense
# 16-bit file spends >= 2 bytes per parameter and at most ~65 entries per byte), capped at 2**25. A
# tiny hostile file thus costs well under a second; no file the encoder writes comes near the limit.
TABLE_ENTRIES_FIXED = 1 << 20
TABLE_ENTRIES_PER_BYTE = 64
MAX_TABLE_ENTRIES = 1 << 25

# The lru_caches below keep only small tables (their support at most this many symbols), so the
# caches hold at most _CACHED_MODELS * 4096 entries (~10 MB) however large the tables a file asks for.
_CACHE_MAX_SUPPORT = 1 << 12
_CACHED_MODELS = 64

# A valid stream of W words holds less than 32·W bits of information (FORMAT.md §8.3); the reader adds
# two words so that the float64 sum of the per-tensor bounds can never refuse a valid stream.
STREAM_SLACK_WORDS = 2


class SupportTooWide(ValueError):
    """Symbols spanning more values than any table may hold (MAX_SUPPORT): no file can code them, as the
    weights of a fit that blew up against their quantization steps give."""


@dataclasses.dataclass(frozen=True)
class EntropyModel:
    """An integer probability table over the symbols lo..hi, described by a few stored integers."""

    kind: int  # UNIFORM / LAPLACE / HISTOGRAM
    lo: int  # smallest symbol in the support (inclusive)
    hi: int  # largest symbol (inclusive)
    params: tuple[int, ...]  # LAPLACE: (n_theta, n_p0); HISTOGRAM: (p, *frequencies); UNIFORM: ()

    def __post_init__(self) -> None:
        if self.kind not in KIND_NAMES:
            raise ValueError(f"unknown entropy model kind {self.kind}")
        if not -(1 << 31) <= self.lo <= self.hi < (1 << 31):
            raise ValueError(f"support [{self.lo}, {self.hi}] is empty or leaves int32")
        if self.size > MAX_SUPPORT:
            raise ValueError(f"support of {self.size} symbols exceeds {MAX_SUPPORT}")
        _check_params(self.kind, self.size, self.params)

    @property
    def size(self) -> int:
        """Number of symbols in the support, hi - lo + 1."""
        return self.hi - self.lo + 1

    def frequencies(self) -> np.ndarray:
        """Integer frequencies, int64 (hi - lo + 1,), summing to a power of two; read-only and cached."""
        return _frequency_table(self)

    def to_bytes(self) -> bytes:
        writer = ByteWriter()
        writer.u8(self.kind)
        writer.svarint(self.lo)
        writer.svarint(self.hi)
        if self.kind == LAPLACE:
            writer.u16(self.params[0])
            writer.u16(self.params[1])
        elif self.kind == HISTOGRAM:
            writer.u8(self.params[0])
            _write_histogram_table(writer, self.params[1:])
        return writer.getvalue()

    @classmethod
    def from_reader(cls, reader: ByteReader, budget: TableBudget | None = None) -> EntropyModel:
        """Inverse of `to_bytes`; malformed bytes raise FormatError. With `budget`, the model's table cost
        is taken from it before any of its table is read or built."""
        kind, lo, hi = reader.u8(), reader.svarint(), reader.svarint()
        if kind not in KIND_NAMES or hi < lo or hi - lo + 1 > MAX_SUPPORT:
            raise FormatError(f"{reader.what} holds a bad entropy model header (kind {kind}, support [{lo}, {hi}])")
        if budget is not None:
            budget.take(table_cost(kind, lo, hi))
        if kind == LAPLACE:
            params: tuple[int, ...] = (reader.u16(), reader.u16())
        elif kind == HISTOGRAM:
            params = (reader.u8(), *_read_histogram_table(reader, hi - lo + 1))
        else:
            params = ()
        try:
            return cls(kind, lo, hi, params)
        except ValueError as e:
            raise FormatError(f"{reader.what} holds an invalid entropy model: {e}") from e


def table_cost(kind: int, lo: int, hi: int) -> int:
    """Entries a reader builds for a model: its support, plus a LAPLACE model's powers of theta."""
    powers = min(max(abs(lo), abs(hi)), LAPLACE_MAX_POWERS) if kind == LAPLACE else 0
    return hi - lo + 1 + powers


class TableBudget:
    """The table entries one file may still ask for (FORMAT.md §11); `take` refuses the excess."""

    def __init__(self, file_bytes: int) -> None:
        self.limit = min(MAX_TABLE_ENTRIES, TABLE_ENTRIES_FIXED + TABLE_ENTRIES_PER_BYTE * file_bytes)
        self.left = self.limit

    def take(self, entries: int) -> None:
        if entries > self.left:
            raise FormatError(f"file's entropy models ask for more than the {self.limit} table entries "
                              "a file of its length may hold")
        self.left -= entries


def _check_params(kind: int, size: int, params: tuple[int, ...]) -> None:
    if kind == UNIFORM and params:
        raise ValueError("a uniform model takes no params")
    if kind == LAPLACE:
        if len(params) != 2 or not (1 <= params[0] <= 0xFFFF and 0 <= params[1] <= 0xFFFF):
            raise ValueError(f"laplace params must be (n_theta in 1..65535, n_p0 in 0..65535), got {params}")
    if kind == HISTOGRAM:
        if len(params) != size + 1 or not 0 <= params[0] <= PRECISION:
            raise ValueError(f"histogram params must be (p <= {PRECISION}, {size} frequencies)")
        if min(params[1:]) < 0 or sum(params[1:]) != 1 << params[0]:
            raise ValueError(f"histogram frequencies must be >= 0 and sum to 2**{params[0]}")


# ---------------------------------------------------------------------------------------------
# Tables. Pure functions of the stored integers, in integer arithmetic only, so that every
# machine (and every numpy build) decodes with the same table.


def _small_models_cached(fn):
    """`fn(model)` memoized for models of at most _CACHE_MAX_SUPPORT symbols; larger ones are rebuilt."""
    cached = functools.lru_cache(maxsize=_CACHED_MODELS)(fn)

    @functools.wraps(fn)
    def wrapper(model: EntropyModel):
        return cached(model) if model.size <= _CACHE_MAX_SUPPORT else fn(model)

    wrapper.cache_info, wrapper.cache_clear = cached.cache_info, cached.cache_clear
    return wrapper


@_small_models_cached
def _frequency_table(model: EntropyModel) -> np.ndarray:
    if model.kind == UNIFORM:
        table = _uniform_table(model.size)
    elif model.kind == LAPLACE:
        table = _laplace_table(model.lo, model.hi, *model.params)
    else:
        table = np.array(model.params[1:], dtype=np.int64)
    table.flags.writeable = False
    return table


def _uniform_table(size: int) -> np.ndarray:
    """As flat as a total of 2**24 allows: the first (2**24 mod size) symbols get one extra count."""
    base, extra = divmod(1 << PRECISION, size)
    table = np.full(size, base, dtype=np.int64)
    table[:extra] += 1
    return table


def _geometric_weights(n_theta: int, distance: np.ndarray) -> np.ndarray:
    """theta**d for each d in `distance`, in fixed point (1.0 = 2**38), truncated after every product.

    Repeated integer multiplication rather than a float pow, so the result never depends on a libm.
    The loop stops once the weight reaches 0, so a support far from zero costs no memory.
    """
    powers = [_LAPLACE_ONE]
    for _ in range(int(distance.max())):
        w = (powers[-1] * n_theta) >> 16
        if w == 0:
            break
        powers.append(w)
    table = np.array(powers, dtype=np.int64)
    return np.where(distance < len(powers), table[np.minimum(distance, len(powers) - 1)], 0)


def _laplace_table(lo: int, hi: int, n_theta: int, n_p0: int) -> np.ndarray:
    """Two-sided geometric with a zero spike: p(0) ~ n_p0 / 65536, p(k != 0) ~ theta**|k|.

    Every symbol first gets a count of 1 (so anything in [lo, hi] stays codable); zero gets n_p0/65536
    of the remaining counts (floored), the nonzero symbols share the rest in proportion to theta**|k|
    (largest remainder). If every weight truncates to 0, the rest goes to the symbol nearest zero.
    n_p0 is ignored when 0 is outside [lo, hi].
    """
    total, size = 1 << PRECISION, hi - lo + 1
    distance = np.abs(np.arange(lo, hi + 1, dtype=np.int64))
    weights = _geometric_weights(n_theta, distance)
    free = total - size
    spike = (free * n_p0) >> 16 if lo <= 0 <= hi else 0
    if lo <= 0 <= hi:
        weights[-lo] = 0  # zero's mass is the spike, not theta**0
    table = np.ones(size, dtype=np.int64)
    mode = int(np.argmin(distance))
    table[mode] += spike
    weight_sum = int(weights.sum())  # int64 sum of values < 2**38 over <= 2**20 symbols: exact
    if weight_sum:
        # Largest-remainder rounding: integer keys and a stable sort, so ties break the same everywhere.
        share, remainder = np.divmod(weights * (free - spike), weight_sum)
        table += share
        table[np.argsort(-remainder, kind="stable")[:total - int(table.sum())]] += 1
    table[mode] += total - int(table.sum())  # nonzero only when every weight truncated to 0
    return table


# ---------------------------------------------------------------------------------------------
# Ideal code length and fitting. Encoder side only: floats are fine here, since the chosen
# integers are stored in the file.


def ideal_bits(symbols: np.ndarray, model: EntropyModel) -> float:
    """Sum of -log2(freq[s] / total) over `symbols` (any shape); inf if a symbol cannot be coded."""
    x = np.asarray(symbols).reshape(-1).astype(np.int64)
    if x.size and (x.min() < model.lo or x.max() > model.hi):
        return math.inf
    return _bits_from_counts(np.bincount(x - model.lo, minlength=model.size), model.frequencies())


def _bits_from_counts(counts: np.ndarray, table: np.ndarray) -> float:
    used = counts > 0
    if np.any(table[used] == 0):
        return math.inf
    total = int(table.sum())
    return float(np.dot(counts[used], math.log2(total) - np.log2(table[used].astype(np.float64))))


def fit_model(symbols: np.ndarray, kinds: tuple[int, ...] | None = None) -> EntropyModel:
    """The model minimising model bytes + payload bits / 8 for `symbols` (any shape, integer dtype),
    among the model `kinds` (None: all).

    The support is [min, max] of the data; an empty or constant array gets a one-symbol uniform
    model, whose payload is zero bytes, whatever `kinds`.
    """
    x = np.asarray(symbols).reshape(-1)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"entropy coding needs integer symbols, got {x.dtype}")
    if x.size == 0:
        return EntropyModel(UNIFORM, 0, 0, ())
    x = x.astype(np.int64)
    lo, hi = int(x.min()), int(x.max())
    if hi - lo + 1 > MAX_SUPPORT:
        raise SupportTooWide(f"symbols span {hi - lo + 1} values, more than {MAX_SUPPORT}")
    uniform = EntropyModel(UNIFORM, lo, hi, ())
    if lo == hi:
        return uniform
    counts = np.bincount(x - lo, minlength=hi - lo + 1)
    fits = {UNIFORM: lambda: uniform, LAPLACE: lambda: _fit_laplace(counts, lo, hi),
            HISTOGRAM: lambda: _fit_histogram(counts, lo, hi)}
    candidates = [fit() for kind, fit in fits.items() if kinds is None or kind in kinds]
    return min(candidates, key=lambda m: 8 * len(m.to_bytes()) + _bits_from_counts(counts, m.frequencies()))


def _fit_laplace(counts: np.ndarray, lo: int, hi: int) -> EntropyModel:
    """p0 is the zero fraction (its ML value); theta minimises the nonzero symbols' code length."""
    n = int(counts.sum())
    n_zero = int(counts[-lo]) if lo <= 0 <= hi else 0
    n_p0 = 0 if n_zero == 0 else min(0xFFFF, max(1, round(n_zero * 65536 / n)))
    distance = np.abs(np.arange(lo, hi + 1, dtype=np.int64))
    abs_sum = float(np.dot(counts, distance))  # zeros contribute 0
    cost = functools.partial(_geometric_cost, abs_sum=abs_sum, n_nonzero=n - n_zero, lo=lo, hi=hi)
    return EntropyModel(LAPLACE, lo, hi, (_argmin_unimodal(cost, 1, 0xFFFF), n_p0))


def _geometric_cost(n_theta: int, abs_sum: float, n_nonzero: int, lo: int, hi: int) -> float:
    """Code length in nats of the nonzero symbols under p(k) = theta**|k| / Z (ignoring table rounding)."""
    theta = n_theta / 65536

    def run(first: int, last: int) -> float:  # sum of theta**d for d = first..last
        return (theta ** first - theta ** (last + 1)) / (1 - theta) if first <= last else 0.0

    z = run(max(1, -hi), -lo) + run(max(1, lo), hi)
    return -abs_sum * math.log(theta) + n_nonzero * math.log(z) if z > 0 else math.inf


def _argmin_unimodal(f, lo: int, hi: int) -> int:
    """Integer ternary search: the cost is convex in log(theta), hence unimodal in n_theta."""
    while hi - lo > 2:
        m1, m2 = lo + (hi - lo) // 3, hi - (hi - lo) // 3
        if f(m1) <= f(m2):
            hi = m2
        else:
            lo = m1
    return min(range(lo, hi + 1), key=f)


def _fit_histogram(counts: np.ndarray, lo: int, hi: int) -> EntropyModel:
    """Counts quantized to 2**p; p is the one (up to 16, or more if needed) with the fewest table + payload bits."""
    n_used = int(np.count_nonzero(counts))
    p_min = max(1, (n_used - 1).bit_length())
    best = None
    for p in range(p_min, max(p_min, _MAX_HISTOGRAM_PRECISION) + 1):
        table = _quantize_counts(counts, p)
        bits = 8 * _histogram_table_size(table) + _bits_from_counts(counts, table)
        if best is None or bits < best[0]:
            best = (bits, p, table)
    _, p, table = best
    return EntropyModel(HISTOGRAM, lo, hi, (p, *table.tolist()))


def _quantize_counts(counts: np.ndarray, p: int) -> np.ndarray:
    """Frequencies summing to 2**p, >= 1 exactly where the count is > 0 (needs 2**p >= used symbols)."""
    total, n = 1 << p, int(counts.sum())
    used = counts > 0
    table = np.zeros_like(counts, dtype=np.int64)
    table[used] = np.maximum(1, np.rint(counts[used] * (total / n)).astype(np.int64))
    excess = int(table.sum()) - total
    if excess <= 0:
        table[int(np.argmax(counts))] -= excess
        return table
    for i in np.argsort(-table, kind="stable"):  # take the excess from the largest entries
        take = min(excess, int(table[i]) - 1)
        table[i] -= take
        excess -= take
        if excess == 0:
            break
    return table


# ---------------------------------------------------------------------------------------------
# Histogram table bytes: each nonzero frequency as a uvarint; a run of L zeros as uvarint 0
# followed by uvarint L - 1 (sparse wide-range histograms are mostly zero runs).


def _write_histogram_table(writer: ByteWriter, table) -> None:
    i, n = 0, len(table)
    while i < n:
        if table[i]:
            writer.uvarint(int(table[i]))
            i += 1
            continue
        j = i
        while j < n and table[j] == 0:
            j += 1
        writer.uvarint(0)
        writer.uvarint(j - i - 1)
        i = j


def _read_histogram_table(reader: ByteReader, size: int) -> list[int]:
    table: list[int] = []
    while len(table) < size:
        value = reader.uvarint()
        if value:
            table.append(value)
            continue
        run = reader.uvarint() + 1
        if len(table) + run > size:
            raise FormatError(f"{reader.what} holds a histogram zero run past the end of its support")
        table.extend([0] * run)
    return table


def _uvarint_sizes(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    return 1 + sum((values >= (1 << (7 * k))).astype(np.int64) for k in range(1, 9))


def _histogram_table_size(table: np.ndarray) -> int:
    """Bytes `_write_histogram_table` produces for `table`, computed without writing them."""
    zero = np.concatenate([[False], table == 0, [False]]).astype(np.int8)
    edges = np.diff(zero)
    run_lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    nonzero = table[table > 0]
    return int(_uvarint_sizes(nonzero).sum() + (1 + _uvarint_sizes(run_lengths - 1)).sum())


# ---------------------------------------------------------------------------------------------
# The exact face: one constriction range-coder stream.


class _CodingTable(NamedTuple):
    symbols: np.ndarray  # int32 (m,): the support symbols with nonzero frequency, ascending
    index: np.ndarray  # int32 (hi - lo + 1,): position in `symbols`, -1 where the frequency is 0
    categorical: object  # constriction Categorical over 0..m-1, or None when m == 1 (zero payload)


@_small_models_cached
def _coding_table(model: EntropyModel) -> _CodingTable:
    """The model's table as constriction sees it, bit for bit.

    Zero-frequency symbols are dropped (constriction would give them a leaked nonzero mass) and the
    rest scaled to a total of exactly 2**24. constriction's fast quantizer sets
    left_cumulative[i] = floor(cumsum(p)[i] * (2**24 - m) / sum(p)) + i, so passing p = freq - 1
    makes the scale exactly 1.0 and the cumulatives exactly our integer ones (all sums are integers
    below 2**53, hence exact in float64).
    """
    table = model.frequencies()
    used = table > 0
    index = np.cumsum(used, dtype=np.int32) - 1
    index[~used] = -1
    symbols = (np.flatnonzero(used) + model.lo).astype(np.int32)   # lo..hi lie in int32
    if symbols.size == 1:
        return _CodingTable(symbols, index, None)
    shift = PRECISION - (int(table.sum()).bit_length() - 1)
    probabilities = ((table[used] << shift) - 1).astype(np.float64)
    return _CodingTable(symbols, index, constriction.stream.model.Categorical(probabilities, perfect=False))


def encode(arrays: list[tuple[np.ndarray, EntropyModel]]) -> bytes:
    """All arrays, in order, into one range-coded stream; returns its 32-bit words as little-endian bytes.

    Arrays whose model has a single codable symbol take no bits. A symbol outside [lo, hi] or with
    frequency 0 raises ValueError.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    for i, (symbols, model) in enumerate(arrays):
        x = np.asarray(symbols).reshape(-1).astype(np.int64)
        if x.size == 0:
            continue
        if x.min() < model.lo or x.max() > model.hi:
            raise ValueError(f"array {i}: symbols span [{x.min()}, {x.max()}], outside [{model.lo}, {model.hi}]")
        table = _coding_table(model)
        index = table.index[x - model.lo]
        if index.min() < 0:
            raise ValueError(f"array {i}: symbol {x[np.argmin(index)]} has frequency 0 in its model")
        if table.categorical is not None:
            encoder.encode(index, table.categorical)
    return encoder.get_compressed().astype("<u4").tobytes()


def min_bits_per_symbol(model: EntropyModel) -> float:
    """q - log2(max T): no symbol coded with `model` costs fewer bits (0 when it has one codable symbol)."""
    if model.kind == UNIFORM:
        base, extra = divmod(1 << PRECISION, model.size)
        return PRECISION - math.log2(base + (extra > 0))
    if model.kind == HISTOGRAM:
        return model.params[0] - math.log2(max(model.params[1:]))
    return 0.0 if model.size == 1 else PRECISION - math.log2(int(model.frequencies().max()))


def codes_nothing(model: EntropyModel) -> bool:
    """True if the model has a single codable symbol: its tensors take no stream bits (FORMAT.md §8.1)."""
    if model.kind == HISTOGRAM:
        return len(model.params) - 1 - model.params[1:].count(0) == 1
    return model.size == 1   # every UNIFORM and LAPLACE entry is >= 1


def _check_stream_length(n_words: int, specs: list[tuple[int, EntropyModel]]) -> None:
    """Refuses, before decoding, a stream too short for the symbols it must hold (FORMAT.md §8.3)."""
    for count, _ in specs:
        if count < 0:
            raise FormatError(f"negative symbol count {count}")
    need = sum(count * min_bits_per_symbol(model) for count, model in specs if count)
    if need > 32 * (n_words + STREAM_SLACK_WORDS):
        raise FormatError(f"entropy-coded payload of {n_words} words is too short for its symbols "
                          f"(they need at least {math.ceil(need)} bits)")


def decode(data: bytes, specs: list[tuple[int, EntropyModel]]) -> list[np.ndarray]:
    """Inverse of `encode`: `specs` holds (count, model) per array; returns flat int32 arrays.

    An array whose model codes nothing is a read-only broadcast of its one symbol, so it costs no
    memory however many elements it claims. Damaged input raises FormatError when detectable (length,
    a stream too short for its symbols, invalid or unfinished stream); otherwise it decodes to wrong
    symbols, which the container's checksum catches.
    """
    if len(data) % 4:
        raise FormatError(f"entropy-coded payload of {len(data)} bytes is not a whole number of 32-bit words")
    _check_stream_length(len(data) // 4, specs)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype="<u4").astype(np.uint32))
    out = []
    for count, model in specs:
        table = _coding_table(model)
        if table.categorical is None or count == 0:
            out.append(np.broadcast_to(table.symbols[0], (count,)))
            continue
        try:
            index = decoder.decode(table.categorical, count)
        except Exception as e:  # constriction documents no error types; any failure here is bad data
            raise FormatError(f"entropy-coded payload failed to decode: {' '.join(str(e).split())}") from e
        out.append(table.symbols[index])
    # constriction cannot always see the end of a range-coded stream (appended words go unnoticed),
    # but a decoder state that cannot be an encoder's final state means damage.
    if not decoder.maybe_exhausted():
        raise FormatError("entropy-coded payload does not end after the last array (truncated or corrupted)")
    return out
