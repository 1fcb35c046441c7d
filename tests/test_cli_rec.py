"""`nerva train-prior`, `nerva fit --pipeline rec`, `decode`, `info` on a relative-entropy-coded model, end to end
on a bundled clip's first frames, and the options such a model refuses."""

from __future__ import annotations

import numpy as np
import pytest

from codec import api
from eval.cli import main
from inr.video import bundled_clip, read_video

MODEL = "recombiner:hidden=8:layers=1:freqs=2:latent_channels=2:lpe_channels=4"
BPP = 0.3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_rec")
    assert main(["train-prior", "--model", MODEL, "--count", "3", "--frames", "16", "--size", "32x32", "--rounds",
                 "2", "--steps", "3", "--bpp", str(BPP), "-o", str(d / "tiny-prior.npz"), "--quiet"]) == 0
    clip = str(bundled_clip("carphone"))
    assert main(["fit", clip, "--frames", "0:16", "--resize", "48x32", "--model", MODEL, "--prior",
                 str(d / "tiny-prior.npz"), "--bpp", str(BPP), "--epochs", "4", "-o", str(d / "c.nerva"),
                 "--quiet", "--json"]) == 0
    return d, clip


def test_the_fit_writes_a_file_at_the_target_that_decodes_with_its_prior(files, capsys):
    d, clip = files
    data = (d / "c.nerva").read_bytes()
    pixels = 16 * 32 * 48
    assert BPP * pixels - 16 - 32 <= 8 * len(data) <= BPP * pixels
    assert not (d / "c.nerva.rec.npz").exists()      # the checkpoint goes once the file is written
    assert main(["decode", str(d / "c.nerva"), "--prior", str(d / "tiny-prior.npz"), "-o", str(d / "out")]) == 0
    decoded = read_video(d / "out")
    config, variables = api.load(d / "c.nerva", [d / "tiny-prior.npz"])
    from codec.decoder import decode_frames
    assert np.array_equal(decoded.frames, decode_frames(config, variables))


def test_info_reports_the_blocks_and_the_bytes_with_and_without_the_prior(files, capsys):
    d, _ = files
    capsys.readouterr()
    assert main(["info", str(d / "c.nerva"), "--prior", str(d / "tiny-prior.npz")]) == 0
    out = capsys.readouterr().out
    size = (d / "c.nerva").stat().st_size
    prior = (d / "tiny-prior.npz").stat().st_size
    assert "relative-entropy-coded blocks of 16 bits" in out
    assert f"file + prior {size + prior:,} bytes" in out


def test_without_its_prior_a_file_is_refused_in_one_line(files, capsys, monkeypatch, tmp_path):
    d, _ = files
    monkeypatch.setenv("NERVA_PRIORS", str(tmp_path))
    capsys.readouterr()
    assert main(["decode", str(d / "c.nerva"), "-o", str(tmp_path / "x.mp4")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "prior 'tiny-prior'" in err and "--prior PATH" in err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("argv,message", [
    (["--model", "nerv", "--prior", "p.npz"], "--prior does not apply to nerv"),
    (["--model", "recombiner", "--pipeline", "rd"], "--pipeline rd does not apply to recombiner"),
    (["--model", "recombiner", "--size", "10k"], "--size does not apply to --pipeline rec"),
    (["--model", "recombiner", "--bits", "6"], "--bits does not apply to recombiner"),
])
def test_options_that_do_not_apply_are_refused_before_any_work(argv, message, capsys, tmp_path):
    assert main(["fit", str(bundled_clip("carphone")), "-o", str(tmp_path / "o.nerva"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.nerva").exists()


def test_an_rd_sweep_codes_each_target_against_the_prior_and_records_it(files, tmp_path):
    d, _ = files
    out = tmp_path / "rd.jsonl"
    assert main(["rd", "carphone", "--frames", "0:16", "--resize", "48x32", "--codecs", MODEL, "--prior",
                 str(d / "tiny-prior.npz"), "--points", "2", "--bpp-range", "0.2:0.3", "--epochs", "2", "-o",
                 str(out), "--quiet"]) == 0
    from eval.results import read_rows
    rows = read_rows(out)
    assert [r.preset.split(",")[0] for r in rows] == ["bpp=0.2", "bpp=0.3"]
    for r, target in zip(rows, (0.2, 0.3)):
        assert target * 0.9 < r.bpp <= target and r.config["prior"] == "tiny-prior"


def test_without_prior_the_fit_takes_the_models_prior_learned_nearest_its_rate(tmp_path, monkeypatch):
    from codec import assets
    from inr import registry
    from train.rec_cli import find_prior
    for bpp in (0.05, 0.2):
        assets.save(tmp_path / f"p{bpp}.npz", f"p{bpp}", {"rec/beta": np.ones(1)},
                    {"model": "recombiner", "target_bpp": bpp})
    assets.save(tmp_path / "other.npz", "other", {"x": np.ones(1)}, {"model": "nerv", "target_bpp": 0.15})
    monkeypatch.setenv("NERVA_PRIORS", str(tmp_path))
    spec = registry.get("recombiner")
    assert find_prior(spec, None, 0.15).id == "p0.2"      # |log(0.2/0.15)| < |log(0.05/0.15)|
    assert find_prior(spec, None, 0.04).id == "p0.05"
    assert find_prior(spec, None, 0.09).id == "recombiner-0.1"   # the shipped prior is searched after these
