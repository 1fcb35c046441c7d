"""compress(config, variables) -> .nerva bytes and decompress(bytes) -> (config, variables): the whole codec."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from codec import assets, container, entropy, header, samples, tensors
from codec.bytesio import FormatError
from codec.params import first_match, flatten, layout_crc, unflatten
from codec.quant import QuantizedTensor, quantize, quantize_with_steps
from inr import registry, sizing
from inr.errors import NervaError, one_line


@dataclasses.dataclass(frozen=True)
class QuantPolicy:
    """Bits per tensor, chosen by regex rules over 'collection/path' (first match wins).

    Every tensor is quantized at `bits`, with one step per output channel, except the family's per-frame
    embeddings (`embeddings`, its ModelSpec.embeddings regex), which get `embed_bits`.
    """

    bits: int = 8                  # weights and biases, 2^bits levels per channel
    embed_bits: int | None = None  # the tensors `embeddings` matches; None: same as `bits`
    embeddings: str = ""           # regex over 'collection/path' ("": the family has none)

    def rules(self) -> tuple[tuple[str, int], ...]:
        embed = self.bits if self.embed_bits is None else self.embed_bits
        return ((self.embeddings, embed), (r".*", self.bits)) if self.embeddings else ((r".*", self.bits),)

    def bits_for(self, path: str) -> int:
        return first_match(path, self.rules())


def quantize_variables(variables, policy: QuantPolicy, steps: dict | None = None) -> dict[str, QuantizedTensor]:
    """Every tensor quantized, keyed by its 'collection/...' path: with its learned quantization steps
    where `steps` has them (ModelSpec.learned_steps), else at the bits `policy` gives it."""
    steps = steps or {}
    return {p: quantize_with_steps(np.asarray(x), steps[p]) if p in steps else quantize(np.asarray(x), policy.bits_for(p))
            for p, x in flatten(variables)}


def dequantize_variables(like, quantized: dict[str, QuantizedTensor]):
    """The float variables the decoder will see (a pytree shaped like `like`)."""
    return unflatten(like, {p: q.dequantize() for p, q in quantized.items()})


# A few KB of shapes per config: room for a run of hostile headers without evicting the real files' configs.
@functools.lru_cache(maxsize=256)
def abstract_variables(config):
    """Shapes and dtypes of `config`'s stored variables, without computing any of them."""
    spec = registry.spec_of(config)
    return jax.eval_shape(lambda: spec.init(config, jax.random.key(0)))


def compress(config, quantized: dict[str, QuantizedTensor], rec: samples.RecSection | None = None) -> bytes:
    """A complete .nerva file for `config` holding the quantized tensors and, for a family with REC collections
    (ModelSpec.rec_collections), their relative-entropy-coded sample `rec`."""
    spec = registry.spec_of(config)
    abstract = abstract_variables(config)
    references = spec.references(config)
    sections = [container.Section(container.HEADER, header.write_config(config))]
    colls = {}
    for name in _tensor_collections(spec, config, abstract):
        prefix = name + "/"
        colls[name] = {p[len(prefix):]: q for p, q in quantized.items() if p.startswith(prefix)}
        ref = references.get(name)
        if ref is None:
            body = tensors.encode_collection(name, abstract[name], colls[name])
            sections.append(container.Section(container.TENSORS, body))
        else:   # the family codes this collection as its difference to an earlier one (sorted before it)
            body = tensors.encode_residual(name, ref, abstract[name], colls[name], colls[ref])
            sections.append(container.Section(container.RESIDUAL, body))
    if (rec is None) != (not spec.rec_collections(config)):
        raise ValueError(f"{spec.name}: a file holds a REC section exactly when its model has REC collections")
    if rec is not None:
        sections.append(container.Section(container.REC, samples.encode_section(rec)))
    version = max(tensors.version_needed(abstract, quantized), container.REC_VERSION if rec is not None else 1)
    return container.pack(spec.model_id, sections, version)


