"""`nerva fit` killed (SIGKILL) or stopped (Ctrl-C) anywhere in its phases resumes to the same bytes.

Every run is a real `python -m eval.cli fit` process. The kills come from the NERVA_TEST_KILL_AT_STEP hook
(train/cli.py): the process SIGKILLs itself right after the checkpoint of that global step is committed,
so the test knows where each resume starts (a poller from outside could not land inside a chosen phase of
a fit whose steps take milliseconds). Kills are chained: each resumed run is itself killed later on.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inr.config import Geometry
from inr.video import bundled_clip
from train import presets
from train.cli import KILL_AT_STEP_ENV
from train.encode import make_config
from train.loop import phase_steps

pytestmark = pytest.mark.slow

CLIP = [str(bundled_clip("carphone")), "--frames", "0:4", "--resize", "48x32"]
# NeRV with pruning on the fixed-bit pipeline, 4 frames at batch 2: fit 40 epochs = steps 1-80, prune 4 epochs = 81-88, QAT 89-96.
NERV = ["--model", "nerv", "--pipeline", "fixed", "--size", "6k", "--epochs", "40", "--prune", "0.3", "--seed", "1",
        "--quiet"]
NERV_KILLS = {"fit": 40, "prune": 84, "qat": 92}
# NIRVANA in groups of 2 frames: 3 epochs · 4 frames · 0.5 steps = 6 steps, half for group 0 (steps 1-3),
# the rest for group 1 (4-6), at batch 2 of a group's 2 frames. Step 3 ends group 0: the kill between groups.
NIRVANA = ["--model", "nirvana:group=2", "--size", "6k", "--epochs", "3", "--seed", "1", "--quiet"]
NIRVANA_KILLS = {"inside group 0": 2, "between groups": 3, "inside group 1": 5}


def _fit(out: Path, options, *, kill_at=None, resume=False, every=10, wait=True):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop(KILL_AT_STEP_ENV, None)
    if kill_at is not None:
        env[KILL_AT_STEP_ENV] = str(kill_at)
    argv = [sys.executable, "-m", "eval.cli", "fit", *CLIP, "-o", str(out), *options,
            "--checkpoint-every", str(every), *(["--resume"] if resume else [])]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)


def _steps(out: Path) -> list[int]:
    """The committed checkpoint steps beside `out` (orbax names a finished step's folder by its number)."""
    ckpt = out.with_name(out.name + ".ckpt")
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reference(directory: Path, options) -> str:
    """sha256 of the file an uninterrupted fit writes."""
    ref = directory / "reference.nerva"
    p = _fit(ref, options)
    assert p.returncode == 0, p.stderr
    return _sha(ref)


@pytest.fixture(scope="module")
def nerv_reference(tmp_path_factory) -> str:
    return _reference(tmp_path_factory.mktemp("reference"), NERV)


def _killed_and_resumed(tmp_path: Path, options, kills: dict, damage: dict | None = None):
    """Kills a fit at each step of `kills` in turn (each run resuming the previous one), then resumes it
    to the end; `damage[where](out, step)` spoils the checkpoint that kill left. Returns the output path and
    the stderr of each resumed run."""
    out, damage, errs = tmp_path / "killed.nerva", damage or {}, []
    for i, (where, step) in enumerate(kills.items()):
        p = _fit(out, options, kill_at=step, resume=i > 0)
        errs += [p.stderr] if i else []
        assert p.returncode == -signal.SIGKILL, (where, p.stderr)
        assert not out.exists(), where                    # a killed fit writes no output
        assert _steps(out)[-1] == step, (where, _steps(out))   # the resume starts where the kill was
        if where in damage:
            damage[where](out, step)
    p = _fit(out, options, resume=True)
    assert p.returncode == 0, p.stderr
    assert not out.with_name(out.name + ".ckpt").exists()   # a finished fit removes its checkpoints
    return out, errs + [p.stderr]


def _torn(out: Path, step: int) -> None:
    """Truncates the largest file of the checkpoint (where its tensors are): a torn write."""
    data = max((p for p in (out.with_name(out.name + ".ckpt") / str(step)).rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def test_nerv_killed_in_fit_prune_and_qat_resumes_to_the_identical_file(tmp_path, nerv_reference):
    """The prune kill's checkpoint (step 84) is also torn: that resume falls back to step 80's, the
    last periodic one (every 10 steps), and is killed again in QAT."""
    out, errs = _killed_and_resumed(tmp_path, NERV, NERV_KILLS, damage={"prune": _torn})
    # the run resumed after the prune kill. Known gap: under load, tensorstore's reader threads of the torn
    # file can print "Event loop is closed" tracebacks after orbax closed its loop (seen twice in full-suite
    # runs, never alone); nerva's own lines are checked exactly
    lines = [line for line in errs[1].strip().splitlines() if line.startswith("nerva:")]
    assert len(lines) == 2 and "/84 is damaged (" in lines[0], errs[1]
    assert "internal error" not in errs[1]
    assert lines[1] == "nerva: resuming from the earlier checkpoint at step 80", errs[1]
    assert errs[0] == errs[2] == ""   # resuming an intact checkpoint says nothing
    assert _sha(out) == nerv_reference


def test_nirvana_killed_inside_and_between_groups_resumes_to_the_identical_file(tmp_path):
    reference = _reference(tmp_path, NIRVANA)
    out, _ = _killed_and_resumed(tmp_path, NIRVANA, NIRVANA_KILLS)
    assert _sha(out) == reference


def test_ctrl_c_checkpoints_stops_with_one_line_and_resumes_to_the_identical_file(tmp_path, nerv_reference):
    out = tmp_path / "stopped.nerva"
    child = _fit(out, NERV, every=1, wait=False)   # a checkpoint per step: the fit is still running when
    deadline = time.monotonic() + 600                 # the first one appears, and Ctrl-C is handled by then
    while not _steps(out) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=600)
    assert child.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    step = _steps(out)[-1]
    assert lines[0].startswith(f"nerva: interrupted at step {step} of 96; checkpoint saved in "), err
    assert str(out.with_name(out.name + ".ckpt")) in lines[0] and "--resume" in lines[0], err
    assert 0 < step < 96 and not out.exists()
    p = _fit(out, NERV, resume=True)
    assert p.returncode == 0, p.stderr
    assert _sha(out) == nerv_reference


def test_the_kill_points_lie_in_the_phases_they_are_named_for():
    """The schedules the two option sets give (as `nerva fit` builds them): where each phase ends."""
    def phase_ends(model, prune):
        config = make_config(model, Geometry.of(4, 32, 48), n_params=6000)
        train = presets.train_config(model, 40 if prune else 3, prune=prune, seed=1, config=config)
        return [p.name for p in train.phases], list(np.cumsum(phase_steps(train, 4)))
    assert phase_ends("nerv", 0.3) == (["fit", "prune", "qat"], [80, 88, 96])
    assert 0 < NERV_KILLS["fit"] < 80 < NERV_KILLS["prune"] < 88 < NERV_KILLS["qat"] < 96
    assert phase_ends("nirvana:group=2", 0.0) == (["group0", "group1"], [3, 6])
    assert 0 < NIRVANA_KILLS["inside group 0"] < NIRVANA_KILLS["between groups"] == 3 < NIRVANA_KILLS["inside group 1"] < 6
