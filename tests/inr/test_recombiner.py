"""RECOMBINER's model: the patch grid over any frame size, the element layout, and one pixel by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inr import recombiner as R
from inr import registry
from inr.config import Geometry
from inr.errors import ConfigError


@pytest.mark.parametrize("t,h,w", [(1, 1, 1), (3, 17, 33), (9, 31, 29), (17, 8, 8)])
def test_any_frame_size_renders_exactly_the_source_size(t, h, w):
    config = R.RecombinerConfig.tiny(Geometry.of(t, h, w))
    v = R.init(config, jax.random.key(0))
    out = R.render(config, v, jnp.arange(t, dtype=jnp.int32))
    assert out.shape == (t, h, w, 3)
    assert bool(jnp.all((out >= 0) & (out <= 1)))
    # the padded grid covers the frame with less than one patch to spare on every axis
    for n, p, k in zip((t, h, w), config.patch, config.grid):
        assert (k - 1) * p < n <= k * p


def test_element_layout_counts_every_level_by_hand():
    """tiny on 8×16×24: patches 8×8×8 -> grid 1×2×3 = 6 patches, groups 1×2×2 -> 1×1×2 = 2 groups; MLP
    (6·2 Fourier + 4 LPE = 16) -> 8 -> 3: P = 17·8 + 9·3 = 163; latents (1, 2, 3) cells × 2 channels."""
    config = R.RecombinerConfig.tiny(Geometry.of(8, 16, 24))
    assert config.weights_per_patch == 17 * 8 + 9 * 3 == 163
    entry, stage = R.element_layout(config)
    p = 163
    assert entry.size == 6 * p + 2 * p + p + 6 * 2
    assert np.bincount(stage).tolist() == [p, 2 * p, 6 * p + 12]
    assert entry.max() == R.prior_entries(config) - 1 == 3 * p + 1
    # the element order is the sample collection's ravel order: h1 rows, h2 rows, h3, latents
    assert entry[:p].tolist() == list(range(2 * p, 3 * p)) and entry[6 * p:7 * p].tolist() == list(range(p, 2 * p))


def test_one_pixel_by_hand_with_the_plain_reparameterisation():
    """At left = right = I and a zero LPE network, a pixel is the SIREN on its Fourier features and zeros:
    computed here with numpy from the formulas in the module docstring."""
    config = R.RecombinerConfig.tiny(Geometry.of(8, 16, 24))
    v = R.init(config, jax.random.key(3))
    v["prior"]["up0"]["kernel"] = jnp.zeros_like(v["prior"]["up0"]["kernel"])
    v["prior"]["up1"]["kernel"] = jnp.zeros_like(v["prior"]["up1"]["kernel"])
    rng = np.random.default_rng(0)
    v["sample"]["h1"] = jnp.asarray(rng.normal(0, 0.05, v["sample"]["h1"].shape), jnp.float32)
    frame, y, x = 5, 11, 19                         # patch (0, 1, 2), local (5, 3, 3)
    got = np.asarray(R.render(config, v, jnp.array([frame], jnp.int32)))[0, y, x]
    h = np.asarray(v["sample"]["h1"][0 * 6 + 1 * 3 + 2] + v["sample"]["h2"][1] + v["sample"]["h3"], np.float64)

    def feats(n, i):
        u = (2 * i + 1) / n - 1
        f = math.pi * np.exp(np.linspace(0, math.log(n / 2), config.freqs))
        return np.concatenate([np.cos(u * f), np.sin(u * f)])
    inp = np.concatenate([feats(8, frame % 8), feats(8, y % 8), feats(8, x % 8), np.zeros(config.lpe_channels)])
    at = 0
    for li, (i, o) in enumerate(config.dims):
        m = h[at:at + (i + 1) * o].reshape(i + 1, o)
        at += (i + 1) * o
        inp = inp @ m[:-1] + m[-1]
        if li < len(config.dims) - 1:
            inp = np.sin(config.w0 * inp)
    np.testing.assert_allclose(got, np.clip(inp + 0.5, 0, 1), atol=2e-5)


def test_patches_must_be_whole_latent_cells():
    with pytest.raises(ConfigError, match="multiple of 8"):
        R.RecombinerConfig(Geometry.of(8, 16, 16), patch=(12, 16, 16))


def test_the_family_is_registered_by_name_and_id_but_not_yet_listed():
    assert registry.get_by_id(6) is R.SPEC and registry.get("recombiner") is R.SPEC
    assert "recombiner" not in registry.names() and "recombiner" in registry.names(listed_only=False)
