"""REC sections: the collections a family stores as one relative-entropy-coded sample (ModelSpec.rec_collections),
the prior tables a shared asset holds for them, and the blocks both sides derive (FORMAT.md §17).

A file holds at most one REC section; it covers every REC collection of the model, their elements laid end to
end in sorted collection order (each raveled as jax.flatten_util.ravel_pytree lays it out). Body:

  u8 collection count | per collection: string name | string asset id | 32 bytes asset digest (SHA-256,
  codec/assets.py) | u32 seed | f32 KL scale | uvarint block count B | B × u16 indices

Element i draws from prior entry e = entry[i] (RecLayout, offset by the earlier collections' entries): mean
`rec/mean`[e], scale `rec/scale`[e] of the asset. The coding order sorts the elements by coding stage and, within
a stage, by the seed's per-element hash (codec.rec.element_keys, ties by element number); the blocks pack that
order greedily under 16 bits of expected KL, each element's being the asset's `rec/kl`[e] times the KL scale in
2^-20-bit integer units (codec.rec.plan_blocks, at most MAX_BLOCK_DIMS elements a block). Block b's elements take
the prior candidate indices[b] (codec.rec.regenerate). Integers and float32 products only: every machine gets the
same samples.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from codec import assets, rec
from codec.bytesio import ByteReader, ByteWriter, FormatError
from codec.params import flatten
from inr import registry

DIGEST_BYTES = 32
MAX_BLOCKS = 1 << 28    # 4 Gbit of indices; each costs 2 file bytes, so the body length bounds it first

@dataclasses.dataclass(frozen=True)
class Layout:
    """Every coded element of a config, over all its REC collections, flat."""

    names: tuple[str, ...]        # coded collections, sorted
    sizes: tuple[int, ...]        # elements per collection
    entry: np.ndarray             # (N,) int32 into the concatenated tables (collection offsets added)
    stage: np.ndarray             # (N,) int32
    entries: tuple[int, ...]      # table rows per collection
    init_scale: np.ndarray        # (Σ entries,) float32

    @property
    def n(self) -> int:
        return int(self.entry.size)

    @property
    def n_entries(self) -> int:
        return sum(self.entries)


def layout_of(config) -> Layout:
    spec = registry.spec_of(config)
    layouts = spec.rec_collections(config)
    names = tuple(sorted(layouts))
    entry, stage, scale, offset = [], [], [], 0
    for name in names:
        lay = layouts[name]
        entry.append(lay.entry.astype(np.int32) + offset)
        stage.append(lay.stage.astype(np.int32))
        scale.append(np.asarray(lay.init_scale, np.float32))
        offset += lay.entries
    return Layout(names, tuple(int(e.size) for e in entry), np.concatenate(entry), np.concatenate(stage),
                  tuple(layouts[n].entries for n in names), np.concatenate(scale))


def split_flat(layout: Layout, flat) -> dict:
    """Flat vector -> {collection: flat piece}."""
    ends = np.cumsum(layout.sizes)[:-1]
    return dict(zip(layout.names, jnp.split(flat, ends) if isinstance(flat, jax.Array) else np.split(flat, ends)))




@dataclasses.dataclass(frozen=True)
class Prior:
    """What a prior asset holds for coding: per table entry mean, scale (float32, exactly as the file's decoder
    will read them), expected KL bits of one element (on the training set) and the posterior's mean log-scale
    there (the fit's start); the final β of prior learning; the shared network."""

    mean: np.ndarray
    scale: np.ndarray
    kl: np.ndarray
    init_log_scale: np.ndarray
    beta: float
    shared: dict




KL_UNITS = 1 << 20        # expected KL is planned in 2^-20 bits, integers: encoder and decoder get the same blocks
MAX_BLOCK_DIMS = 4096     # elements per block at most (the expected KL of most elements is far below a bit)


def plan(layout: Layout, kl_table: np.ndarray, seed: int, kl_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(coding order (N,), block starts (B+1,)) of a clip: elements sorted by coding stage, shuffled within a
    stage by the shared hash, packed greedily into blocks of BLOCK_BITS of expected KL (the prior's table times
    `kl_scale`, in integer units). The decoder calls this with the file's seed and scale."""
    order = coding_order(layout, seed)
    return order, blocks_of(layout, kl_table, order, kl_scale)


def coding_order(layout: Layout, seed: int) -> np.ndarray:
    """Elements sorted by coding stage, within a stage by the seed's per-element hash (ties by element)."""
    keys = rec.element_keys(seed, np.arange(layout.n, dtype=np.uint32))
    return np.lexsort((keys, layout.stage)).astype(np.int64)


def blocks_of(layout: Layout, kl_table: np.ndarray, order: np.ndarray, kl_scale: float) -> np.ndarray:
    """Block starts (B+1,) over `order`: greedy packing of the expected KL in integer units."""
    scaled = np.asarray(kl_table, np.float64)[layout.entry[order]] * np.float64(kl_scale)
    units = np.rint(scaled * KL_UNITS).astype(np.int64)
    return rec.plan_blocks(units, rec.BLOCK_BITS * KL_UNITS, MAX_BLOCK_DIMS)


def decode_flat(layout: Layout, prior: Prior, seed: int, kl_scale: float, indices: np.ndarray) -> np.ndarray:
    """The decoder's side: the transmitted sample of every element (element order) from the file's seed, KL
    scale and indices and the prior. Raises ValueError if the indices do not match the plan's block count."""
    order, starts = plan(layout, prior.kl, seed, kl_scale)
    if np.shape(indices) != (starts.size - 1,):
        raise ValueError(f"the file holds {indices.size} block indices where its plan has {starts.size - 1} blocks")
    p_mean = prior.mean[layout.entry][order]
    p_scale = prior.scale[layout.entry][order]
    values = rec.regenerate(seed, p_mean, p_scale, order.astype(np.uint32), starts, indices)
    flat = np.empty(layout.n, np.float32)
    flat[order] = values
    return flat




def asset_arrays(prior: Prior) -> dict:
    """The asset's arrays for a prior: its tables under 'rec/', its shared collections under their names."""
    arrays = {"rec/mean": prior.mean, "rec/scale": prior.scale, "rec/kl": prior.kl,
              "rec/init_log_scale": prior.init_log_scale, "rec/beta": np.array([prior.beta], np.float32)}
    for name, tree in prior.shared.items():
        for path, leaf in flatten(tree):
            arrays[f"{name}/{path}"] = np.asarray(leaf, np.float32)
    return arrays


def nested(flat: dict) -> dict:
    """{'a/b': x} -> {'a': {'b': x}}: an asset collection's arrays back as the tree codec.params.flatten laid out."""
    out: dict = {}
    for path, v in flat.items():
        node = out
        *head, last = path.split("/")
        for k in head:
            node = node.setdefault(k, {})
        node[last] = v
    return out


def prior_of_asset(config, asset: assets.Asset) -> Prior:
    """The prior an asset holds, checked against what `config` needs: its family, architecture, table rows and the
    shapes of its shared collections. FormatError (one line) on any mismatch."""
    spec = registry.spec_of(config)
    layout = layout_of(config)
    if asset.meta.get("model") != spec.name:
        raise FormatError(f"prior {asset.id!r} is for model {str(asset.meta.get('model'))[:40]!r}, not {spec.name}")
    arch = registry.spec_of(config).asset_fields(config)
    if asset.meta.get("architecture", {}) != arch:
        raise FormatError(f"prior {asset.id!r} was learned for another architecture ({asset.meta.get('architecture')}) "
                          f"than the file's ({arch})")
    tables = {}
    for k in ("mean", "scale", "kl", "init_log_scale"):
        a = asset.arrays.get(f"rec/{k}")
        if a is None or a.shape != (layout.n_entries,) or a.dtype != np.float32 or not np.isfinite(a).all():
            raise FormatError(f"prior {asset.id!r}: table rec/{k} must be {layout.n_entries} finite float32 numbers")
        tables[k] = a
    if (tables["scale"] <= 0).any() or (tables["kl"] < 0).any():
        raise FormatError(f"prior {asset.id!r}: its scales must be positive and its expected KL non-negative")
    beta = asset.arrays.get("rec/beta")
    if beta is None or beta.shape != (1,) or not np.isfinite(beta).all() or beta[0] <= 0:
        raise FormatError(f"prior {asset.id!r}: rec/beta must be one positive number")
    shared = {}
    abstract = _abstract(config)
    for name in sorted(spec.asset_collections):
        got = asset.collection(name)
        want = dict(flatten(abstract[name]))
        if set(got) != set(want) or any(got[p].shape != tuple(want[p].shape) for p in want):
            raise FormatError(f"prior {asset.id!r}: its collection {name!r} does not have the shapes the model needs")
        if not all(np.isfinite(a).all() for a in got.values()):
            raise FormatError(f"prior {asset.id!r}: collection {name!r} holds non-finite numbers")
        shared[name] = nested(got)
    return Prior(tables["mean"], tables["scale"], tables["kl"], tables["init_log_scale"], float(beta[0]), shared)


def _abstract(config):
    from codec.api import abstract_variables   # api imports this module
    return abstract_variables(config)


@dataclasses.dataclass(frozen=True)
class RecSection:
    names: tuple[str, ...]
    asset_id: str
    digest: bytes
    seed: int
    kl_scale: float
    indices: np.ndarray      # uint16 (B,)


def encode_section(s: RecSection) -> bytes:
    w = ByteWriter()
    w.u8(len(s.names))
    for n in s.names:
        w.blob(n.encode())
    w.blob(assets.check_id(s.asset_id).encode())
    if len(s.digest) != DIGEST_BYTES:
        raise ValueError("an asset digest is 32 bytes")
    w.raw(s.digest)
    w.u32(s.seed)
    w.raw(np.float32(s.kl_scale).astype("<f4").tobytes())
    w.uvarint(s.indices.size)
    w.raw(np.asarray(s.indices, "<u2").tobytes())
    return w.getvalue()


def decode_section(body: bytes) -> RecSection:
    r = ByteReader(body, "REC section")
    n = r.u8()
    names = tuple(r.blob().decode(errors="replace") for _ in range(n))
    try:
        asset_id = assets.check_id(r.blob().decode(errors="replace"))
    except FormatError as e:
        raise FormatError(f"REC section: {e}") from None
    digest = r.raw(DIGEST_BYTES)
    seed = r.u32()
    kl_scale = float(np.frombuffer(r.raw(4), "<f4")[0])
    if not (math.isfinite(kl_scale) and kl_scale > 0):
        raise FormatError(f"REC section: the KL scale must be a positive number, got {kl_scale}")
    blocks = r.uvarint()
    if blocks > MAX_BLOCKS or 2 * blocks != r.remaining():
        raise FormatError(f"REC section claims {blocks} block indices, but {r.remaining()} bytes follow "
                          f"(2 per block)")
    indices = np.frombuffer(r.raw(2 * blocks), "<u2").astype(np.uint16)
    return RecSection(names, asset_id, digest, seed, kl_scale, indices)


def decode_samples(config, section: RecSection, prior: Prior) -> dict:
    """{collection: flat float32 sample} of the REC section; FormatError if it does not fit the model."""
    layout = layout_of(config)
    if section.names != layout.names:
        raise FormatError(f"REC section covers collections {list(section.names)[:8]}, the model codes "
                          f"{list(layout.names)}")
    try:
        flat = decode_flat(layout, prior, section.seed, section.kl_scale, section.indices)
    except ValueError as e:
        raise FormatError(f"REC section: {e}") from None
    ends = np.cumsum(layout.sizes)[:-1]
    return dict(zip(layout.names, np.split(flat, ends)))
