"""A damaged checkpoint is named in one line, deleted, and the fit resumes from the one before (or afresh,
said so), ending on exactly the weights of an uninterrupted fit."""

import itertools
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import inr
from codec.api import QuantPolicy
from inr.config import Geometry
from train.checkpoint import Checkpointer
from train.loop import Interrupted, fit
from train.schedule import Phase, TrainConfig

# 8 frames at batch 2: 4 steps per epoch, 3 epochs = 12 steps. Checkpoints every 2 steps, keeping 2: a fit
# stopped after step 6 leaves steps 4 and 6.
TRAIN = TrainConfig((Phase("fit", 2, 3e-3, warmup=0.2), Phase("qat", 1, 1e-3, quantize=True)), batch=2, seed=3)


@pytest.fixture(scope="module")
def config(synthetic):
    return inr.get("nerv").config_cls.tiny(Geometry.of(*synthetic.shape[:3]))


@pytest.fixture(scope="module")
def uninterrupted(config, synthetic):
    return fit(config, synthetic, TRAIN, QuantPolicy()).variables


def _steps(d: Path) -> list[int]:
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _stopped_after_6(config, synthetic, d: Path) -> None:
    calls = itertools.count(1)
    ckpt = Checkpointer(d, "run", every=2)
    with pytest.raises(Interrupted):
        fit(config, synthetic, TRAIN, QuantPolicy(), checkpointer=ckpt, stop=lambda: next(calls) >= 6)
    ckpt.close()
    assert _steps(d) == [4, 6]


def _resumed(config, synthetic, d: Path):
    lines = []
    ckpt = Checkpointer(d, "run", every=2, log=lines.append)
    variables = fit(config, synthetic, TRAIN, QuantPolicy(), checkpointer=ckpt).variables
    ckpt.close()
    return variables, lines


def _tensor_file(step_dir: Path) -> Path:
    """The largest file of a step's state: where orbax keeps the arrays' (compressed) bytes."""
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(step_dir: Path) -> None:
    f = _tensor_file(step_dir)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip(step_dir: Path) -> None:
    f = _tensor_file(step_dir)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x5A
    f.write_bytes(bytes(data))


def _delete(step_dir: Path) -> None:
    _tensor_file(step_dir).unlink()


def _other_numbers(step_dir: Path) -> None:
    """Step 4's state, intact and readable, put in step 6's place: only the saved digest can tell."""
    shutil.rmtree(step_dir / "state")
    shutil.copytree(step_dir.parent / "4" / "state", step_dir / "state")


def _torn_record(step_dir: Path) -> None:
    f = step_dir / "meta" / "metadata"
    f.write_bytes(f.read_bytes()[:10])


def _half_written(step_dir: Path) -> None:
    """A step folder holding its run record but not its state."""
    shutil.rmtree(step_dir / "state")


def _leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.parametrize("damage", [_truncate, _flip, _delete, _other_numbers, _torn_record, _half_written],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_damaged_latest_checkpoint_is_named_and_the_one_before_resumes_to_the_same_weights(
        damage, config, synthetic, uninterrupted, tmp_path):
    d = tmp_path / "ck"
    _stopped_after_6(config, synthetic, d)
    damage(d / "6")
    variables, lines = _resumed(config, synthetic, d)
    assert len(lines) == 2 and all("\n" not in x for x in lines), lines
    assert lines[0].startswith(f"nerva: checkpoint {d / '6'} is damaged ("), lines
    assert lines[1] == "nerva: resuming from the earlier checkpoint at step 4"
    assert _leaves_equal(variables, uninterrupted)


def test_with_every_checkpoint_damaged_the_fit_starts_afresh_and_says_so(config, synthetic, uninterrupted,
                                                                        tmp_path):
    d = tmp_path / "ck"
    _stopped_after_6(config, synthetic, d)
    _flip(d / "6")
    _torn_record(d / "4")
    variables, lines = _resumed(config, synthetic, d)
    assert [x.split(" is damaged")[0] for x in lines[:2]] == [f"nerva: checkpoint {d / '6'}",
                                                              f"nerva: checkpoint {d / '4'}"]
    assert lines[2] == f"nerva: no intact checkpoint left in {d}; starting from scratch"
    assert _leaves_equal(variables, uninterrupted)


def test_a_save_cut_short_is_ignored_and_cleaned_up(config, synthetic, uninterrupted, tmp_path):
    """orbax writes a step into `<step>.orbax-checkpoint-tmp-<time>` and renames it when complete: a kill
    in between leaves that folder, which must neither be resumed from nor stay."""
    d = tmp_path / "ck"
    _stopped_after_6(config, synthetic, d)
    torn = d / "8.orbax-checkpoint-tmp-1733000000000000"
    shutil.copytree(d / "6" / "meta", torn / "meta")
    variables, lines = _resumed(config, synthetic, d)
    assert lines == []
    assert not torn.exists()
    assert _leaves_equal(variables, uninterrupted)
