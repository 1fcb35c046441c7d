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
from train import presets
from train.loop import Interrupted, fit, init_state, phase_steps, prunable
from train.schedule import Phase, TrainConfig, standard


def _config(name, frames):
    t, h, w = frames.shape[:3]
    return inr.get(name).config_cls.tiny(Geometry.of(t, h, w))


def _own_or(name, config, train: TrainConfig) -> TrainConfig:
    """`train`, or for families that fit in their own phases (NIRVANA) their schedule at `train`'s length."""
    phases = presets.family_phases(inr.get(name), config, train.phases, train.total_epochs, presets.preset(name).lr)
    return train.replace(phases=phases)


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
    train = _own_or(name, config, TrainConfig((Phase("fit", 2, 3e-3, use_encoder=True),), batch=2, seed=1))
    a = fit(config, synthetic, train, QuantPolicy()).variables
    b = fit(config, synthetic, train, QuantPolicy()).variables
    c = fit(config, synthetic, train.replace(seed=2), QuantPolicy()).variables
    assert _leaves_equal(a, b)
    assert not _leaves_equal(a, c)


# Resume is generic over the state tree; what differs between families is the state: NeRV's plain
# parameters (NeRV++ and CAM are such trees too), HNeRV's encoder that turns into stored embeddings
# mid-schedule, NIRVANA's learned steps and per-group phases.
@pytest.mark.parametrize("name,stop_at", [("nerv", 5), ("nerv", 12), ("hnerv", 5), ("hnerv", 12),
                                          ("nirvana", 5), ("nirvana", 12)])   # mid-fit; inside the 2nd phase
def test_resumed_fit_equals_uninterrupted_fit(name, stop_at, synthetic, tmp_path):
    config = _config(name, synthetic)
    train = _own_or(name, config, SCHEDULE)
    assert sum(phase_steps(train, synthetic.shape[0])) > stop_at + 4
    full = fit(config, synthetic, train, QuantPolicy()).variables
    ckpt = Checkpointer(tmp_path / "ck", "run", every=4)
    with pytest.raises(KeyboardInterrupt):
        fit(config, synthetic, train, QuantPolicy(), checkpointer=ckpt, progress=_StopAfter(stop_at))
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "ck", "run", every=4)
    resumed = fit(config, synthetic, train, QuantPolicy(), checkpointer=ckpt).variables
    ckpt.close()
    assert _leaves_equal(full, resumed)


# The bpp controller's λ starts from the distortion the fit ended on: an uninterrupted run reads the fit's
# phase-end PSNR, a run resumed exactly at the noisy phase's start measures it again (HNeRV: after its
# embeddings are stored). Both must start λ alike, or the resumed file would differ.
@pytest.mark.parametrize("name", ["nerv", "hnerv"])
def test_a_target_bpp_fit_resumed_at_the_controllers_start_equals_the_uninterrupted_fit(name, synthetic, tmp_path):
    config = _config(name, synthetic)
    train = TrainConfig((Phase("fit", 3, 3e-3, warmup=0.2, use_encoder=True),
                         Phase("rd", 1, 1e-3, rd="noise", target_bpp=2.0),
                         Phase("ste", 1, 1e-3, rd="ste", target_bpp=2.0)), batch=2, seed=3)
    boundary = phase_steps(train, synthetic.shape[0])[0]
    full = fit(config, synthetic, train, QuantPolicy())
    ckpt = Checkpointer(tmp_path / "ck", "run", every=1000)
    calls = iter(range(1, 10_000))
    with pytest.raises(Interrupted):
        fit(config, synthetic, train, QuantPolicy(), checkpointer=ckpt, stop=lambda: next(calls) >= boundary)
    ckpt.close()
    ckpt = Checkpointer(tmp_path / "ck", "run", every=1000)
    resumed = fit(config, synthetic, train, QuantPolicy(), checkpointer=ckpt)
    ckpt.close()
    assert resumed.history[0]["phase"] == "rd"   # it did resume at the boundary: no fit phase ran again
    assert resumed.final_lambda == full.final_lambda
    assert _leaves_equal(full.variables, resumed.variables)


