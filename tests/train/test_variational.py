"""RECOMBINER end to end on a tiny clip: prior learning, the asset, encoding into a file, and decoding it in
another process from the file and the asset alone; the REC section's and the asset's checks."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import zipfile
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codec import api, assets, container, samples
from codec.bytesio import FormatError
from inr import recombiner as R
from inr.config import Geometry
from inr.errors import ConfigError
from train import variational as V

GEOMETRY = Geometry.of(8, 16, 24)
BPP = 0.5


def _clip(seed: int) -> np.ndarray:
    """A smooth moving pattern, (8, 16, 24, 3) float32 in [0, 1]."""
    r = np.random.default_rng(seed)
    t, y, x = np.meshgrid(np.arange(8), np.arange(16), np.arange(24), indexing="ij")
    f = r.uniform(0.05, 0.3, size=3)
    rgb = r.uniform(0.5, 1.0, size=3)
    return ((0.5 + 0.4 * np.sin(f[0] * x + f[1] * y + 0.2 * t + r.uniform(0, 6)))[..., None] * rgb).astype(np.float32)


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    config = R.RecombinerConfig.tiny(GEOMETRY)
    clips = np.stack([_clip(i) for i in range(6)])
    prior, state = V.learn_prior(config, clips, V.PriorSettings(rounds=6, steps=20, target_bpp=BPP, beta=3e-3))
    asset = V.save_prior(d / "tiny-test.npz", "tiny-test", config, prior)
    frames = _clip(100)
    states = []
    data, enc = V.encode_file(config, frames, asset, BPP, V.RecSettings(steps=500, chunks=4, retune=20),
                              after_round=lambda st: states.append((st.round, st.post)) if st.round == 0 else None)
    path = d / "clip.nerva"
    path.write_bytes(data)
    return dict(dir=d, config=config, prior=prior, state=state, asset=asset, frames=frames, data=data, enc=enc,
                path=path, fitted=states[0][1])


def _render(config, variables):
    return np.asarray(R.render(config, variables, jnp.arange(config.geometry.frames, dtype=jnp.int32)))


def test_another_process_decodes_the_encoders_sample_and_frames_bit_for_bit(coded):
    """The decoder needs only the file and the asset: it regenerates every element the encoder fixed, the same
    float32 bits, and renders the same frames."""
    config = coded["config"]
    script = (f"import numpy as np, jax.numpy as jnp\nfrom codec import api\nfrom inr import recombiner as R\n"
              f"c, v = api.load({str(coded['path'])!r}, [{str(coded['dir'])!r}])\n"
              f"np.save({str(coded['dir'] / 'flat.npy')!r}, np.asarray(R.flatten_sample(v['sample'])))\n"
              f"np.save({str(coded['dir'] / 'frames.npy')!r}, np.asarray(R.render(c, v, jnp.arange(8, dtype=jnp.int32))))\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    flat = np.load(coded["dir"] / "flat.npy")
    assert flat.dtype == np.float32 and flat.tobytes() == coded["enc"].flat.tobytes()
    layout = V.layout_of(config)
    encoder_frames = _render(config, V.variables_of(config, layout, jnp.asarray(coded["enc"].flat), coded["prior"].shared))
    assert np.load(coded["dir"] / "frames.npy").tobytes() == encoder_frames.tobytes()


def test_the_file_is_its_header_and_two_bytes_per_block_and_lands_on_the_target(coded):
    data, enc, config = coded["data"], coded["enc"], coded["config"]
    _, sections = container.unpack(data)
    assert [s.kind for s in sections] == [container.HEADER, container.REC] and data[4] == 3
    rec = samples.decode_section(sections[1].body)
    assert rec.indices.tobytes() == enc.indices.astype("<u2").tobytes()
    assert rec.asset_id == "tiny-test" and rec.digest == coded["asset"].digest
    # every byte counts: the file's bits are at most the target and within one block of it
    bits = 8 * len(data)
    target = BPP * config.geometry.pixels
    assert target - 16 - 8 * 4 <= bits <= target


def test_the_fit_leaves_few_blocks_over_what_a_sixteen_bit_index_sends(coded):
    """β per block (RECOMBINER's rule) prices every block's KL towards the 16 bits its index can send: after the
    fit, at most a tenth of the blocks carry more than 10 % over 16 bits, and the clip's KL is within 5 % of
    16 bits per block or under it (blocks whose content needs less stay under: β only falls so far)."""
    from codec import rec
    config, prior, enc, post = coded["config"], coded["prior"], coded["enc"], coded["fitted"]
    layout = V.layout_of(config)
    kl = rec.kl_bits(post["mean"], np.exp(post["log_scale"]), prior.mean[layout.entry], prior.scale[layout.entry])
    block_kl = np.add.reduceat(kl[enc.order], enc.starts[:-1])
    assert np.mean(block_kl > 17.6) <= 0.1
    assert block_kl.sum() <= 1.05 * 16 * block_kl.size


def test_prior_learning_holds_the_training_kl_in_its_window_and_the_table_predicts_it(coded):
    """The last rounds' mean KL per pixel lies in [(1 - window)·target, target] up to one β step, and the
    asset's expected-KL table summed over a clip's elements equals the training clips' mean KL (same posteriors)."""
    hist = coded["state"].history
    assert hist[-1][0] == 6
    prior, config = coded["prior"], coded["config"]
    layout = V.layout_of(config)
    post = coded["state"].params["post"]
    from codec import rec
    kl = rec.kl_bits(np.asarray(post["mean"]), np.exp(np.asarray(post["log_scale"])),
                     prior.mean[layout.entry], prior.scale[layout.entry])
    assert np.isclose(prior.kl[layout.entry].sum(), kl.sum(axis=1).mean(), rtol=1e-3)


def test_decode_plan_is_integer_and_reproducible(coded):
    """The blocks come from integers only: the same plan from a fresh layout, and a different seed shuffles
    within stages but keeps every stage's elements before the next one's."""
    config, prior = coded["config"], coded["prior"]
    layout = V.layout_of(config)
    o1, s1 = samples.plan(layout, prior.kl, 0, coded["enc"].kl_scale)
    o2, s2 = samples.plan(V.layout_of(config), prior.kl.copy(), 0, coded["enc"].kl_scale)
    assert np.array_equal(o1, o2) and np.array_equal(s1, s2)
    o3, _ = samples.plan(layout, prior.kl, 1, coded["enc"].kl_scale)
    assert not np.array_equal(o1, o3)
    assert np.all(np.diff(layout.stage[o3]) >= 0)


def test_decoding_without_the_prior_names_it(coded, monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV, str(tmp_path))
    with pytest.raises(FormatError, match="prior 'tiny-test'.*--prior PATH"):
        api.decompress(coded["data"])


def test_a_prior_with_other_content_under_the_same_id_is_refused(coded, tmp_path):
    arrays = dict(coded["asset"].arrays)
    arrays["rec/mean"] = arrays["rec/mean"] + np.float32(1e-3)
    assets.save(tmp_path / "tiny-test.npz", "tiny-test", arrays, coded["asset"].meta)
    with pytest.raises(FormatError, match="not in"):
        api.decompress(coded["data"], [tmp_path])


@pytest.mark.parametrize("damage", ["truncate", "extend", "blocks", "scale", "version 2"])
def test_a_damaged_rec_section_past_the_crc_is_a_format_error(coded, damage):
    """Damage with the CRC recomputed, so the REC section's own checks must catch it."""
    model_id, sections = container.unpack(coded["data"])
    rec = samples.decode_section(sections[1].body)
    if damage == "truncate":
        body = sections[1].body[:-1]
    elif damage == "extend":
        body = sections[1].body + b"\0\0"
    elif damage == "blocks":   # one block fewer than the plan: a consistent section the plan refuses
        body = samples.encode_section(samples.RecSection(rec.names, rec.asset_id, rec.digest, rec.seed,
                                                         rec.kl_scale, rec.indices[:-1]))
    elif damage == "scale":
        body = sections[1].body.replace(np.float32(rec.kl_scale).tobytes(), np.float32(-1.0).tobytes())
    else:   # a REC section needs format version 3
        body = sections[1].body
    version = 2 if damage == "version 2" else container.REC_VERSION
    data = container.pack(model_id, [sections[0], container.Section(container.REC, body)], version)
    with pytest.raises(FormatError):
        api.decompress(data, [coded["dir"]])


@pytest.mark.parametrize("damage", ["not a zip", "pickle", "huge", "no meta"])
def test_a_damaged_asset_is_a_one_line_format_error(tmp_path, damage):
    p = tmp_path / "bad.npz"
    if damage == "not a zip":
        p.write_bytes(b"PK\x03\x04garbage")
    elif damage == "pickle":
        np.savez(p, meta=np.frombuffer(json.dumps({"id": "bad"}).encode(), np.uint8),
                 x=np.array([{"a": 1}], dtype=object))
    elif damage == "huge":   # a header claiming 2^40 elements, with no data behind it
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("x.npy", buf.getvalue())
    else:
        np.savez(p, x=np.zeros(3, np.float32))
    with pytest.raises(FormatError) as e:
        assets.load(p)
    assert "\n" not in str(e.value)


def test_an_encode_resumed_at_a_round_boundary_is_the_uninterrupted_encode(coded):
    """Each boundary's state (what a checkpoint holds), resumed, gives the same indices; and a stop request
    raises Interrupted at the boundary after the state is handed out."""
    import copy
    config, prior = coded["config"], coded["prior"]
    settings = V.RecSettings(steps=30, chunks=3, retune=10)
    states = []
    blocks = coded["enc"].indices.size
    full = V.encode_clip(config, coded["frames"], prior, blocks, settings,
                         after_round=lambda s: states.append(copy.deepcopy(s)))
    assert [s.round for s in states] == [0, 1, 2]
    for st in states:
        again = V.encode_clip(config, coded["frames"], prior, blocks, settings, state=copy.deepcopy(st))
        assert again.indices.tobytes() == full.indices.tobytes() and again.flat.tobytes() == full.flat.tobytes()
    with pytest.raises(V.Interrupted):
        V.encode_clip(config, coded["frames"], prior, blocks, settings, stop=lambda: True)


def test_prior_learning_resumed_from_its_checkpoint_is_the_uninterrupted_run(coded, tmp_path):
    config = coded["config"]
    clips = np.stack([_clip(i) for i in range(3)])
    settings = V.PriorSettings(rounds=3, steps=5, target_bpp=BPP, beta=3e-3)
    full, _ = V.learn_prior(config, clips, settings)
    path = tmp_path / "state.npz"
    V.learn_prior(config, clips, dataclasses.replace(settings, rounds=2),
                  after_round=lambda st: V.save_prior_state(path, st, settings, "run-a"))
    resumed, state = V.learn_prior(config, clips, settings, state=V.load_prior_state(path, "run-a"))
    assert state.round == 3
    for a, b in zip((full.mean, full.scale, full.kl), (resumed.mean, resumed.scale, resumed.kl)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="another prior-learning run"):
        V.load_prior_state(path, "run-b")
