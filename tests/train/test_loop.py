"""The generic fitting loop: determinism, resume, pruning and quantization-aware phases."""

import jax
import numpy as np
import pytest

import inr
from codec import api
from codec.api import QuantPolicy
from codec.prune import sparsity_of
from inr.config import Geometry
from inr.errors import ConfigError
from train.checkpoint import Checkpointer
from train.loop import fit, phase_steps, prunable
from train.schedule import Phase, TrainConfig, standard


def _config(name, frames):
    t, h, w = frames.shape[:3]
    return inr.get(name).config_cls.tiny(Geometry.of(t, h, w))


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class _StopAfter:
    """A progress bar that interrupts the run after `n` steps (a user pressing Ctrl-C)."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def __call__(self, total):
        return self

    def update(self, k):
        self.seen += k
        if self.seen > self.n:
            raise KeyboardInterrupt

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


SCHEDULE = TrainConfig((Phase("fit", 3, 3e-3, warmup=0.2, use_encoder=True),
                        Phase("prune", 1, 1e-3, sparsity=0.3),
                        Phase("qat", 1, 5e-4, quantize=True)), batch=2, seed=3)


@pytest.mark.parametrize("name", inr.names())
def test_same_seed_gives_bitwise_identical_fits_and_another_seed_does_not(name, synthetic):
    config = _config(name, synthetic)
    train = TrainConfig((Phase("fit", 2, 3e-3, use_encoder=True),), batch=2, seed=1)
    a = fit(config, synthetic, train, QuantPolicy()).variables
    b = fit(config, synthetic, train, QuantPolicy()).variables
    c = fit(config, synthetic, train.replace(seed=2), QuantPolicy()).variables
    assert _leaves_equal(a, b)
    assert not _leaves_equal(a, c)


@pytest.mark.parametrize("name", inr.names())
@pytest.mark.parametrize("stop_at", [5, 12])   # mid-fit, and inside the prune phase
def test_resumed_fit_equals_uninterrupted_fit(name, stop_at, synthetic, tmp_path):
    config = _config(name, synthetic)
    full = fit(config, synthetic, SCHEDULE, QuantPolicy()).variables
    ckpt = Checkpointer(tmp_path / "ck", "run", every=4)
    with pytest.raises(KeyboardInterrupt):
        fit(config, synthetic, SCHEDULE, QuantPolicy(), checkpointer=ckpt, progress=_StopAfter(stop_at))
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "ck", "run", every=4)
    resumed = fit(config, synthetic, SCHEDULE, QuantPolicy(), checkpointer=ckpt).variables
    ckpt.close()
    assert _leaves_equal(full, resumed)


def test_checkpoint_of_another_run_is_refused(synthetic, tmp_path):
    config = _config("nerv", synthetic)
    train = TrainConfig((Phase("fit", 2, 3e-3),), batch=2)
    ckpt = Checkpointer(tmp_path / "ck", "run-a", every=1)
    fit(config, synthetic, train, QuantPolicy(), checkpointer=ckpt)
    ckpt.close()
    with pytest.raises(ConfigError, match="different run"):
        fit(config, synthetic, train, QuantPolicy(), checkpointer=Checkpointer(tmp_path / "ck", "run-b", 1))


@pytest.mark.parametrize("name", inr.names())
def test_pruned_weights_stay_zero_through_qat_and_in_the_file(name, synthetic):
    config = _config(name, synthetic)
    result = fit(config, synthetic, SCHEDULE, QuantPolicy(bits=6))
    assert sparsity_of(result.variables, prunable) == pytest.approx(0.3, abs=0.01)
    quantized = api.quantize_variables(result.variables, QuantPolicy(bits=6))
    _, decoded = api.decompress(api.compress(config, quantized))
    assert sparsity_of(decoded, prunable) >= 0.3 - 0.01


def test_qat_phase_end_psnr_is_the_psnr_of_the_quantized_model(synthetic):
    """The QAT forward pass sees exactly the weights the file will hold."""
    from codec.decoder import decode_frames
    from codec.metrics import mean_psnr, psnr
    config = _config("nerv", synthetic)
    result = fit(config, synthetic, SCHEDULE, QuantPolicy(bits=5))
    qat_psnr = [r for r in result.history if "phase_end_psnr" in r][-1]["phase_end_psnr"]
    _, variables = api.decompress(api.compress(config, api.quantize_variables(result.variables,
                                                                            QuantPolicy(bits=5))))
    frames = decode_frames(config, variables).astype(np.float32) / 255
    # the file's frames are rounded to 8 bits, the phase-end PSNR is on floats: a small gap only
    assert mean_psnr(psnr(synthetic / 255, frames)) == pytest.approx(qat_psnr, abs=0.1)


def test_phase_steps_follow_epochs_and_batch():
    train = standard(10, prune=0.2, batch=4)
    assert [p.name for p in train.phases] == ["fit", "prune", "qat"]
    assert phase_steps(train, 120) == [300, 30, 30]
