"""The `nerva` command: end-to-end fit/decode/info on carphone, and one-line errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import inr
from codec.metrics import mean_psnr, psnr
from eval.cli import main
from inr.video import bundled_clip, read_video

CARPHONE = str(bundled_clip("carphone"))
FIT_FAST = ["--size", "12k", "--epochs", "2", "--frames", "0:6", "--quiet", "--seed", "1"]


def run_cli(*argv, cwd=None):
    """Runs `nerva` in a separate process: (exit status, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "eval.cli", *map(str, argv)], capture_output=True,
                       text=True, cwd=cwd, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(capsys_or_err, *words):
    err = capsys_or_err if isinstance(capsys_or_err, str) else capsys_or_err.readouterr().err
    lines = [x for x in err.strip().splitlines() if x]
    assert len(lines) == 1, err
    assert lines[0].startswith("nerva: error:"), err
    for w in words:
        assert w in lines[0], err


@pytest.fixture(scope="module", params=inr.names())
def fitted(request, tmp_path_factory):
    """A small carphone fit per model: (model name, .nerva path, the summary fit printed)."""
    out = tmp_path_factory.mktemp(request.param) / "clip.nerva"
    assert main(["fit", CARPHONE, "-o", str(out), "--model", request.param, "--json", *FIT_FAST]) == 0
    return request.param, out


@pytest.mark.slow
def test_fit_psnr_equals_psnr_of_lossless_decode_in_another_process(fitted, capsys, tmp_path):
    name, path = fitted
    out = tmp_path / "frames"
    main(["fit", CARPHONE, "-o", str(path), "--model", name, "--json", *FIT_FAST])   # same seed: same file
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    code, _, err = run_cli("decode", path, "-o", f"{out}/")
    assert code == 0, err
    decoded = read_video(out).frames
    source = read_video(CARPHONE, 0, 6).frames
    assert decoded.shape == source.shape
    assert mean_psnr(psnr(source, decoded)) == pytest.approx(row["psnr"], abs=0.01)
    assert row["bpp"] == pytest.approx(8 * path.stat().st_size / (6 * 144 * 176))


def test_info_sections_add_up_to_the_file_size(fitted):
    _, path = fitted
    code, out, err = run_cli("info", path, "--tensors")
    assert code == 0, err
    table = out.split("section")[1].split("\n\n")[0].splitlines()[1:]
    sizes = [int(line.split()[-1]) for line in table if line.strip()]
    assert sum(sizes) == path.stat().st_size
    assert f"{path.stat().st_size} bytes" in out


def test_decode_side_imports_neither_optax_nor_orbax(fitted, tmp_path):
    _, path = fitted
    code = (f"import sys; from eval.cli import main; "
            f"assert main(['info', {str(path)!r}]) == 0; "
            f"assert main(['decode', {str(path)!r}, '-o', {str(tmp_path / 'x.mkv')!r}]) == 0; "
            f"bad = [m for m in sys.modules if m.split('.')[0] in ('optax', 'orbax', 'train')]; "
            f"assert not bad, bad")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_decode_frame_range_gives_those_frames(fitted, tmp_path):
    _, path = fitted
    assert main(["decode", str(path), "-o", str(tmp_path / "all") + "/"]) == 0
    assert main(["decode", str(path), "-o", str(tmp_path / "part") + "/", "--frames", "2:5"]) == 0
    np.testing.assert_array_equal(read_video(tmp_path / "part").frames, read_video(tmp_path / "all").frames[2:5])


@pytest.mark.parametrize("argv,words", [
    (["fit", "missing.mp4", "-o", "x.nerva"], ["missing.mp4"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--model", "nope"], ["unknown model", "nope"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--model", "hnerv:cam=3"], ["bad model option", "cam_nodes"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--model", "nervpp:cam_nodes=-2"], ["cam_nodes", "-2"]),
    (["rd", "carphone", "-o", "x.jsonl", "--sizes", "10k"], ["parameter counts"]),
    (["rd", "carphone", "-o", "x.jsonl", "--codecs", "nerv:act=nope"], ["act", "nope"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--bits", "0"], ["bits"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--prune", "1.5"], ["prune"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--size", "abc"], ["size"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--bpp", "-1"], ["bpp"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--frames", "5:2"], ["frame range"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--frames", "0:500"], ["500"]),
    (["fit", CARPHONE, "-o", "no/such/dir/x.nerva", *FIT_FAST], ["does not exist"]),
    (["fit", CARPHONE, "-o", "x.nerva", "--size", "10", "--frames", "0:2"], ["budget"]),
    (["fit", CARPHONE], ["-o"]),
    (["decode", "missing.nerva", "-o", "x.mp4"], ["missing.nerva"]),
    (["info", "missing.nerva"], ["missing.nerva"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_bad_input_gets_a_one_line_error_and_no_output(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) != 0
    assert_one_line_error(capsys, *words)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_unreadable_video_and_empty_folder_are_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("garbage.mp4").write_bytes(b"\x00not a video" * 100)
    Path("empty").mkdir()
    for src in ("garbage.mp4", "empty"):
        assert main(["fit", src, "-o", "x.nerva"]) == 1
        assert_one_line_error(capsys, src)
    assert not Path("x.nerva").exists()


@pytest.mark.parametrize("damage,words", [
    (lambda b: b[: len(b) // 2], ["truncated"]),
    (lambda b: b[:100] + bytes([b[100] ^ 0x10]) + b[101:], ["corrupted"]),
    (lambda b: b[:4] + bytes([9]) + b[5:], ["version 9"]),
    (lambda b: b"GIF89a" + b[6:], ["not a .nerva file"]),
    (lambda b: b"", ["empty"]),
])
def test_damaged_files_are_refused_by_decode_and_info(fitted, damage, words, tmp_path, capsys):
    """In-process (the console script is `main`); `test_damaged_file_in_another_process` covers the process."""
    _, path = fitted
    bad = tmp_path / "bad.nerva"
    bad.write_bytes(damage(path.read_bytes()))
    for argv in (["decode", bad, "-o", tmp_path / "out.mp4"], ["info", bad]):
        assert main([str(a) for a in argv]) == 1
        assert_one_line_error(capsys, *words)
    assert not (tmp_path / "out.mp4").exists()


def test_damaged_file_in_another_process_exits_1_with_one_line(fitted, tmp_path):
    _, path = fitted
    bad = tmp_path / "bad.nerva"
    bad.write_bytes(path.read_bytes()[:-7])
    code, out, err = run_cli("decode", bad, "-o", tmp_path / "out.mp4")
    assert code == 1
    assert_one_line_error(err, "truncated")
    assert not (tmp_path / "out.mp4").exists()


def test_decode_frames_past_the_end_is_a_usage_error(fitted, capsys, tmp_path):
    _, path = fitted
    assert main(["decode", str(path), "-o", str(tmp_path / "o.mp4"), "--frames", "0:99"]) == 2
    assert_one_line_error(capsys, "0:99")


@pytest.mark.slow
def test_demo_writes_the_file_and_a_decoded_video_and_reports(capsys, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--size", "15k", "--epochs", "0.2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert (out / "carphone.nerva").is_file() and (out / "carphone_decoded.mp4").is_file()
    for word in ("bpp", "PSNR", "MS-SSIM", "frames/s"):
        assert word in text
    assert read_video(out / "carphone_decoded.mp4").frames.shape == (120, 144, 176, 3)
