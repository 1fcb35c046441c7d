"""Parameter counting from abstract shapes, and a width solver that hits a parameter budget."""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax

from inr.errors import ConfigError

# The largest parameter budget any model is sized to (--size, --sizes, or what a --bpp target implies), and
# the most parameters a .nerva file may describe (codec.api.MAX_ELEMENTS, FORMAT.md §5.1), so that nerva never
# fits a model its own reader refuses: 2^26 are 256 MiB of float32 weights (~1 GiB with the gradient and
# Adam's two moments), five times NeRV-L's 12.6M and far past the presets (0.1-3M).
MAX_PARAMS = 1 << 26
# `nerva fit`'s target under the rate-distortion pipeline (train.cli) when neither --bpp nor --lambda is
# given. That pipeline is the default since it won on every family and clip measured (bench/README.md,
# issue 14: BD-rate against fit + 6-bit QAT at the same epochs from -39 % to -66 %); 0.1 bpp lies inside
# the range those sweeps cover (0.02-0.2).
DEFAULT_BPP = 0.1


@functools.lru_cache(maxsize=4096)
def count(init: Callable, config) -> int:
    """Number of stored parameters of `config`, from `jax.eval_shape` (no arrays are allocated).

    Memoized: configs are frozen, and tracing a large decoder takes up to a second, while the width
    solver and every `for_size` caller ask about the same configs again."""
    shapes = jax.eval_shape(lambda: init(config, jax.random.key(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def solve_width(make: Callable[[int], object], budget: int, counter: Callable, lo: int = 2,
                hi: int = 4096):
    """The config `make(w)` with the largest integer width lo <= w < hi whose parameter count is <= budget.

    Parameter count is monotone in the width, so a bracket search is exact (the reference HNeRV solves a
    quadratic in the first-stage width; this works for any family without a closed form). Counts grow
    about as w², so each step guesses where √count reaches √budget between the bracket's ends and probes
    that width (and, in a small bracket, its neighbour): 6-9 counts instead of bisection's 13, and each
    count traces the model (up to a second for NeRV++). A guess that does not halve the bracket is
    followed by a bisection step, so the search never takes more than about twice bisection's steps.
    """
    counts: dict[int, int] = {}

    def n(w: int) -> int:
        if w not in counts:
            counts[w] = counter(make(w))
        return counts[w]

    if n(lo) > budget:
        raise ConfigError(f"a budget of {budget} parameters is below the smallest model "
                          f"({n(lo)} parameters) for this frame size")
    if n(hi - 1) <= budget:
        return make(hi - 1)
    hi -= 1   # from here on both ends of the bracket are counted
    bisect = False
    while hi - lo > 1:
        width = hi - lo
        w = (lo + hi) // 2 if bisect else _guess(lo, hi, counts, budget)
        close = not bisect and width < 64   # a guess in a small bracket is usually exact: try to close it
        if n(w) <= budget:
            lo = w
            if close and w + 1 < hi and n(w + 1) > budget:
                hi = w + 1
        else:
            hi = w
            if close and w - 1 > lo and n(w - 1) <= budget:
                lo = w - 1
        bisect = not bisect and hi - lo > width // 2
    return make(lo)


def _guess(lo: int, hi: int, counts: dict[int, int], budget: int) -> int:
    """The width strictly inside (lo, hi) where √count, interpolated linearly between them, reaches √budget."""
    r_lo, r_hi = math.sqrt(counts[lo]), math.sqrt(counts[hi])
    w = lo + (math.sqrt(budget) - r_lo) * (hi - lo) / max(r_hi - r_lo, 1e-9)
    return min(max(int(w), lo + 1), hi - 1)
