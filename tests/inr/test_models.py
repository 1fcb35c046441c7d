"""Every registered model family: init, shapes, parameter counts, config round trips, and that it learns."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inr
from codec.metrics import mean_psnr, psnr
from codec.api import QuantPolicy
from inr import sizing
from inr.config import Geometry
from inr.errors import ConfigError
from inr.registry import ModelSpec, register
from train import presets
from train.loop import fit
from train.schedule import Phase, TrainConfig

# Every registered model, plus the backbones that can switch CAM on from their config.
VARIANTS = inr.names() + ["hnerv:cam_nodes=4", "nervpp:cam_nodes=4"]
# Golden parameter counts of each tiny() config (default 8×32×48 geometry): a change is deliberate.
TINY_PARAMS = {"nerv": 18027, "hnerv": 15939, "nervpp": 20415, "cam": 18155, "nirvana": 6424,
               "hnerv:cam_nodes=4": 16195, "nervpp:cam_nodes=4": 20543}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A registered model with config overrides (inr.registry.parse), sized and built like the model."""

    name: str
    spec: ModelSpec
    overrides: dict

    def tiny(self, geometry=None):
        return self.spec.config_cls.tiny(geometry).replace(**self.overrides)

    def for_size(self, geometry, n_params):
        return self.spec.for_size(geometry, n_params, **self.overrides)


@pytest.fixture(scope="module", params=VARIANTS)
def model(request) -> Variant:
    return Variant(request.param, *inr.registry.parse(request.param))


def test_every_registered_model_has_a_golden_parameter_count():
    assert all(n in TINY_PARAMS for n in inr.names())


def test_tiny_parameter_count_matches_golden(model):
    assert sizing.count(model.spec.init, model.tiny()) == TINY_PARAMS[model.name]


def test_render_gives_frames_of_the_source_size_in_unit_range(model):
    for geometry in (Geometry.of(4, 32, 48), Geometry.of(3, 35, 33)):   # odd sizes too
        config = model.tiny(geometry)
        variables = jax.jit(model.spec.init, static_argnums=0)(config, jax.random.key(0))
        out = jax.jit(model.spec.render, static_argnums=0)(config, variables, jnp.array([0, 2]))
        assert out.shape == (2, geometry.height, geometry.width, 3)
        assert out.dtype == jnp.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_init_is_deterministic_in_the_key(model):
    config = model.tiny()
    init = jax.jit(model.spec.init, static_argnums=0)
    a, b, c = (init(config, jax.random.key(k)) for k in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))


def test_config_dict_round_trip_is_exact(model):
    for config in (model.tiny(), model.for_size(Geometry.of(120, 144, 176, 30000 / 1001), 100_000)):
        assert model.spec.config_cls.from_dict(config.to_dict()) == config
        hash(config)   # configs are jit static arguments


def test_for_size_hits_the_budget_from_below(model):
    g = Geometry.of(120, 144, 176, 30)
    for budget in (50_000, 200_000):
        config = model.for_size(g, budget)
        assert all(getattr(config, k) == v for k, v in model.overrides.items())
        n = sizing.count(model.spec.init, config)
        assert 0.8 * budget <= n <= budget


@pytest.mark.parametrize("seed", range(3))
def test_width_solver_finds_the_widest_width_within_budget_as_a_linear_scan_does(seed):
    """Monotone counts like the families' (quadratic in the width, with plateaus where channel counts
    round): the interpolating search must land on exactly the width a scan of every width finds."""
    rng = np.random.default_rng(seed)
    widths = np.arange(2, 4096)
    for _ in range(200):
        a, b, c, step = rng.uniform(0.5, 100), rng.uniform(0, 3000), rng.uniform(0, 1e5), int(rng.integers(1, 13))
        counts = (c + b * (widths // step * step) + a * widths ** 2).astype(np.int64)
        budget = int(rng.uniform(counts[0], 1.1 * counts[-1]))
        want = int(widths[counts <= budget].max())
        assert sizing.solve_width(lambda w: w, budget, lambda w: int(counts[w - 2])) == want


def test_impossibly_small_budget_is_a_config_error(model):
    with pytest.raises(ConfigError, match="budget"):
        model.for_size(Geometry.of(120, 144, 176, 30), 10)


def test_model_learns_a_real_clip(model, carphone_small):
    t, h, w = carphone_small.shape[:3]
    config = model.tiny(Geometry.of(t, h, w))
    spec = model.spec
    # one fit phase, or the family's own phases of that length (NIRVANA: one per group, at its preset lr)
    phases = (Phase("fit", 30, 3e-3, warmup=0.1, use_encoder=True),)
    train = TrainConfig(presets.family_phases(spec, config, phases, 30, presets.preset(model.name).lr), batch=2)
    variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
    target = jnp.asarray(carphone_small, jnp.float32) / 255
    render = jax.jit(spec.render, static_argnums=0)   # one compile instead of op-by-op dispatch, twice
    before = render(config, variables, jnp.arange(t))
    result = fit(config, carphone_small, train, QuantPolicy())
    after = render(config, result.variables, jnp.arange(t))
    gain = mean_psnr(psnr(target, after)) - mean_psnr(psnr(target, before))
    assert gain > 3.0, f"{model.name} gained only {gain:.2f} dB"


@pytest.mark.parametrize("name", [n for n in VARIANTS if inr.registry.parse(n)[0].finalize is not inr.registry.keep_variables])
def test_finalized_variables_render_what_the_encoder_path_rendered(name, carphone_small):
    """Families with an encode-time encoder: after `finalize`, render == train_render on every frame."""
    variant = Variant(name, *inr.registry.parse(name))
    spec = variant.spec
    t, h, w = carphone_small.shape[:3]
    config = variant.tiny(Geometry.of(t, h, w))
    variables = jax.jit(spec.init, static_argnums=0)(config, jax.random.key(0))
    aux = spec.init_aux(config, jax.random.key(1))
    aux = jax.tree.map(lambda x: x + 0.5 * jax.random.normal(jax.random.key(2), x.shape), aux)
    frames = jnp.asarray(carphone_small, jnp.float32) / 255
    idx = jnp.arange(t)
    first = presets.train_config(name, 1, config=config).phases[0]   # train_render sees a phase's frames
    idx = jnp.arange(*first.frame_range(t))                         # (NIRVANA: one group)
    want = spec.train_render(config, variables, aux, idx, frames[idx])
    got = spec.render(config, spec.finalize(config, variables, aux, carphone_small), idx)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_duplicate_registration_raises():
    spec = inr.get("nerv")
    with pytest.raises(ValueError, match="already registered"):
        register(spec)
    with pytest.raises(ValueError, match="already registered"):
        register(ModelSpec("another", spec.model_id, spec.config_cls, spec.init, spec.render, spec.for_size))


def test_unknown_model_name_and_id_raise_config_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        inr.get("nope")
    with pytest.raises(ConfigError, match="unknown model id"):
        inr.get_by_id(999)