# Parameter elements a file may describe (FORMAT.md §5.1). A tensor whose model codes nothing costs no
# payload bits (a static NIRVANA group's residuals, HNeRV's initial all-zero embedding), so the bound is
# per byte of the whole file, not per stream bit: a static NIRVANA group of ~10k parameters costs ~73
# bytes (~137 per byte), so 1024 per byte admits any number of static groups of up to ~75k parameters.
# The fixed 2**20 admits any model of up to a million parameters whatever its file; 2**26 (256 MiB of
# float32 weights, 5x NeRV-L's 12.6M) caps what any file can make the decoder hold.
ELEMENTS_FIXED = 1 << 20
ELEMENTS_PER_BYTE = 1024
MAX_ELEMENTS = sizing.MAX_PARAMS   # 2**26: what the encoder may size a model to


def element_limit(file_bytes: int) -> int:
    """The most parameter elements a .nerva file of `file_bytes` bytes may describe."""
    return min(MAX_ELEMENTS, ELEMENTS_FIXED + ELEMENTS_PER_BYTE * file_bytes)


def _tensor_collections(spec, config, abstract) -> list[str]:
    """The collections a file holds as TENSORS or RESIDUAL sections: all but the REC-coded ones and those the
    prior asset supplies."""
    return [n for n in sorted(abstract) if n not in spec.rec_collections(config) and n not in spec.asset_collections]


def _data_sections(spec, config) -> int:
    """Data sections a file of `config` holds: one per tensor collection, plus one REC section if it has any."""
    n = spec.n_collections(config) - len(spec.asset_collections)
    rec = len(spec.rec_collections(config))
    return n - rec + (1 if rec else 0)


def parse(data: bytes):
    """(config, {collection: (quantized tensors, infos)}, sections) of a .nerva file; a REC section is among
    `sections` (rec_section reads it).

    Every count and size the file claims is checked against its length before anything is allocated or
    traced (FORMAT.md §3, §11); any invalid input raises FormatError with a one-line message.
    """
    model_id, sections = container.unpack(data)
    try:
        spec = registry.get_by_id(model_id)
    except NervaError:
        raise FormatError(f"file uses model id {model_id}, which this nerva does not know") from None
    if not sections or sections[0].kind != container.HEADER:
        raise FormatError("file has no header section")
    config = header.read_config(spec.config_cls, sections[0].body)
    abstract = _checked_abstract(spec, config, len(sections) - 1, len(data))
    references = _built(config, spec.references)
    budget = entropy.TableBudget(len(data))
    collections = {}
    for s in sections[1:]:
        if s.kind == container.REC:
            if container.format_version(data) < container.REC_VERSION:
                raise FormatError(f"file of format version {container.format_version(data)} holds a REC section "
                                  f"(version {container.REC_VERSION} and later)")
            samples.decode_section(s.body)   # its counts and lengths checked here; its samples need the prior
            continue
        if s.kind not in (container.TENSORS, container.RESIDUAL):
            raise FormatError(f"file holds a section of unknown kind {s.kind}")
        name = tensors.collection_name(s.body)
        if name not in abstract or name in collections or name in spec.asset_collections:
            raise FormatError(f"file holds an unexpected collection {_shown(name)}")
        if s.kind == container.TENSORS:
            if name in references:
                raise FormatError(f"collection {name!r} must be residual-coded against {references[name]!r}")
            collections[name] = tensors.decode_collection(s.body, abstract[name], budget,
                                                          container.format_version(data))
        else:
            ref = tensors.residual_reference(s.body)
            if references.get(name) != ref or ref not in collections:
                raise FormatError(f"collection {name!r} refers to {_shown(ref)}, which is not the collection "
                                  "decoded before it that the model chains it to")
            if layout_crc(abstract[ref]) != layout_crc(abstract[name]):   # a model bug, not a file error
                raise ValueError(f"collections {name!r} and {ref!r} have different layouts")
            collections[name] = tensors.decode_residual(s.body, abstract[name], collections[ref][0], budget)
    return config, collections, sections


def _shown(name: str) -> str:
    """A name read from the file, quoted for a message and cut at 40 characters (it may be any bytes)."""
    return repr(name if len(name) <= 40 else name[:40] + "...")