def test_checkpoint_of_another_run_is_refused(synthetic, tmp_path):
    config = _config("nerv", synthetic)
    train = TrainConfig((Phase("fit", 2, 3e-3),), batch=2)
    ckpt = Checkpointer(tmp_path / "ck", "run-a", every=1)
    fit(config, synthetic, train, QuantPolicy(), checkpointer=ckpt)
    ckpt.close()
    with pytest.raises(ConfigError, match="different run"):
        fit(config, synthetic, train, QuantPolicy(), checkpointer=Checkpointer(tmp_path / "ck", "run-b", 1))


@pytest.mark.parametrize("name", [n for n in inr.names() if "prune" in inr.get(n).fit_options])
def test_pruned_weights_stay_zero_through_qat_and_in_the_file(name, synthetic):
    config = _config(name, synthetic)
    result = fit(config, synthetic, SCHEDULE, QuantPolicy(bits=6))
    assert sparsity_of(result.variables, prunable(inr.get(name))) == pytest.approx(0.3, abs=0.01)
    quantized = api.quantize_variables(result.variables, QuantPolicy(bits=6))
    _, decoded = api.decompress(api.compress(config, quantized))
    assert sparsity_of(decoded, prunable(inr.get(name))) >= 0.3 - 0.01


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


def test_a_phase_changes_only_the_tensors_it_may_train(synthetic):
    config = _config("nerv", synthetic)
    train = TrainConfig((Phase("fit", 2, 3e-3, train_only=r"variables/params/stem1/.*"),), batch=2)
    init = jax.jit(inr.get("nerv").init, static_argnums=0)(config, jax.random.fold_in(jax.random.key(0), 0))
    got = fit(config, synthetic, train, QuantPolicy()).variables
    changed = {p for (p, a), (_, b) in zip(api.flatten(init), api.flatten(got)) if not np.array_equal(a, b)}
    assert changed == {"params/stem1/dense/kernel", "params/stem1/dense/bias"}


def test_the_optimizer_state_covers_only_the_tensors_a_phase_trains(synthetic):
    config = _config("nerv", synthetic)
    train = TrainConfig((Phase("fit", 1, 3e-3, train_only=r"variables/params/stem1/.*"),), batch=2)
    state = init_state(inr.get("nerv"), config, train)
    stem1 = sum(x.size for p, x in api.flatten(state.variables) if p.startswith("params/stem1/"))
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim == 1]
    assert [x.size for x in moments] == [stem1, stem1]   # Adam's first and second moments
    assert stem1 < sum(x.size for x in jax.tree.leaves(state.variables))


def test_a_phase_with_a_frame_range_and_its_own_batch_counts_its_own_steps():
    train = TrainConfig((Phase("a", 3, 1e-3, frames=(4, 8), batch=4), Phase("b", 2, 1e-3, frames=(8, 10))),
                        batch=2)
    assert phase_steps(train, 120) == [3, 2]


def test_a_phase_ends_at_the_first_step_that_reaches_its_target_psnr(synthetic):
    config = _config("nerv", synthetic)
    train = TrainConfig((Phase("fit", 4, 3e-3, target_psnr=1.0),), batch=2)
    early = fit(config, synthetic, train, QuantPolicy())
    initial = init_state(inr.get("nerv"), config, train).variables
    assert _leaves_equal(initial, early.variables)   # step 0 already had 1 dB: it and the rest changed nothing
    assert [r["step"] for r in early.history if "phase_end_psnr" in r] == [16]   # the count jumps to the end
    full = fit(config, synthetic, TrainConfig((Phase("fit", 2, 3e-3),), batch=2), QuantPolicy())
    never = fit(config, synthetic, TrainConfig((Phase("fit", 2, 3e-3, target_psnr=99.0),), batch=2), QuantPolicy())
    assert _leaves_equal(full.variables, never.variables)
