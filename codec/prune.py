"""Global magnitude pruning: one threshold over every prunable tensor zeroes the smallest weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from codec.params import flatten, unflatten


def magnitude_masks(tree, prunable, sparsity: float):
    """Masks (1 = kept) with `sparsity` of the prunable weights set to zero, by global |w| threshold.

    Args:
      tree: variables pytree.
      prunable: callable(path) -> bool choosing the tensors that take part (kernels, not biases).
      sparsity: fraction of prunable weights removed, in [0, 1). (NeRV's --prune_ratio is the fraction
        *kept*; here the number means what it says.)
    Returns:
      a pytree like `tree` of float32 masks; tensors that are not prunable get all-ones masks.
    """
    flat = flatten(tree)
    chosen = [np.abs(np.asarray(x)).ravel() for p, x in flat if prunable(p)]
    if not chosen or sparsity <= 0:
        return jax.tree.map(lambda x: jnp.ones_like(x), tree)
    mags = np.concatenate(chosen)
    k = int(round(sparsity * mags.size))
    thresh = np.partition(mags, k - 1)[k - 1] if k > 0 else -1.0
    masks = {p: (np.abs(np.asarray(x)) > thresh).astype(np.float32) if prunable(p)
             else np.ones(np.shape(x), np.float32) for p, x in flat}
    return jax.tree.map(jnp.asarray, unflatten(tree, masks))


def sparsity_of(tree, prunable) -> float:
    """Fraction of exact zeros among the prunable weights."""
    flat = [np.asarray(x) for p, x in flatten(tree) if prunable(p)]
    total = sum(x.size for x in flat)
    return sum(int((x == 0).sum()) for x in flat) / total if total else 0.0
