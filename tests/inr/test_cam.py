"""CAM (coordinate-aware modulation): the layer, its place in every backbone, its learning rate, its overrides."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inr
from codec.api import flatten
from inr import cam, sizing
from inr.config import Geometry
from inr.errors import ConfigError
from train.loop import _lr_scaler


def test_interpolation_hits_the_nodes_and_is_linear_between_them():
    table = jnp.asarray([[0.0, 10.0], [1.0, 20.0], [3.0, 40.0]])
    out = cam.interpolate(table, jnp.asarray([0.0, 0.25, 0.5, 0.75, 1.0]))
    np.testing.assert_allclose(out, [[0, 10], [0.5, 15], [1, 20], [2, 30], [3, 40]], atol=1e-6)
    np.testing.assert_allclose(cam.interpolate(table[:1], jnp.asarray([0.3, 0.9])), [[0, 10], [0, 10]])


def test_frame_positions_span_the_whole_grid():
    np.testing.assert_allclose(cam.frame_position(jnp.arange(5), 5), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(cam.frame_position(jnp.arange(1), 1), [0.0])


def test_modulation_starts_as_plain_instance_normalization():
    x = jax.random.normal(jax.random.key(0), (3, 5, 7, 4)) * 3.0 + jnp.arange(4.0)
    layer = cam.TemporalModulation(6)
    params = layer.init(jax.random.key(1), x, jnp.zeros((3,)))
    y = layer.apply(params, x, jnp.asarray([0.0, 0.4, 1.0]))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-5)      # per frame and channel
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, atol=1e-3)
    assert {k: v.shape for k, v in params["params"].items()} == {"gamma": (6, 4), "beta": (6, 4)}


def test_mlp_features_are_normalized_per_point():
    x = jax.random.normal(jax.random.key(0), (5, 16)) * 2.0 + 1.0
    layer = cam.TemporalModulation(3)
    params = layer.init(jax.random.key(1), x, jnp.zeros((5,)))
    y = layer.apply(params, x, jnp.linspace(0, 1, 5))
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, atol=1e-3)


def test_gamma_and_beta_follow_the_frame_time():
    """γ = 1 + g(t), β = b(t): a frame between two nodes gets the interpolated scale and shift."""
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
    layer = cam.TemporalModulation(2)
    params = {"params": {"gamma": jnp.asarray([[0.0, 1.0], [2.0, 3.0]]),
                         "beta": jnp.asarray([[5.0, 0.0], [7.0, 0.0]])}}
    y = layer.apply(params, x, jnp.asarray([0.0, 0.5]))
    xn = layer.apply({"params": {"gamma": jnp.zeros((2, 2)), "beta": jnp.zeros((2, 2))}}, x, jnp.zeros(2))
    np.testing.assert_allclose(y[0], xn[0] * jnp.asarray([1.0, 2.0]) + jnp.asarray([5.0, 0.0]), atol=1e-5)
    np.testing.assert_allclose(y[1], xn[1] * jnp.asarray([2.0, 3.0]) + jnp.asarray([6.0, 0.0]), atol=1e-5)


@pytest.mark.parametrize("name", ["nerv", "hnerv", "nervpp"])
def test_one_config_field_adds_a_table_pair_to_every_stage(name):
    spec = inr.get(name)
    off = spec.config_cls.tiny(Geometry.of(6, 32, 48))
    on = off.replace(cam_nodes=5)
    shapes_off = dict((p, x.shape) for p, x in flatten(jax.eval_shape(lambda: spec.init(off, jax.random.key(0)))))
    shapes_on = dict((p, x.shape) for p, x in flatten(jax.eval_shape(lambda: spec.init(on, jax.random.key(0)))))
    added = {p: s for p, s in shapes_on.items() if p not in shapes_off}
    assert set(shapes_off) <= set(shapes_on)
    assert sorted(added) == sorted(f"params/block{i}/{mid}cam/{t}" for i in range(len(off.channels))
                                   for t in ("beta", "gamma") for mid in ["up/" if name == "nervpp" else ""])
    assert all(s == (5, off.channels[int(p.split("/")[1][5:])]) for p, s in added.items())
    assert sizing.count(spec.init, on) - sizing.count(spec.init, off) == sum(math.prod(s) for s in added.values())


@pytest.mark.parametrize("name", ["nerv", "hnerv", "nervpp"])
def test_cam_changes_which_frame_is_rendered_only_through_the_tables(name):
    """With zero tables CAM is a normalization; setting one node's β moves only the frames near it."""
    spec = inr.get(name)
    config = spec.config_cls.tiny(Geometry.of(5, 32, 48)).replace(cam_nodes=5)
    variables = spec.init(config, jax.random.key(0))
    before = spec.render(config, variables, jnp.arange(5))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x.at[4].set(3.0) if "beta" in jax.tree_util.keystr(p) else x, variables["params"])
    after = spec.render(config, {**variables, "params": params}, jnp.arange(5))
    changed = np.abs(np.asarray(after - before)).max(axis=(1, 2, 3))
    assert changed[4] > 1e-2 and np.all(changed[:4] < 1e-6)   # node 4 sits on the last frame only


