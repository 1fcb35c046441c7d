"""`nerva fit` never touches its input, never leaves a partial or invalid output, and logs plain lines."""

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tqdm import tqdm

import eval.cli
import inr
import inr.sizing
import train.cli
import train.encode
import train.presets
import train.rd
from codec import api
from codec.api import QuantPolicy
from eval.cli import main
from inr.config import Geometry
from inr.video import bundled_clip, synthetic_clip, write_video
from train.encode import Diverged
from train.schedule import Phase, TrainConfig
from train.progress import PlainProgress, progress_for

FAST = ["--model", "nerv", "--size", "6k", "--epochs", "1", "--frames", "0:4", "--resize", "48x32",
        "--seed", "1", "--quiet"]


@pytest.fixture
def clip(tmp_path) -> Path:
    """A copy of the bundled carphone clip, so that a test that fails cannot damage the real one."""
    return Path(shutil.copy(bundled_clip("carphone"), tmp_path / "clip.mp4"))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _one_line_error(capsys, *words) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nerva: error:"), err
    for w in words:
        assert w in lines[0], err


def _same(clip: Path) -> Path:
    return clip


def _symlink(clip: Path) -> Path:
    (clip.parent / "link.nerva").symlink_to(clip)
    return clip.parent / "link.nerva"


def _hardlink(clip: Path) -> Path:
    os.link(clip, clip.parent / "hard.nerva")
    return clip.parent / "hard.nerva"


def _dotted(clip: Path) -> Path:
    return clip.parent / ".." / clip.parent.name / clip.name   # another spelling of the same path


@pytest.mark.parametrize("output", [_same, _symlink, _hardlink, _dotted], ids=lambda f: f.__name__.strip("_"))
def test_an_output_that_is_the_input_is_refused_before_any_work_and_the_input_is_untouched(
        output, clip, tmp_path, capsys):
    out = output(clip)
    before, listing = _sha(clip), _listing(tmp_path)
    assert main(["fit", str(clip), "-o", str(out), *FAST]) == 2
    _one_line_error(capsys, "is the input video itself")
    assert _sha(clip) == before
    assert _listing(tmp_path) == listing   # no checkpoint folder, no temporary file


@pytest.fixture
def folder(tmp_path) -> Path:
    """An input folder of 4 PNG frames."""
    return write_video(f"{tmp_path}/frames/", synthetic_clip(4, 32, 48))


@pytest.mark.parametrize("where,words", [(".", "is the input video itself"),
                                         ("x.nerva", "inside the input folder")])
def test_an_output_that_is_or_lies_in_the_input_folder_is_refused(where, words, folder, tmp_path, capsys):
    listing = _listing(tmp_path)
    assert main(["fit", str(folder), "-o", str(folder / where), *FAST[:4], *FAST[-3:]]) == 2
    _one_line_error(capsys, words)
    assert _listing(tmp_path) == listing


def test_an_input_where_the_checkpoints_would_go_is_refused_not_deleted(tmp_path, capsys):
    """Without --resume a fit first clears OUTPUT.ckpt: an input of that name would be deleted."""
    src = write_video(f"{tmp_path}/x.nerva.ckpt/", synthetic_clip(4, 32, 48))   # '/': a folder of PNGs
    listing = _listing(tmp_path)
    assert main(["fit", str(src), "-o", str(tmp_path / "x.nerva"), *FAST[:4], *FAST[-3:]]) == 2
    _one_line_error(capsys, "where the fit keeps its checkpoints")
    assert _listing(tmp_path) == listing


