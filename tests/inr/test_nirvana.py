"""NIRVANA's schedule and its per-frame heads."""

import jax
import numpy as np
import pytest

from inr import nirvana
from inr.config import Geometry
from inr.errors import ConfigError
from train.encode import make_config


def test_steps_cover_batch_frames_of_their_group_and_the_whole_group_with_a_target_psnr():
    config = nirvana.NIRVANAConfig(Geometry.of(30, 32, 48), group=12, batch=4, group0_share=0.5)   # 12, 12, 6 frames
    phases = nirvana.schedule(config, [], epochs=10, lr=1e-2)
    assert [(p["frames"], p["batch"]) for p in phases] == [((0, 12), 4), ((12, 24), 4), ((24, 30), 4)]
    # a phase's steps = epochs · (frames // batch): group 0 gets half of epochs·T/2 = 75 steps
    assert [p["epochs"] * ((p["frames"][1] - p["frames"][0]) // p["batch"]) for p in phases] == \
        pytest.approx([75, 37.5, 37.5])
    targeted = nirvana.schedule(config.replace(target_psnr=30), [], epochs=10, lr=1e-2)
    assert [p["batch"] for p in targeted] == [12, 12, 6]


def test_heads_of_some_frames_equal_those_frames_of_the_whole_group():
    config = nirvana.NIRVANAConfig.tiny()
    coords = nirvana._coordinates(config)
    net = nirvana.GroupNet(config)
    params = net.init(jax.random.key(0), coords)["params"]
    every = np.asarray(net.apply({"params": params}, coords))
    some = np.asarray(net.apply({"params": params}, coords, np.array([3, 0])))
    assert every.shape == (config.group, config.geometry.height, config.geometry.width, 3)
    np.testing.assert_allclose(some, every[[3, 0]], atol=1e-6)
    assert not np.allclose(some[0], some[1])


def test_sized_configs_carry_the_preset_and_overrides_win():
    config = make_config("nirvana:warm_lr=0.5", Geometry.of(24, 32, 48), n_params=20_000)
    assert (config.group, config.batch, config.group0_share, config.warm_lr) == (12, 4, 0.5, 0.5)
    whole = nirvana.schedule(config.replace(batch=0), [], epochs=10, lr=1e-2)
    assert [p["batch"] for p in whole] == [12, 12]


@pytest.mark.parametrize("override", ["batch=-1", "group0_share=1", "group0_share=0"])
def test_bad_schedule_fields_are_config_errors(override):
    with pytest.raises(ConfigError):
        make_config(f"nirvana:{override}", Geometry.of(24, 32, 48), n_params=20_000)
