"""Global magnitude pruning: requested sparsity, untouched non-prunable tensors, and the largest weights kept."""

import jax
import numpy as np
import pytest

from codec.params import flatten
from codec.prune import magnitude_masks, sparsity_of


def variables(seed=0):
    """Kernels at three very different scales (so a global threshold prunes them unequally), plus biases
    and latents that are not prunable."""
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "a": {"kernel": rng.standard_normal((64, 32)).astype(np.float32),
                  "bias": rng.standard_normal(32).astype(np.float32) * 1e-3},
            "b": {"kernel": (0.05 * rng.standard_normal((3, 3, 8, 16))).astype(np.float32),
                  "bias": rng.standard_normal(16).astype(np.float32) * 1e-3},
            "c": {"kernel": (5.0 * rng.standard_normal((16, 3))).astype(np.float32)},
        },
        "latents": {"embedding": rng.standard_normal((8, 2, 3, 4)).astype(np.float32) * 1e-3},
    }


def is_kernel(path):
    return path.endswith("/kernel")


def split(tree, masks):
    """(|w| of kept prunable weights, |w| of removed prunable weights, {path: mask} of the others)."""
    kept, removed, others = [], [], {}
    for (p, w), (q, m) in zip(flatten(tree), flatten(masks)):
        assert p == q
        m = np.asarray(m)
        assert m.shape == np.shape(w) and m.dtype == np.float32
        if is_kernel(p):
            kept.append(np.abs(w[m == 1]))
            removed.append(np.abs(w[m == 0]))
        else:
            others[p] = m
    return np.concatenate(kept), np.concatenate(removed), others


SPARSITIES = [0.1, 0.37, 0.5, 0.9, 0.999]


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_masks_remove_the_requested_fraction_of_prunable_weights_to_within_one(sparsity):
    tree = variables()
    masks = magnitude_masks(tree, is_kernel, sparsity)
    assert jax.tree.structure(masks) == jax.tree.structure(tree)
    kept, removed, _ = split(tree, masks)
    total = kept.size + removed.size
    assert total == 64 * 32 + 3 * 3 * 8 * 16 + 16 * 3
    assert abs(removed.size - sparsity * total) <= 1
    pruned = jax.tree.map(lambda w, m: np.asarray(w) * np.asarray(m), tree, masks)
    assert abs(sparsity_of(pruned, is_kernel) - sparsity) <= 1 / total


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_tensors_that_are_not_prunable_keep_all_ones_masks(sparsity):
    _, _, others = split(variables(), magnitude_masks(variables(), is_kernel, sparsity))
    assert sorted(others) == ["latents/embedding", "params/a/bias", "params/b/bias"]
    for path, m in others.items():
        assert np.all(m == 1), path


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_kept_weights_are_exactly_the_largest_by_magnitude_over_all_prunable_tensors(sparsity):
    tree = variables()
    kept, removed, _ = split(tree, magnitude_masks(tree, is_kernel, sparsity))
    assert kept.min() > removed.max()


def test_one_global_threshold_prunes_small_scale_tensors_harder():
    tree = variables()
    masks = dict(flatten(magnitude_masks(tree, is_kernel, 0.5)))
    kept = {p: float(np.asarray(masks[p]).mean()) for p in masks if is_kernel(p)}
    # A per-tensor threshold would keep half of each; the global one keeps b's 0.05-scale weights least.
    assert kept["params/b/kernel"] < 0.05 < 0.5 < kept["params/a/kernel"] < kept["params/c/kernel"]


def test_zero_sparsity_keeps_every_weight():
    masks = magnitude_masks(variables(), is_kernel, 0.0)
    assert all(np.all(np.asarray(m) == 1) for m in jax.tree.leaves(masks))
