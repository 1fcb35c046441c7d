"""RECOMBINER (He et al., ICLR 2024) for video: a Bayesian patch INR whose weights travel as one sample of their
posterior, relative-entropy coded (codec/rec.py) against a learned prior that encoder and decoder share.

The clip, padded to whole patches (default 16 frames × 16 × 16 pixels; cropped back after rendering), is cut
into patches; each patch has its own small SIREN on Fourier features of its local (t, y, x) plus a learnable
positional encoding (LPE). Every stored number is a sample of a factorised Gaussian; the decoder regenerates it
from the file's 16-bit indices and the prior (a shared asset, never in the file). What the file's samples are:

- `sample/h1` (patches, P), `sample/h2` (level-2 groups, P), `sample/h3` (P,): the three-level hierarchy of the
  paper. A patch's pre-transform weight vector is h = h1[patch] + h2[its group] + h3 (patch, group of patches,
  clip), each level with its own learned prior; P = Σ_l (d_in_l + 1)·d_out_l weights and biases of its MLP.
- `sample/latent` (Tl, Hl, Wl, C): the LPE latent grid, one C-vector per LATENT_STRIDE³ cell of the padded clip.

What the prior asset supplies (`prior` collection, learned with the prior and frozen when a clip is encoded):

- The linear reparameterisation of each layer: its (d_in + 1) × d_out matrix of weights and bias is
  M_l = left_l · H_l · right_l, H_l being h's slice. The paper's dense A over the flattened layer is
  ((d_in + 1)·d_out)² ≈ 1.1M numbers per 32-wide layer (13 MB of prior per rate for three layers); the
  two-sided (Kronecker) form mixes rows and columns with 35² + 32² numbers and is the "block form where dense A
  is too large" the issue allows. At left = right = I it is the plain MLP.
- The LPE upsampler, per latent frame: ×2 nearest → 3×3 conv (C → U) → LeakyReLU → ×2 nearest → 3×3 conv
  (U → U) → LeakyReLU, then ×2 bilinear to pixels (8 = LATENT_STRIDE in all), and linear interpolation between
  latent frames. The paper upsamples one latent vector per 24×16×16 patch with a 3-D CNN (~57k MACs per pixel,
  most of its decode cost); this one costs ~1.3k MACs per pixel, and the INR 3.3k.

Fourier features: the reference uses frequencies {1, 32, 1024}·π on coordinates in [-1, 1] for 16-pixel patches,
far above a patch's Nyquist frequency (8π); here the frequencies are log-spaced from π up to that Nyquist
frequency per axis, so no feature aliases.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from inr.config import ConfigBase, Geometry, Limit
from inr.errors import ConfigError
from inr.registry import ModelSpec, RecLayout, register

LATENT_STRIDE = 8        # latent cell side in frames and pixels: two ×2 conv stages and a ×2 bilinear step
LEAKY_SLOPE = 0.2
MAX_PATCH = 64           # frames or pixels per patch side
MAX_WIDTH = 256          # hidden width, latent and LPE channels

# The coding stages (codec.rec codes stage 0's blocks first): the paper codes the clip level, then the group level,
# then the patch level with the LPE latents, re-tuning what is not yet coded in between.
STAGE_CLIP, STAGE_GROUP, STAGE_PATCH = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class RecombinerConfig(ConfigBase):
    """A RECOMBINER clip: patch grid and INR architecture. The architecture fields must equal the prior's."""

    geometry: Geometry
    patch: tuple[int, ...] = (16, 16, 16)     # frames, rows, columns per patch (multiples of LATENT_STRIDE)
    group: tuple[int, ...] = (1, 4, 4)        # patches per level-2 group along (t, y, x)
    hidden: int = 32                          # width of the SIREN's hidden layers
    layers: int = 3                           # hidden layers
    freqs: int = 3                            # Fourier frequencies per coordinate (6·freqs features)
    latent_channels: int = 8                  # C: LPE latent channels per cell
    lpe_channels: int = 16                    # U: LPE features per pixel (the upsampler's width)
    w0: float = 30.0                          # SIREN frequency factor

    LIMITS = dict(patch=Limit(LATENT_STRIDE, MAX_PATCH, min_len=3, max_len=3),
                  group=Limit(1, 64, min_len=3, max_len=3), hidden=Limit(1, MAX_WIDTH), layers=Limit(1, 8),
                  freqs=Limit(1, 16), latent_channels=Limit(1, MAX_WIDTH), lpe_channels=Limit(1, MAX_WIDTH),
                  w0=Limit(0.1, 1000.0))

    def __post_init__(self):
        self.check_limits()
        if any(p % LATENT_STRIDE for p in self.patch):
            raise ConfigError(f"RecombinerConfig.patch {self.patch}: every side must be a multiple of {LATENT_STRIDE}")

    # --- the patch grid ---
    @property
    def grid(self) -> tuple[int, int, int]:
        """Patches along (t, y, x): the clip padded up to whole patches."""
        g = self.geometry
        return tuple(-(-n // p) for n, p in zip((g.frames, g.height, g.width), self.patch))

    @property
    def group_grid(self) -> tuple[int, int, int]:
        return tuple(-(-n // k) for n, k in zip(self.grid, self.group))

    @property
    def latent_grid(self) -> tuple[int, int, int]:
        return tuple(n * p // LATENT_STRIDE for n, p in zip(self.grid, self.patch))

    # --- the INR ---
    @property
    def dims(self) -> tuple[tuple[int, int], ...]:
        """(d_in, d_out) of each layer, the output layer last."""
        widths = [6 * self.freqs + self.lpe_channels] + [self.hidden] * self.layers + [3]
        return tuple(zip(widths[:-1], widths[1:]))

    @property
    def weights_per_patch(self) -> int:
        return sum((i + 1) * o for i, o in self.dims)

    def architecture(self) -> dict:
        """The fields a prior is learned for (the rest, geometry and grouping, only count its elements)."""
        d = self.to_dict()
        return {k: d[k] for k in ("patch", "hidden", "layers", "freqs", "latent_channels", "lpe_channels", "w0")}

    @classmethod
    def for_size(cls, geometry: Geometry, n_params: int = 0, **overrides) -> "RecombinerConfig":
        """The default architecture (the shipped priors'): RECOMBINER's rate is set by how many 16-bit blocks
        the file holds, not by a parameter count, so `n_params` does not size it."""
        return cls(geometry, **overrides)

    @classmethod
    def tiny(cls, geometry: Geometry | None = None) -> "RecombinerConfig":
        return cls(geometry or Geometry.of(8, 16, 24), patch=(8, 8, 8), group=(1, 2, 2), hidden=8, layers=1,
                   freqs=2, latent_channels=2, lpe_channels=4)


# --------------------------------------------------------------------------------------------------------------
# Stored variables: the coded samples and the prior's shared network


def init(config: RecombinerConfig, key: jax.Array) -> dict:
    """{"sample": the coded tensors, "prior": the shared network}, at their initial values: the shared network
    plain (left = right = I), h3 a SIREN initialisation, h1, h2 and the latents zero."""
    k_h3, k_up = jax.random.split(key)
    nt, ny, nx = config.grid
    n_groups = math.prod(config.group_grid)
    p = config.weights_per_patch
    sample = {"h1": jnp.zeros((nt * ny * nx, p)), "h2": jnp.zeros((n_groups, p)),
              "h3": siren_init(config, k_h3), "latent": jnp.zeros((*config.latent_grid, config.latent_channels))}
    return {"sample": sample, "prior": init_shared(config, k_up)}


def siren_init(config: RecombinerConfig, key) -> jax.Array:
    """A flat (P,) SIREN initialisation (Sitzmann et al.): first layer U(±1/d_in), later ones U(±√(6/d_in)/w0),
    biases the same; laid out as `layer_matrices` reads it."""
    parts = []
    for li, (i, o) in enumerate(config.dims):
        key, sub = jax.random.split(key)
        bound = 1.0 / i if li == 0 else math.sqrt(6.0 / i) / config.w0
        parts.append(jax.random.uniform(sub, ((i + 1) * o,), minval=-bound, maxval=bound))
    return jnp.concatenate(parts)


def init_shared(config: RecombinerConfig, key) -> dict:
    c, u = config.latent_channels, config.lpe_channels
    shared = {}
    for li, (i, o) in enumerate(config.dims):
        shared[f"mix{li}"] = {"left": jnp.eye(i + 1), "right": jnp.eye(o)}
    k0, k1 = jax.random.split(key)
    shared["up0"] = {"kernel": _he(k0, (3, 3, c, u)), "bias": jnp.zeros((u,))}
    shared["up1"] = {"kernel": _he(k1, (3, 3, u, u)), "bias": jnp.zeros((u,))}
    return shared


def _he(key, shape):
    fan_in = math.prod(shape[:-1])
    return jax.random.normal(key, shape) * math.sqrt(2.0 / fan_in)


# --------------------------------------------------------------------------------------------------------------
# Rendering


def layer_matrices(config: RecombinerConfig, shared: dict, h: jax.Array) -> list[jax.Array]:
    """h (..., P) -> per layer the (..., d_in + 1, d_out) matrix of weights (rows :d_in) and bias (last row)."""
    out, at = [], 0
    for li, (i, o) in enumerate(config.dims):
        hl = h[..., at:at + (i + 1) * o].reshape(*h.shape[:-1], i + 1, o)
        at += (i + 1) * o
        m = shared[f"mix{li}"]
        out.append(jnp.einsum("ab,...bc,cd->...ad", m["left"], hl, m["right"]))
    return out


def patch_weights(config: RecombinerConfig, sample: dict, slabs: jax.Array) -> jax.Array:
    """h of every patch in the given temporal slabs: (B,) slab numbers -> (B, ny, nx, P)."""
    nt, ny, nx = config.grid
    gt, gy, gx = config.group
    _, g2y, g2x = config.group_grid
    p = config.weights_per_patch
    h1 = sample["h1"].reshape(nt, ny, nx, p)[slabs]
    h2 = sample["h2"].reshape(-1, g2y, g2x, p)[slabs // gt]                  # (B, g2y, g2x, P)
    h2 = h2[:, np.arange(ny) // gy][:, :, np.arange(nx) // gx]                # each patch's group
    return h1 + h2 + sample["h3"]


def fourier_features(config: RecombinerConfig, tt: jax.Array) -> jax.Array:
    """(B,) frame offsets within the patch -> (B, ph·pw, 6·freqs): cos/sin of the local (t, y, x) in [-1, 1] at
    pixel centres, frequencies log-spaced from π to each axis's Nyquist frequency (side/2)·π."""
    pt, ph, pw = config.patch

    def axis(n, pos):
        u = (2.0 * pos.astype(jnp.float32) + 1.0) / n - 1.0
        f = jnp.pi * jnp.exp(jnp.linspace(0.0, math.log(n / 2), config.freqs))
        a = u[..., None] * f
        return jnp.concatenate([jnp.cos(a), jnp.sin(a)], -1)

    ft = axis(pt, tt)[:, None, :]                                             # (B, 1, 2F)
    y, x = jnp.meshgrid(jnp.arange(ph), jnp.arange(pw), indexing="ij")
    fyx = jnp.concatenate([axis(ph, y.reshape(-1)), axis(pw, x.reshape(-1))], -1)[None]   # (1, ph·pw, 4F)
    return jnp.concatenate([jnp.broadcast_to(ft, (tt.shape[0], ph * pw, ft.shape[-1])),
                            jnp.broadcast_to(fyx, (tt.shape[0], *fyx.shape[1:]))], -1)


def _conv(x, p):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def _up2(x):
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def lpe_features(config: RecombinerConfig, shared: dict, latent: jax.Array, idx: jax.Array) -> jax.Array:
    """Per-pixel LPE features of frames idx (B,): (B, H', W', U) over the padded frame. The two latent frames
    around each frame go through the upsampler and are mixed linearly (cell centres at (i + ½)·stride)."""
    tl = latent.shape[0]
    u = (idx.astype(jnp.float32) + 0.5) / LATENT_STRIDE - 0.5
    i0 = jnp.clip(jnp.floor(u), 0, tl - 1).astype(jnp.int32)
    i1 = jnp.minimum(i0 + 1, tl - 1)
    frac = jnp.clip(u - i0, 0.0, 1.0)[:, None, None, None]
    b = idx.shape[0]
    z = jnp.concatenate([latent[i0], latent[i1]])                            # (2B, Hl, Wl, C)
    z = jax.nn.leaky_relu(_conv(_up2(z), shared["up0"]), LEAKY_SLOPE)
    z = jax.nn.leaky_relu(_conv(_up2(z), shared["up1"]), LEAKY_SLOPE)
    n, hh, ww, ch = z.shape
    z = jax.image.resize(z, (n, 2 * hh, 2 * ww, ch), "linear")
    return z[:b] * (1.0 - frac) + z[b:] * frac


def render_padded(config: RecombinerConfig, variables: dict, idx: jax.Array) -> jax.Array:
    """idx (B,) -> (B, H', W', 3) in [0, 1] over the padded frame."""
    sample, shared = variables["sample"], variables["prior"]
    pt, ph, pw = config.patch
    _, ny, nx = config.grid
    b = idx.shape[0]
    mats = layer_matrices(config, shared, patch_weights(config, sample, idx // pt))   # (B, ny, nx, i+1, o)
    lpe = lpe_features(config, shared, sample["latent"], idx)                         # (B, H', W', U)
    lpe = lpe.reshape(b, ny, ph, nx, pw, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, ny, nx, ph * pw, -1)
    four = jnp.broadcast_to(fourier_features(config, idx % pt)[:, None, None], (*lpe.shape[:-1], 6 * config.freqs))
    x = jnp.concatenate([four, lpe], -1)
    for li, m in enumerate(mats):
        x = jnp.einsum("...pi,...io->...po", x, m[..., :-1, :]) + m[..., -1:, :]
        if li < len(mats) - 1:
            x = jnp.sin(config.w0 * x)
    x = jnp.clip(x + 0.5, 0.0, 1.0)   # the output layer's bias starts at the clip's mid grey
    return x.reshape(b, ny, nx, ph, pw, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, ny * ph, nx * pw, 3)


def render(config: RecombinerConfig, variables: dict, idx: jax.Array) -> jax.Array:
    g = config.geometry
    return render_padded(config, variables, idx)[:, :g.height, :g.width]


# --------------------------------------------------------------------------------------------------------------
# The coded elements: which prior entry and which coding stage each sample belongs to


def prior_entries(config: RecombinerConfig) -> int:
    """Entries of the prior's tables: one per weight position for each of the three levels, one per latent
    channel."""
    return 3 * config.weights_per_patch + config.latent_channels


def element_layout(config: RecombinerConfig) -> tuple[np.ndarray, np.ndarray]:
    """(prior entry, coding stage) of every element of the `sample` collection, int32 (N,) each, in the order of
    `flatten_sample` (its sorted keys: h1, h2, h3, latent)."""
    p = config.weights_per_patch
    n1, n2 = math.prod(config.grid), math.prod(config.group_grid)
    n_lat = math.prod(config.latent_grid)
    pos = np.arange(p, dtype=np.int32)
    entry = np.concatenate([np.tile(pos + 2 * p, n1), np.tile(pos + p, n2), pos,
                            np.tile(np.arange(config.latent_channels, dtype=np.int32) + 3 * p, n_lat)])
    stage = np.concatenate([np.full(n1 * p, STAGE_PATCH), np.full(n2 * p, STAGE_GROUP), np.full(p, STAGE_CLIP),
                            np.full(n_lat * config.latent_channels, STAGE_PATCH)]).astype(np.int32)
    return entry, stage


def flatten_sample(sample: dict) -> jax.Array:
    return ravel_pytree(sample)[0]


def unflatten_sample(config: RecombinerConfig, flat) -> dict:
    like = jax.eval_shape(lambda: init(config, jax.random.key(0))["sample"])
    _, unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like))
    return unravel(jnp.asarray(flat, jnp.float32))


def rec_collections(config: RecombinerConfig) -> dict:
    entry, stage = element_layout(config)
    return {"sample": RecLayout(entry, stage, prior_entries(config), initial_prior_scale(config))}


def initial_prior_scale(config: RecombinerConfig) -> np.ndarray:
    """The prior's scale per entry before it is learned: at the clip level a SIREN initialisation's standard
    deviation (U(±b) has b/√3), at the group and patch levels a third of it, latents 1 (rows as
    `element_layout` numbers them: clip, group, patch level, latent channels)."""
    std = []
    for li, (i, o) in enumerate(config.dims):
        bound = 1.0 / i if li == 0 else math.sqrt(6.0 / i) / config.w0
        std.append(np.full((i + 1) * o, bound / math.sqrt(3.0)))
    std = np.concatenate(std)
    return np.concatenate([std, std / 3, std / 3, np.ones(config.latent_channels)]).astype(np.float32)


SPEC = register(ModelSpec(
    name="recombiner", model_id=6, config_cls=RecombinerConfig, init=init, render=render,
    for_size=RecombinerConfig.for_size, rec_collections=rec_collections, asset_collections=frozenset({"prior"}),
    asset_fields=RecombinerConfig.architecture,
    fit_options=frozenset({"batch", "pipeline"}), prune_rules=(),
    preset=dict(size=0, lr=2e-3, beta1=0.9, epochs=30), listed=False, pipelines=("rec",),
    description="RECOMBINER: Bayesian patch INR, one posterior sample relative-entropy coded against a learned prior"))
