"""RESIDUAL sections: a collection coded as its difference to an earlier one (NIRVANA's groups)."""

import jax
import numpy as np
import pytest

import inr
from codec import api, container, tensors
from codec.bytesio import FormatError
from codec.cli import describe
from codec.params import flatten
from codec.quant import QuantizedTensor
from inr.config import Geometry


def nirvana_config(frames=12):
    return inr.get("nirvana").config_cls.tiny(Geometry.of(frames, 32, 48))   # groups of 4 frames


def quantized_groups(config, moving: dict[int, int], seed=0) -> dict[str, QuantizedTensor]:
    """Group 0: random symbols in ±40 with one fp16 step per channel; group k: group k-1 plus residuals
    in ±moving[k] (0 = a static group: the same integers)."""
    rng = np.random.default_rng(seed)
    abstract = api.abstract_variables(config)
    out, prev = {}, None
    for k, name in enumerate(sorted(abstract)):
        cur = {}
        for path, a in flatten(abstract[name]):
            if prev is None:
                sym = rng.integers(-40, 41, a.shape).astype(np.int32)
                n = a.shape[-1] if len(a.shape) >= 2 else 1
                steps = rng.uniform(1e-3, 1e-2, n).astype(np.float16)
            else:
                sym = prev[path].symbols + rng.integers(-moving[k], moving[k] + 1, a.shape).astype(np.int32)
                steps = prev[path].steps
            cur[path] = QuantizedTensor(sym, steps, 8)
        out.update({f"{name}/{p}": q for p, q in cur.items()})
        prev = cur
    return out


def test_every_later_group_is_a_residual_section_and_round_trips_exactly():
    config = nirvana_config()
    quantized = quantized_groups(config, {1: 3, 2: 0})
    data = api.compress(config, quantized)
    _, sections = container.unpack(data)
    assert [s.kind for s in sections] == [container.HEADER, container.TENSORS, container.RESIDUAL,
                                          container.RESIDUAL]
    _, collections, _ = api.parse(data)
    for name, (got, _) in collections.items():
        for path, q in got.items():
            want = quantized[f"{name}/{path}"]
            np.testing.assert_array_equal(q.symbols, want.symbols)
            np.testing.assert_array_equal(q.steps, want.steps)


def test_a_static_group_costs_a_small_fraction_of_group_0():
    config = nirvana_config()
    data = api.compress(config, quantized_groups(config, {1: 2, 2: 0}))
    _, sections = container.unpack(data)
    group0, moving, static = (s.size for s in sections[1:])
    assert static < 0.05 * group0 and static < 0.1 * moving
    lines, _ = describe(data)
    assert any(line.startswith("residual: group002 - group001") for line in lines)


def test_residual_coding_needs_the_reference_steps():
    config = nirvana_config(8)
    q = quantized_groups(config, {1: 1})
    path = next(p for p in q if p.startswith("group001/"))
    q[path] = QuantizedTensor(q[path].symbols, (q[path].steps * 2).astype(np.float16), 8)
    with pytest.raises(ValueError, match="reference's quantization steps"):
        api.compress(config, q)


def _repack(data: bytes, transform) -> bytes:
    model_id, sections = container.unpack(data)
    return container.pack(model_id, transform(sections))


def test_files_that_break_the_chain_are_refused():
    config = nirvana_config()
    data = api.compress(config, quantized_groups(config, {1: 1, 2: 1}))
    abstract = api.abstract_variables(config)
    _, collections, _ = api.parse(data)

    def as_tensors(sections):   # group001 written as a plain TENSORS section
        q = collections["group001"][0]
        body = tensors.encode_collection("group001", abstract["group001"], q)
        return sections[:2] + [container.Section(container.TENSORS, body)] + sections[3:]
    with pytest.raises(FormatError, match="must be residual-coded against 'group000'"):
        api.parse(_repack(data, as_tensors))

    def swapped(sections):      # group002 before group001: its reference is not decoded yet
        return sections[:2] + [sections[3], sections[2]]
    with pytest.raises(FormatError, match="group001"):
        api.parse(_repack(data, swapped))

    def wrong_reference(sections):   # group002 coded against group000 instead of group001
        q0, q2 = collections["group000"][0], collections["group002"][0]
        body = tensors.encode_residual("group002", "group000", abstract["group002"], q2, q0)
        return sections[:3] + [container.Section(container.RESIDUAL, body)]
    with pytest.raises(FormatError, match="refers to 'group000'"):
        api.parse(_repack(data, wrong_reference))


def test_decoded_nirvana_weights_render_any_frames_in_one_batch():
    config = nirvana_config()
    data = api.compress(config, quantized_groups(config, {1: 5, 2: 5}))
    cfg, variables = api.decompress(data)
    spec = inr.get("nirvana")
    render = jax.jit(spec.render, static_argnums=0)
    batch = np.asarray(render(cfg, variables, np.array([11, 0, 5])))
    singles = [np.asarray(render(cfg, variables, np.array([t])))[0] for t in (11, 0, 5)]
    np.testing.assert_allclose(batch, np.stack(singles), atol=1e-6)
    assert not np.allclose(batch[0], batch[1])


def test_group_names_sort_in_group_order_beyond_a_thousand_groups():
    from inr.nirvana import collection
    config = inr.get("nirvana").config_cls.tiny(Geometry.of(4004, 32, 48))   # 1001 groups
    names = [collection(config, k) for k in range(config.n_groups)]
    assert names[0] == "group0000" and names == sorted(names)
    assert collection(nirvana_config(), 2) == "group002"