def test_an_output_that_is_an_existing_directory_is_refused_before_any_work(clip, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    listing = _listing(tmp_path)
    t = time.perf_counter()
    assert main(["fit", str(clip), "-o", str(tmp_path / "out"), *FAST]) == 2
    assert time.perf_counter() - t < 10   # refused up front, not after a fit (no compile happened)
    _one_line_error(capsys, "is a directory")
    assert _listing(tmp_path) == listing


def test_a_real_divergence_is_refused_by_encode_naming_the_problem(synthetic):
    config = inr.get("nerv").config_cls.tiny(Geometry.of(*synthetic.shape[:3]))
    with pytest.raises(Diverged, match=r"^the fit diverged \(non-finite weights in variables/params/.*\); "
                                       r"try a lower --lr$"):
        train.encode.encode(config, synthetic, TrainConfig((Phase("fit", 1, 1e10),), batch=2), QuantPolicy())


def _spoiled_fit(monkeypatch, spoil):
    """Makes every fit end on `spoil(weights)`: a fit that went wrong, as seen by what follows it."""
    real_fit = train.encode.fit

    def spoiled(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        result.variables = jax.tree.map(lambda x: spoil(np.asarray(x)), result.variables)
        return result
    monkeypatch.setattr(train.encode, "fit", spoiled)


def test_a_diverged_fit_leaves_no_output_no_temporary_file_and_no_checkpoint(clip, tmp_path, capsys,
                                                                              monkeypatch):
    _spoiled_fit(monkeypatch, lambda w: w * np.float32("nan"))
    before = _sha(clip)
    assert main(["fit", str(clip), "-o", str(tmp_path / "x.nerva"), *FAST]) == 1
    _one_line_error(capsys, "the fit diverged (non-finite weights", "try a lower --lr")
    assert _listing(tmp_path) == ["clip.mp4"] and _sha(clip) == before


def test_finite_weights_that_make_no_valid_file_are_not_written(clip, tmp_path, capsys, monkeypatch):
    """Weights of 1e10 are finite, but at fixed bits their quantization steps overflow float16: the file
    would not read."""
    _spoiled_fit(monkeypatch, lambda w: w * np.float32(1e10))
    assert main(["fit", str(clip), "-o", str(tmp_path / "x.nerva"), *FAST, "--bits", "8"]) == 1
    _one_line_error(capsys, "do not make a valid file", "non-finite quantization step", "try a lower --lr")
    assert _listing(tmp_path) == ["clip.mp4"]


def test_finite_weights_that_outgrow_their_learned_steps_are_not_written(clip, tmp_path, capsys, monkeypatch):
    """Rate-distortion training (the default) learns the steps: weights of 1e10 on steps of ~1e-2 give
    symbols spanning ~1e12 values, more than any entropy table holds (codec.entropy.MAX_SUPPORT)."""
    _spoiled_fit(monkeypatch, lambda w: w * np.float32(1e10))
    assert main(["fit", str(clip), "-o", str(tmp_path / "x.nerva"), *FAST]) == 1
    _one_line_error(capsys, "do not make a valid file", "symbols span", "try a lower --lr")
    assert _listing(tmp_path) == ["clip.mp4"]


def test_stale_temporary_files_of_the_output_are_removed_and_no_others(clip, tmp_path, capsys):
    stale = tmp_path / ".x.nerva.k3_9zq1a.tmp"        # codec.container.write_atomic's name for x.nerva
    kept = [tmp_path / ".x.nerva.mine.tmp", tmp_path / ".y.nerva.k3_9zq1a.tmp", tmp_path / "x.nerva.k3_9zq1a.tmp"]
    for p in (stale, *kept):
        p.write_bytes(b"partial")
    assert main(["fit", str(clip), "-o", str(tmp_path / "x.nerva"), *FAST]) == 0
    assert not stale.exists() and all(p.exists() for p in kept)
    api.load(tmp_path / "x.nerva")   # the output reads back


# ----------------------------------------------------------------------------------------------- logs


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_progress_prints_a_line_per_tenth_with_the_eta_of_the_steps_run_so_far():
    clock, out = _Clock(), io.StringIO()
    bar = PlainProgress(100, out, every_s=30, clock=clock)
    for n in range(1, 101):
        clock.t = float(n)              # one step per second, the first one done at t = 1 s
        bar.set_postfix_str(f"fit loss {1 / n:.4f} psnr {n / 4:.2f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in out.getvalue()
    # at step 50: 49 steps in the 49 s since the first one, 50 to go at 1 step/s
    assert lines[4] == "step 50/100 (50%)  fit loss 0.0200 psnr 12.50  elapsed 00:50  ETA 00:50"
    assert lines[-1].startswith("step 100/100 (100%)")


def test_plain_progress_also_prints_after_30_quiet_seconds_and_once_at_close():
    clock, out = _Clock(), io.StringIO()
    bar = PlainProgress(1000, out, every_s=30, clock=clock)
    bar.update(1)          # t = 0: nothing yet
    clock.t = 31.0
    bar.update(1)          # 31 s without a line: one now, though only 2 of 1000 steps are done
    clock.t = 40.0
    bar.update(3)
    bar.close()            # the last state is printed once
    lines = out.getvalue().splitlines()
    assert [x.split("  ")[0] for x in lines] == ["step 2/1000 (0%)", "step 5/1000 (0%)"]


def test_progress_is_a_tqdm_bar_on_a_terminal_only():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert isinstance(progress_for(io.StringIO())(10), PlainProgress)
    bar = progress_for(Tty())(10)
    assert isinstance(bar, tqdm)
    bar.close()


@pytest.mark.slow
def test_a_fit_logged_to_a_file_writes_bounded_plain_lines(tmp_path):
    log = tmp_path / "stderr.txt"
    argv = [sys.executable, "-m", "eval.cli", "fit", str(bundled_clip("carphone")), "-o", str(tmp_path / "x.nerva"),
            *[a for a in FAST if a != "--quiet"], "--pipeline", "fixed"]
    argv[argv.index("--epochs") + 1] = "40"   # 4 frames at batch 2: 80 fit + 4 QAT epochs of 2 steps = 88
    t = time.perf_counter()
    with log.open("w") as f:
        assert subprocess.run(argv, stderr=f, stdout=subprocess.DEVNULL, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                              timeout=600).returncode == 0
    wall = time.perf_counter() - t
    text = log.read_text()
    lines = text.splitlines()
    assert "\r" not in text
    assert 10 <= len(lines) <= 11 + wall / 30, text   # a line per tenth, plus one per 30 s without one
    assert all(re.fullmatch(r"step \d+/88 \(\d+%\)  .*elapsed \d\d:\d\d.*", x) for x in lines), text
    assert lines[-1].startswith("step 88/88 (100%)  qat loss ")


def test_a_bpp_target_past_the_parameter_limit_is_refused_before_sizing(clip, tmp_path, capsys):
    # 16 bpp on 4 frames of 2160x3840 at 8 bits is 16·4·2160·3840 / 7.5 ≈ 7.08e7 parameters (the 7.5 bits a
    # parameter costs at 8 bits: inr.registry.bits_per_param_at), past the 2^26 = 67,108,864 of any model
    # (the most a .nerva file may describe, FORMAT.md §5.1).
    with pytest.raises(inr.errors.ConfigError, match=r"7\.08e\+07 parameters.*67,108,864"):
        train.encode.make_config("nerv", Geometry.of(4, 2160, 3840), bpp=16.0, bits=8)
    # and 2^26 parameters' worth (15.1 bpp) passes this check
    assert train.encode.params_for_bpp(inr.registry.get("nerv"), Geometry.of(4, 2160, 3840), 15.1, 8) <= 2**26


@pytest.mark.parametrize("model, option", [("nirvana", ["--bits", "6"]), ("nirvana", ["--prune", "0.2"]),
                                           ("nirvana", ["--batch", "4"]), ("nirvana", ["--embed-bits", "4"]),
                                           ("nerv", ["--embed-bits", "4"]), ("cam", ["--embed-bits", "4"])])
def test_a_fit_option_the_family_does_not_honour_is_refused_before_any_work(model, option, clip, tmp_path,
                                                                            capsys, monkeypatch):
    monkeypatch.setattr(train.cli, "read_video", lambda *a, **k: pytest.fail("the video was read"))
    assert main(["fit", str(clip), "-o", str(tmp_path / "x.nerva"), "--model", model, *option, "--quiet"]) == 2
    _one_line_error(capsys, f"{option[0]} does not apply to {model}", f"--model {model}:FIELD=VALUE")
    assert _listing(tmp_path) == ["clip.mp4"]


def test_embed_bits_set_the_embeddings_of_a_family_that_has_them_and_nothing_else(clip, tmp_path, capsys):
    out = tmp_path / "x.nerva"
    assert main(["fit", str(clip), "-o", str(out), "--model", "hnerv", "--size", "20k", "--epochs", "1",
                 "--frames", "0:4", "--resize", "48x32", "--bits", "7", "--embed-bits", "3", "--quiet"]) == 0
    config, collections, _ = api.parse(out.read_bytes())
    def widest_channel(symbols) -> int:   # levels span each output channel (last axis) separately
        columns = symbols.reshape(-1, symbols.shape[-1]) if symbols.ndim >= 2 else symbols.reshape(-1, 1)
        return int((columns.max(axis=0) - columns.min(axis=0)).max())
    spans = {f"{name}/{p}": widest_channel(q.symbols)
             for name, (tensors, _) in collections.items() for p, q in tensors.items() if q.symbols.size}
    embed = [s for p, s in spans.items() if p.startswith("latents/")]
    assert embed and all(s <= 2**3 - 1 for s in embed)   # 3 bits: at most 8 levels per channel
    assert max(s for p, s in spans.items() if not p.startswith("latents/")) > 2**3 - 1   # the weights: 7 bits


def test_a_bpp_target_sizes_a_model_by_its_familys_bits_per_parameter():
    # NIRVANA's files spend ~1.2 bits per parameter, NeRV's 7.5 at 8 bits: at 0.5 bpp on 120 frames of 176x144
    # that is 0.5·120·144·176 / 1.2 = 1,267,200 parameters for NIRVANA and / 7.5 = 202,752 for NeRV
    g = Geometry.of(120, 144, 176)
    assert train.encode.params_for_bpp(inr.registry.get("nirvana"), g, 0.5, 8) == 1_267_200
    assert train.encode.params_for_bpp(inr.registry.get("nerv"), g, 0.5, 8) == 202_752


def test_rate_distortion_sizing_follows_the_familys_bits_per_parameter_table(monkeypatch):
    # A table of (bpp, bits) pairs is linear in log-log between its points and held past its ends: between
    # (0.02, 1.3) and (0.2, 5.2) the geometric mean 0.2/sqrt(10) ≈ 0.0632 gets sqrt(1.3·5.2) = 2.6 bits
    fake = train.presets.Preset(size=1000, lr=1e-3, beta1=0.9, epochs=1, rd_bits_per_param=((0.2, 5.2), (0.02, 1.3)))
    monkeypatch.setattr(train.presets, "preset", lambda model: fake)
    bits = train.presets.rd_bits_per_param
    assert bits("x", 0.2 / 10**0.5) == pytest.approx(2.6, rel=1e-9)
    assert (bits("x", 0.001), bits("x", 0.02), bits("x", 0.2), bits("x", 3.0)) == (1.3, 1.3, 5.2, 5.2)
    monkeypatch.undo()
    assert train.presets.rd_bits_per_param("cam", 0.05) == train.rd.CONTROL_BITS_PER_PARAM == 3.0   # no table


@pytest.mark.parametrize("bpp", [0.02, 0.05, 0.2])
def test_nerva_fit_sizes_a_rate_distortion_model_by_its_familys_table(bpp):
    # `nerva fit --pipeline rd --bpp B` asks for B·pixels / bits parameters, `bits` from the family's table;
    # for_size rounds down to a buildable config (never above the budget, and within 15 % of it here)
    g = Geometry.of(120, 144, 176)
    args = eval.cli.build_parser().parse_args(["fit", "x.mp4", "-o", "x.nerva", "--model", "hnerv",
                                                "--pipeline", "rd", "--bpp", str(bpp)])
    train.cli.check_fit_options(args)
    budget = bpp * 120 * 144 * 176 / train.presets.rd_bits_per_param("hnerv", bpp)
    n = inr.sizing.count(inr.registry.get("hnerv").init, train.cli.make_fit_config(args, g))
    assert 0.85 * budget <= n <= budget


def test_hnervs_rate_distortion_widths_fall_by_1_5_per_stage_to_at_least_6_while_the_fixed_pipelines_keep_the_references():
    # inr/hnerv.py RD_REDUCE / RD_LOWER_WIDTH: each stage round(C_in / 1.5) channels, at least 6, from the
    # stem's width; the fixed pipeline's model keeps the reference's C_in / 1.2, at least 12
    def chain(width, reduce, lower):
        out, c = [], width
        for _ in range(5):   # carphone: 5 upsampling stages
            c = max(int(c / reduce + 0.5), min(lower, width))
            out.append(c)
        return tuple(out)

    carphone = Geometry.of(120, 144, 176)
    rd = train.presets.rd_config("hnerv", carphone, 0.093)
    assert rd.channels == chain(rd.stem_channels, 1.5, 6) and rd.channels[-1] < 12
    fixed = train.encode.make_config("hnerv", carphone, n_params=100_000)
    assert fixed.channels == chain(fixed.stem_channels, 1.2, 12) and fixed.channels[-1] == 12


def test_rate_distortion_sizing_gives_hnervs_embeddings_a_share_of_the_rate_under_the_model_strings_fields():
    # 0.065 stored embedding values per pixel per bpp: carphone's 3×4 embedding grid at 0.02 bpp gets
    # 0.065·0.02·176·144 / 12 = 2.75 -> 3 channels, bigbuckbunny 320×180's 2×4 grid 0.065·0.02·57,600 / 8 =
    # 9.36 -> 9; 0.043 on carphone 5.9 -> 6; clamped to 2..16. The model string's own field wins, and the
    # model is sized with the field set
    carphone, bbb = Geometry.of(120, 144, 176), Geometry.of(132, 180, 320)
    config = train.presets.rd_config
    assert [config("hnerv", carphone, b).embed_channels for b in (0.005, 0.02, 0.043, 0.2)] == [2, 3, 6, 16]
    assert [config("hnerv", bbb, b).embed_channels for b in (0.02, 0.043)] == [9, 16]
    assert config("hnerv:embed_channels=5", carphone, 0.02).embed_channels == 5
    assert config("nerv", carphone, 0.02) == train.encode.make_config(    # a family without fields: the size alone
        "nerv", carphone, bpp=0.02, bits_per_param=train.presets.rd_bits_per_param("nerv", 0.02))
    budget = 0.02 * carphone.pixels / train.presets.rd_bits_per_param("hnerv", 0.02)
    assert 0.85 * budget <= inr.sizing.count(inr.registry.get("hnerv").init, config("hnerv", carphone, 0.02)) <= budget