def _checked_abstract(spec, config, n_sections: int, file_bytes: int):
    """The config's abstract variables, once its collection count (before tracing the model, where the
    family can count them without it) and its parameter elements agree with the file."""
    _check_collection_count(_built(config, lambda c: _data_sections(spec, c)), n_sections)
    abstract = _built(config, abstract_variables)
    elements = sum(math.prod(x.shape) for _, x in flatten(abstract))
    if elements > element_limit(file_bytes):
        raise FormatError(f"file header describes {elements} parameters, more than the "
                          f"{element_limit(file_bytes)} a file of {file_bytes} bytes may hold")
    return abstract


def _built(config, fn):
    """fn(config), any failure of the model code given the file's values being the file's."""
    try:
        return fn(config)
    except Exception as e:   # noqa: BLE001 - the trust boundary between file values and model code
        raise FormatError(f"file header describes a {type(config).__name__} that cannot be built: "
                          f"{one_line(e)}") from None


def _check_collection_count(count: int, n_sections: int) -> None:
    if n_sections < count:
        raise FormatError(f"file lacks collections: its header describes {count}, it holds {n_sections} "
                          "data sections")
    if n_sections > count:
        raise FormatError(f"file holds {n_sections} data sections, more than the {count} collections "
                          "its header describes")


def rec_section(config, sections) -> samples.RecSection | None:
    """The file's REC section, checked against the model: exactly one where it has REC collections, else none."""
    spec = registry.spec_of(config)
    found = [samples.decode_section(s.body) for s in sections if s.kind == container.REC]
    wanted = bool(spec.rec_collections(config))
    if len(found) != int(wanted):
        raise FormatError(f"file holds {len(found)} REC sections; its model needs {int(wanted)}")
    return found[0] if found else None


def decompress(data: bytes, priors=()):
    """(config, variables) from the bytes of a .nerva file; needs no other input, except for a family coded
    against a prior (RECOMBINER), whose asset is looked for in `priors` (files or directories), $NERVA_PRIORS
    and the priors shipped with nerva (codec.assets.find).

    Also checks that the model renders frames of the header's geometry (FORMAT.md §11), so a decoder
    or player never serves frames of another size.
    """
    config, collections, sections = parse(data)
    _check_rendered_shape(config)
    abstract = abstract_variables(config)
    variables = {name: dequantize_variables(abstract[name], q) for name, (q, _) in collections.items()}
    rec = rec_section(config, sections)
    if rec is not None:
        asset = assets.find(rec.asset_id, rec.digest, priors)
        prior = samples.prior_of_asset(config, asset)
        for name, flat in samples.decode_samples(config, rec, prior).items():
            variables[name] = _unraveled(abstract[name], flat)
        variables.update({k: jax.tree.map(np.asarray, v) for k, v in prior.shared.items()})
    return config, variables


def _unraveled(abstract, flat: np.ndarray):
    """A raveled collection (jax.flatten_util.ravel_pytree's order, as the encoder laid it out) cut back into
    its tensors, as numpy arrays."""
    _, unravel = ravel_pytree(jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract))
    return jax.tree.map(np.asarray, unravel(jnp.asarray(flat)))




@functools.lru_cache(maxsize=32)
def rendered_shape(config) -> tuple[int, ...]:
    """Shape of one frame rendered by `config`'s model, (1, H, W, 3) when it agrees with its geometry;
    from jax.eval_shape, so nothing is computed."""
    spec = registry.spec_of(config)
    idx = jax.ShapeDtypeStruct((1,), jnp.int32)
    out = jax.eval_shape(lambda v, i: spec.render(config, v, i), abstract_variables(config), idx)
    return tuple(out.shape)


def _check_rendered_shape(config) -> None:
    g = config.geometry
    try:
        shape = rendered_shape(config)
    except Exception as e:   # noqa: BLE001 - model code given file values: any failure is the file's
        raise FormatError(f"file header describes a {type(config).__name__} that cannot render a frame: "
                          f"{one_line(e)}") from None
    if shape != (1, g.height, g.width, 3):
        raise FormatError(f"file header's geometry ({g.height}x{g.width}) disagrees with the frames its "
                          f"model renders (shape {shape})")


def read_file(path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such .nerva file")
    return path.read_bytes()


def load(path, priors=()):
    """(config, variables) of a .nerva file on disk (`priors`: where else to look for its prior, if it has one)."""
    return decompress(read_file(path), priors)
