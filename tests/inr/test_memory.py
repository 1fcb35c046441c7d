"""A program's working memory is XLA's buffer assignment, and a fit or decode that cannot get it is refused first."""

import dataclasses
import hashlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inr.memory
from codec import api
from eval.cli import main
from inr.registry import get
from inr.video import synthetic_clip, write_video

N = 1 << 16   # float32 elements: 256 KiB, far above any constant overhead of the analysis


def test_a_program_needs_its_output_and_nothing_for_an_output_that_reuses_a_donated_input():
    x = jnp.zeros((N,), jnp.float32)
    plain = jax.jit(lambda a: a + 1).lower(x).compile()
    donated = jax.jit(lambda a: a + 1, donate_argnums=0).lower(x).compile()
    assert 4 * N <= inr.memory.program_bytes(plain) <= 4 * N + 4096   # the output; no temporaries
    assert inr.memory.program_bytes(donated) <= 4096                  # the output is the input's buffer


def test_a_program_with_a_large_temporary_needs_at_least_that_temporary():
    # (a·2)ᵀ(a·2) of a (256, 256) matrix: the scaled matrix is a 256 KiB temporary, the result as large
    x = jnp.ones((256, 256), jnp.float32)
    compiled = jax.jit(lambda a: (a * 2).T @ (a * 2)).lower(x).compile()
    assert inr.memory.program_bytes(compiled) >= 4 * 256 * 256


def test_free_memory_on_cpu_is_positive_and_at_most_the_machines_memory():
    free = inr.memory.available_bytes()
    assert 0 < free <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def test_a_program_larger_than_the_free_memory_is_refused_naming_both_sizes_and_the_remedy(monkeypatch):
    monkeypatch.setattr(inr.memory, "available_bytes", lambda device=None: 1000)
    compiled = jax.jit(lambda a: a + 1).lower(jnp.zeros((N,), jnp.float32)).compile()
    with pytest.raises(inr.memory.ResourceError, match=r"^a test step needs 0\.000262 GB of working memory "
                                                       r"and 1e-06 GB is available; use less$"):
        inr.memory.check_program(compiled, "a test step", "use less")


@pytest.fixture
def short_clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    write_video(path, synthetic_clip(4, 32, 48), fps=25)
    return path


def _one_line(capsys, *words) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nerva: error:"), err
    assert all(w in err[0] for w in words), err


def test_a_fit_whose_step_cannot_get_its_memory_stops_before_its_first_step_and_leaves_nothing(
        short_clip, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inr.memory, "available_bytes", lambda device=None: 1000)
    source = hashlib.sha256(short_clip.read_bytes()).hexdigest()
    out = tmp_path / "x.nerva"
    assert main(["fit", str(short_clip), "-o", str(out), "--model", "nerv", "--size", "6k", "--epochs", "1",
                 "--quiet"]) == 1
    _one_line(capsys, "a training step at 48x32 with 2 frames per step needs", "GB is available", "--batch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]   # no output, temp or checkpoint
    assert hashlib.sha256(short_clip.read_bytes()).hexdigest() == source


def test_a_decode_that_cannot_get_its_memory_is_refused_before_any_frame_and_writes_nothing(
        tmp_path, capsys, monkeypatch):
    spec = get("nerv")
    config = spec.config_cls.tiny()   # a geometry no other test decodes, so its program is compiled here
    config = dataclasses.replace(config, geometry=dataclasses.replace(config.geometry, fps_num=7))
    variables = spec.init(config, jax.random.key(0))
    path = tmp_path / "x.nerva"
    path.write_bytes(api.compress(config, api.quantize_variables(variables, api.QuantPolicy(bits=8))))
    monkeypatch.setattr(inr.memory, "available_bytes", lambda device=None: 1000)
    assert main(["decode", str(path), "-o", str(tmp_path / "x.mp4")]) == 1
    g = config.geometry
    _one_line(capsys, f"decoding {g.width}x{g.height} frames, 2 at a time needs", "decode fewer frames")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nerva"]