def test_the_cam_model_is_nerv_with_cam_on_by_default():
    g = Geometry.of(120, 144, 176)
    config = inr.get("cam").for_size(g, 100_000)
    assert config.cam_nodes == 30 and config.cam_lr_mult == 10.0
    assert inr.get("nerv").config_cls.from_dict(config.to_dict()).cam_nodes == 30
    assert inr.get("nerv").config_cls.tiny().cam_nodes == 0


def test_cam_tables_get_the_configured_learning_rate_multiplier():
    spec = inr.get("hnerv")
    config = spec.config_cls.tiny().replace(cam_nodes=3, cam_lr_mult=7.0)
    variables = spec.init(config, jax.random.key(0))
    # updates as the loop keeps them: keyed by state path; the encoder's (aux) are never scaled
    ones = {f"variables/{p}": jnp.ones_like(x) for p, x in flatten(variables)} | {"aux/cam/x": jnp.ones(3)}
    scaled = _lr_scaler(config)(ones)
    assert {p for p, x in scaled.items() if float(x.max()) == 7.0} == {
        p for p in scaled if "/cam/" in p and p.startswith("variables/")}
    assert all(float(x.max()) == 1.0 for p, x in scaled.items() if "/cam/" not in p or p.startswith("aux/"))
    assert all(float(x.max()) == 1.0 for x in _lr_scaler(config.replace(cam_nodes=0))(ones).values())


def test_model_strings_set_config_fields_before_sizing():
    spec, overrides = inr.registry.parse("hnerv:cam_nodes=30:cam_lr_mult=5:act=swish")
    assert spec.name == "hnerv" and overrides == {"cam_nodes": 30, "cam_lr_mult": 5.0, "act": "swish"}
    assert inr.registry.parse("nerv") == (inr.get("nerv"), {})


@pytest.mark.parametrize("text, match", [
    ("hnerv:cam_nodes", "FIELD=VALUE"),
    ("hnerv:nodes=3", "FIELD=VALUE with FIELD one of"),
    ("hnerv:channels=3", "FIELD one of"),       # per-stage tuples come from sizing
    ("hnerv:geometry=3", "FIELD one of"),
    ("hnerv:cam_nodes=many", "cam_nodes needs int"),
    ("nope:cam_nodes=3", "unknown model"),
])
def test_bad_model_strings_are_one_line_config_errors(text, match):
    with pytest.raises(ConfigError, match=match) as e:
        inr.registry.parse(text)
    assert "\n" not in str(e.value)


def test_an_override_that_breaks_a_constraint_is_a_config_error():
    from train.encode import make_config
    with pytest.raises(ConfigError, match="cam_nodes must be an integer in 0..4096"):
        make_config("nerv:cam_nodes=-1", Geometry.of(10, 64, 64), n_params=50_000)
