"""Parameter counting from abstract shapes, and a width solver that hits a parameter budget."""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax

from inr.errors import ConfigError


@functools.lru_cache(maxsize=4096)
def count(init: Callable, config) -> int:
    """Number of stored parameters of `config`, from `jax.eval_shape` (no arrays are allocated).

    Memoized: configs are frozen, and tracing a large decoder takes up to a second, while the width
    solver and every `for_size` caller ask about the same configs again."""
    shapes = jax.eval_shape(lambda: init(config, jax.random.key(0)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def solve_width(make: Callable[[int], object], budget: int, counter: Callable, lo: int = 2,
                hi: int = 4096):
    """The config `make(w)` with the largest integer width w whose parameter count is <= budget.

    Parameter count is monotone in the width, so bisection is exact (the reference HNeRV solves a
    quadratic in the first-stage width; this works for any family without a closed form).
    """
    if counter(make(lo)) > budget:
        raise ConfigError(f"a budget of {budget} parameters is below the smallest model "
                          f"({counter(make(lo))} parameters) for this frame size")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if counter(make(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return make(lo)
