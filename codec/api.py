"""compress(config, variables) -> .nerva bytes and decompress(bytes) -> (config, variables): the whole codec."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import numpy as np

from codec import container, header, tensors
from codec.bytesio import FormatError
from codec.params import first_match, flatten, layout_crc, unflatten
from codec.quant import QuantizedTensor, quantize
from inr import registry
from inr.errors import NervaError


@dataclasses.dataclass(frozen=True)
class QuantPolicy:
    """Bits per tensor, chosen by regex rules over 'collection/path' (first match wins).

    The defaults quantize every decoder tensor at `bits` and the per-frame latents (HNeRV embeddings)
    at `embed_bits`, each with one step per output channel.
    """

    bits: int = 8                  # weights and biases, 2^bits levels per channel
    embed_bits: int | None = None  # the "latents" collection; None: same as `bits`

    def rules(self) -> tuple[tuple[str, int], ...]:
        embed = self.bits if self.embed_bits is None else self.embed_bits
        return ((r"latents/.*", embed), (r".*", self.bits))

    def bits_for(self, path: str) -> int:
        return first_match(path, self.rules())


def quantize_variables(variables, policy: QuantPolicy) -> dict[str, QuantizedTensor]:
    """Every tensor quantized by `policy`, keyed by its 'collection/...' path."""
    return {p: quantize(np.asarray(x), policy.bits_for(p)) for p, x in flatten(variables)}


def dequantize_variables(like, quantized: dict[str, QuantizedTensor]):
    """The float variables the decoder will see (a pytree shaped like `like`)."""
    return unflatten(like, {p: q.dequantize() for p, q in quantized.items()})


@functools.lru_cache(maxsize=32)
def abstract_variables(config):
    """Shapes and dtypes of `config`'s stored variables, without computing any of them."""
    spec = registry.spec_of(config)
    return jax.eval_shape(lambda: spec.init(config, jax.random.key(0)))


def compress(config, quantized: dict[str, QuantizedTensor]) -> bytes:
    """A complete .nerva file for `config` holding the quantized tensors."""
    spec = registry.spec_of(config)
    abstract = abstract_variables(config)
    references = spec.references(config) if spec.references else {}
    sections = [container.Section(container.HEADER, header.write_config(config))]
    colls = {}
    for name in sorted(abstract):
        prefix = name + "/"
        colls[name] = {p[len(prefix):]: q for p, q in quantized.items() if p.startswith(prefix)}
        ref = references.get(name)
        if ref is None:
            body = tensors.encode_collection(name, abstract[name], colls[name])
            sections.append(container.Section(container.TENSORS, body))
        else:   # the family codes this collection as its difference to an earlier one (sorted before it)
            body = tensors.encode_residual(name, ref, abstract[name], colls[name], colls[ref])
            sections.append(container.Section(container.RESIDUAL, body))
    return container.pack(spec.model_id, sections)


def parse(data: bytes):
    """(config, {collection: (quantized tensors, infos)}, sections) of a .nerva file."""
    model_id, sections = container.unpack(data)
    try:
        spec = registry.get_by_id(model_id)
    except NervaError:
        raise FormatError(f"file uses model id {model_id}, which this nerva does not know") from None
    if not sections or sections[0].kind != container.HEADER:
        raise FormatError("file has no header section")
    config = header.read_config(spec.config_cls, sections[0].body)
    abstract = abstract_variables(config)
    references = spec.references(config) if spec.references else {}
    collections = {}
    for s in sections[1:]:
        if s.kind not in (container.TENSORS, container.RESIDUAL):
            raise FormatError(f"file holds a section of unknown kind {s.kind}")
        name = tensors.collection_name(s.body)
        if name not in abstract or name in collections:
            raise FormatError(f"file holds an unexpected collection {name!r}")
        if s.kind == container.TENSORS:
            if name in references:
                raise FormatError(f"collection {name!r} must be residual-coded against {references[name]!r}")
            collections[name] = tensors.decode_collection(s.body, abstract[name])
        else:
            ref = tensors.residual_reference(s.body)
            if references.get(name) != ref or ref not in collections:
                raise FormatError(f"collection {name!r} refers to {ref!r}, which is not the collection "
                                  "decoded before it that the model chains it to")
            if layout_crc(abstract[ref]) != layout_crc(abstract[name]):   # a model bug, not a file error
                raise ValueError(f"collections {name!r} and {ref!r} have different layouts")
            collections[name] = tensors.decode_residual(s.body, abstract[name], collections[ref][0])
    if set(collections) != set(abstract):
        raise FormatError(f"file lacks collections {sorted(set(abstract) - set(collections))}")
    return config, collections, sections


def decompress(data: bytes):
    """(config, variables) from the bytes of a .nerva file; needs no other input."""
    config, collections, _ = parse(data)
    abstract = abstract_variables(config)
    variables = {name: dequantize_variables(abstract[name], q) for name, (q, _) in collections.items()}
    return config, variables


def read_file(path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such .nerva file")
    return path.read_bytes()


def load(path):
    """(config, variables) of a .nerva file on disk."""
    return decompress(read_file(path))
