"""Shared decoder pieces: PyTorch-order PixelShuffle, exact GELU, PyTorch-default init, the NeRV upsampling block."""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def pixel_shuffle(x: jnp.ndarray, r: int) -> jnp.ndarray:
    """(B, H, W, C·r²) -> (B, H·r, W·r, C) with PyTorch's channel order.

    PyTorch: out[c, h·r+i, w·r+j] = in[c·r² + i·r + j, h, w]. Getting this order wrong still trains but
    breaks weight parity with the reference models, so it is fixed here once.
    """
    b, h, w, crr = x.shape
    c = crr // (r * r)
    x = x.reshape(b, h, w, c, r, r)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c)


def gelu(x: jnp.ndarray) -> jnp.ndarray:
    """Exact (erf) GELU, PyTorch's nn.GELU default; jax.nn.gelu defaults to the tanh approximation."""
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Callable] = {
    "gelu": gelu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "swish": jax.nn.silu,
    "relu": jax.nn.relu,
    "sin": jnp.sin,
}


def activation(name: str) -> Callable:
    return ACTIVATIONS[name]


# PyTorch's default Conv/Linear init: kaiming_uniform(a=√5) gives U(±1/√fan_in) for the weights;
# variance_scaling(1/3, fan_in, uniform) has limit √(3·(1/3)/fan_in) = 1/√fan_in.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


class Conv(nn.Module):
    """'SAME'-padded stride-1 conv (NHWC) with PyTorch-default init of kernel and bias."""

    features: int
    kernel: int = 3
    groups: int = 1

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1] // self.groups * self.kernel * self.kernel
        return nn.Conv(self.features, (self.kernel, self.kernel), padding="SAME",
                       feature_group_count=self.groups, kernel_init=torch_kernel_init,
                       bias_init=_torch_bias_init(fan_in), name="conv")(x)


class Dense(nn.Module):
    """Linear layer with PyTorch-default init."""

    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features, kernel_init=torch_kernel_init,
                        bias_init=_torch_bias_init(x.shape[-1]), name="dense")(x)


class UpBlock(nn.Module):
    """NeRV block: Conv k×k (C_in -> C_out·s²) -> PixelShuffle(s) -> activation (no norm, as in NeRV/HNeRV)."""

    features: int
    stride: int
    kernel: int = 3
    act: str = "gelu"

    @nn.compact
    def __call__(self, x):
        x = Conv(self.features * self.stride ** 2, self.kernel, name="up")(x)
        return activation(self.act)(pixel_shuffle(x, self.stride))


def output_head(x: jnp.ndarray) -> jnp.ndarray:
    """Maps head logits to RGB in [0, 1] with (tanh + 1) / 2, the NeRV-family default."""
    return (jnp.tanh(x) + 1.0) * 0.5


def positional_encoding(t: jnp.ndarray, base: float, levels: int, interleave: bool = True) -> jnp.ndarray:
    """NeRV's frame-index encoding: sin/cos(t·base^i·π) for i < levels.

    Args:
      t: (B,) normalized frame index t = idx / T in [0, 1) (NeRV uses idx/T, not idx/(T-1)).
    Returns:
      (B, 2·levels); NeRV interleaves (sin0, cos0, sin1, ...), HNeRV's NeRV baseline concatenates.
    """
    freqs = jnp.asarray([base ** i * math.pi for i in range(levels)], jnp.float32)
    ang = t[:, None] * freqs[None, :]
    s, c = jnp.sin(ang), jnp.cos(ang)
    if interleave:
        return jnp.stack([s, c], axis=-1).reshape(t.shape[0], 2 * levels)
    return jnp.concatenate([s, c], axis=-1)

