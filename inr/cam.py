"""CAM, coordinate-aware modulation (Lee et al., ICLR 2024), as one reusable layer.

After a conv or linear layer, CAM normalizes the features and then scales and shifts them with (γ, β)
read from a small learnable grid at the input coordinate. For video the coordinate is time: each
modulated layer owns a temporal grid of `nodes` × C values for γ and for β, linearly interpolated
between the two nodes around the frame. Any frame-indexed decoder can switch it on from its config
(`cam_nodes > 0`, see NeRV, HNeRV and NeRV++); the registered model `cam` (in `inr/nerv.py`, because it
is NeRV with CAM on by default) is the reference CAM codec.

Choices, where the reference (maincold2/CAM, class TempMod in its FFNeRV backbone) is followed or not:
- Normalization: per frame and per channel over H×W for conv features (GroupNorm with C groups, no
  affine, ε = 1e-5, as the reference); per point over channels for MLP features (the reference's image
  MLP). Decoding a frame therefore needs the whole frame's feature map, which frame-wise decoders have.
- γ is stored as γ − 1 (both tables start at zero): the stored tensors go through the same per-channel
  quantizer as every weight, whose range always contains 0, so a table near 1 would waste the range on
  [0, 1) and quantize γ with a step ~1/2^b instead of the step of its small deviations from 1.
- The grid spans the clip: node 0 at the first frame, node `nodes`−1 at the last one
  (position = idx / (T − 1), align_corners=True style), so every node is reached.
- The tables live in the `params` collection: quantized, entropy-coded and counted in bpp like any
  weight, and not pruned (pruning touches kernels only). Their learning-rate multiplier (reference:
  10×) is the config field `cam_lr_mult`, applied through the config's `lr_multipliers()` rules.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from inr.config import Limit

EPS = 1e-5
# Field limits of the CAM option (codec/FORMAT.md §4.3): the reference uses 30 nodes; 4096 nodes is more
# than one per frame of any clip anyone fits. The learning-rate multiplier only has to be a sane positive.
CAM_LIMITS = dict(cam_nodes=Limit(0, 4096), cam_lr_mult=Limit(0, 1e6, open_lo=True))


def frame_position(idx: jnp.ndarray, frames: int) -> jnp.ndarray:
    """(B,) frame indices -> (B,) positions in [0, 1] on the modulation grid (first frame 0, last 1)."""
    return idx.astype(jnp.float32) / max(frames - 1, 1)


def lr_rules(lr_mult: float) -> tuple[tuple[str, float], ...]:
    """Learning-rate rules (regex over 'collection/path', multiplier) for every CAM table."""
    return ((r"params/(.*/)?cam/.*", lr_mult),)


def interpolate(table: jnp.ndarray, pos: jnp.ndarray) -> jnp.ndarray:
    """Linear interpolation of a (nodes, C) table at positions (B,) in [0, 1] -> (B, C)."""
    nodes = table.shape[0]
    if nodes == 1:
        return jnp.broadcast_to(table[0], (pos.shape[0], table.shape[1]))
    x = jnp.clip(pos, 0.0, 1.0) * (nodes - 1)
    i0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, nodes - 2)
    w = (x - i0)[:, None]
    return table[i0] * (1.0 - w) + table[i0 + 1] * w


class TemporalModulation(nn.Module):
    """Normalize, then γ(t)·x + β(t) with per-channel (γ, β) from a temporal grid of `nodes` nodes.

    Call with features (B, H, W, C) (conv: normalized over H×W per frame and channel) or (B, C) (MLP:
    normalized over C per point) and positions (B,) from `frame_position`.
    """

    nodes: int

    @nn.compact
    def __call__(self, x: jnp.ndarray, pos: jnp.ndarray) -> jnp.ndarray:
        c = x.shape[-1]
        axes = tuple(range(1, x.ndim - 1)) if x.ndim > 2 else (-1,)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
        x = (x - mean) * jax.lax.rsqrt(var + EPS)
        gamma = 1.0 + interpolate(self.param("gamma", nn.initializers.zeros, (self.nodes, c)), pos)
        beta = interpolate(self.param("beta", nn.initializers.zeros, (self.nodes, c)), pos)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
        return x * gamma.reshape(shape) + beta.reshape(shape)


class CAMOption:
    """Mixin for decoder configs that can switch CAM on. The dataclass declares, as its last fields

        cam_nodes: int = 0          # CAM temporal grid nodes per upsampling block; 0 = off
        cam_lr_mult: float = 10.0   # learning-rate multiplier of the CAM tables (reference: 10x)

    and checks them with CAM_LIMITS among its field limits.
    """

    def lr_multipliers(self) -> tuple[tuple[str, float], ...]:
        return lr_rules(self.cam_lr_mult) if self.cam_nodes else ()
