"""Shared layers: the depthwise conv fast path is the grouped convolution it replaces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from inr.layers import Conv, _torch_bias_init, torch_kernel_init


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_depthwise_conv_equals_the_grouped_convolution(k):
    x = jax.random.normal(jax.random.key(0), (2, 9, 11, 6))
    conv = Conv(6, k, groups=6)
    params = conv.init(jax.random.key(1), x)
    kernel, bias = params["params"]["conv"]["kernel"], params["params"]["conv"]["bias"]
    assert kernel.shape == (k, k, 1, 6) and bias.shape == (6,)
    want = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=6) + bias
    np.testing.assert_allclose(conv.apply(params, x), want, atol=1e-5)


def test_depthwise_fast_path_initialises_what_nn_conv_would():
    """Same parameter names, shapes and initial values as the grouped nn.Conv (same file layout)."""
    class Grouped(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(6, (3, 3), padding="SAME", feature_group_count=6, kernel_init=torch_kernel_init,
                           bias_init=_torch_bias_init(9), name="conv")(x)

    x = jnp.ones((1, 4, 4, 6))
    want = Grouped().init(jax.random.key(3), x)["params"]["conv"]
    got = Conv(6, 3, groups=6).init(jax.random.key(3), x)["params"]["conv"]
    assert jax.tree.map(jnp.shape, got) == jax.tree.map(jnp.shape, want)
    assert all(np.array_equal(got[k], want[k]) for k in ("kernel", "bias"))
