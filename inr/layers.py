"""Shared decoder pieces: PyTorch-order PixelShuffle, exact GELU, PyTorch-default init, the NeRV upsampling block."""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from inr.cam import TemporalModulation
from inr.errors import ConfigError


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


# Sane limits of the layer sizes any config (so any file header, codec/FORMAT.md §4.3) may hold, far
# above every preset: for_size's width solver stops below 4096 (stem MLPs are twice that), kernels
# are 1..5. They keep tracing bounded (a depthwise conv unrolls k² multiply-adds) and every shape
# product small enough to compare with a file's length before anything is allocated.
MAX_CHANNELS = 2 ** 14     # any channel count or hidden width
MAX_KERNEL = 15            # any conv kernel side
MAX_PE_LEVELS = 128        # NeRV's positional encoding levels L (presets: 40)
MAX_PE_OCTAVES = 64        # pe_base^L <= 2^64: the highest frequency stays finite in float32 (NeRV: 1.25^40 ≈ 2^13)


def check_positional_encoding(where: str, base: float, levels: int) -> None:
    """Raises ConfigError unless base^levels <= 2^MAX_PE_OCTAVES (in logs: no float overflow here)."""
    if levels * math.log2(base) > MAX_PE_OCTAVES:
        raise ConfigError(f"{where}: pe_base^pe_levels = {base:g}^{levels} exceeds 2^{MAX_PE_OCTAVES}")


# PyTorch's default Conv/Linear init: kaiming_uniform(a=√5) gives U(±1/√fan_in) for the weights;
# variance_scaling(1/3, fan_in, uniform) has limit √(3·(1/3)/fan_in) = 1/√fan_in.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def uniform_init(bound: float):
    """Initializer drawing U(-bound, bound)."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def _torch_bias_init(fan_in: int):
    return uniform_init(1.0 / math.sqrt(fan_in))


def inits(init: str, fan_in: int):
    """(kernel_init, bias_init): "torch" = PyTorch's Conv/Linear default (NeRV, HNeRV); "xavier" = xavier-
    uniform kernel, zero bias (NeRV++'s convs); "trunc_normal" = truncated normal σ=0.02, zero bias
    (NeRV++'s Linears)."""
    if init == "torch":
        return torch_kernel_init, _torch_bias_init(fan_in)
    if init == "xavier":
        return nn.initializers.xavier_uniform(), nn.initializers.zeros
    if init == "trunc_normal":
        return nn.initializers.truncated_normal(0.02), nn.initializers.zeros
    raise ValueError(f"unknown init {init!r}")


class Conv(nn.Module):
    """'SAME'-padded stride-1 conv (NHWC), PyTorch-default init unless `weight_init` says otherwise.

    A depthwise conv (groups == input channels == features) runs as k² shifted multiply-adds instead of
    a grouped convolution: the same function and parameters, but XLA:CPU's grouped conv and its
    gradient are 2-7x slower than this (2×144×176×12, fwd+bwd: 3×3 58 -> 8 ms, 5×5 93 -> 49 ms).
    """

    features: int
    kernel: int = 3
    groups: int = 1
    weight_init: str = "torch"   # see inits (not `init`: that would shadow Module.init)

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1] // self.groups * self.kernel * self.kernel
        kernel_init, bias_init = inits(self.weight_init, fan_in)
        if self.groups > 1 and self.groups == x.shape[-1] == self.features:
            return _DepthwiseConv(self.kernel, kernel_init, bias_init, name="conv")(x)
        return nn.Conv(self.features, (self.kernel, self.kernel), padding="SAME",
                       feature_group_count=self.groups, kernel_init=kernel_init, bias_init=bias_init,
                       name="conv")(x)


class _DepthwiseConv(nn.Module):
    """Depthwise 'SAME' conv with nn.Conv's parameter names and shapes: kernel (k, k, 1, C), bias (C,)."""

    kernel: int
    kernel_init: Callable
    bias_init: Callable

    @nn.compact
    def __call__(self, x):
        k, c = self.kernel, x.shape[-1]
        w = self.param("kernel", self.kernel_init, (k, k, 1, c))
        b = self.param("bias", self.bias_init, (c,))
        a = (k - 1) // 2   # SAME padding; an even k pads the extra row/column at the bottom/right
        xp = jnp.pad(x, ((0, 0), (a, k - 1 - a), (a, k - 1 - a), (0, 0)))
        h, wd = x.shape[1], x.shape[2]
        out = b
        for i in range(k):
            for j in range(k):
                out = out + xp[:, i:i + h, j:j + wd, :] * w[i, j, 0]
        return out


class Dense(nn.Module):
    """Linear layer, PyTorch-default init unless `weight_init` says otherwise."""

    features: int
    weight_init: str = "torch"   # see inits (not `init`: that would shadow Module.init)

    @nn.compact
    def __call__(self, x):
        kernel_init, bias_init = inits(self.weight_init, x.shape[-1])
        return nn.Dense(self.features, kernel_init=kernel_init, bias_init=bias_init, name="dense")(x)


class UpBlock(nn.Module):
    """NeRV block: Conv k×k (C_in -> C_out·s²) -> PixelShuffle(s) -> activation (no norm, as in NeRV/HNeRV).

    With `cam_nodes` > 0, CAM's normalization and temporal modulation sit between the PixelShuffle and
    the activation (as in the CAM reference); `pos` (B,) is then the frames' grid position.
    """

    features: int
    stride: int
    kernel: int = 3
    act: str = "gelu"
    cam_nodes: int = 0
    weight_init: str = "torch"   # see inits (not `init`: that would shadow Module.init)

    @nn.compact
    def __call__(self, x, pos=None):
        x = Conv(self.features * self.stride ** 2, self.kernel, weight_init=self.weight_init, name="up")(x)
        x = pixel_shuffle(x, self.stride)
        if self.cam_nodes:
            x = TemporalModulation(self.cam_nodes, name="cam")(x, pos)
        return activation(self.act)(x)


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

