"""Result rows: exact JSON round trips, strict reading with line numbers, provenance, resume keys."""

import dataclasses
import importlib.metadata
import json
import math
import re

import pytest

from codec.metrics import Quality
from eval import results
from eval.results import Row, ResultsFileError, append_row, done_keys, new_row, provenance, read_rows, row_key


def _row(**changes) -> Row:
    base = dict(
        codec="x265-medium",
        preset="crf28",
        clip="carphone",
        frames=10,
        height=144,
        width=176,
        bytes=5000,
        bpp=8 * 5000 / (10 * 144 * 176),
        psnr=31.25,
        psnr_y=32.5,
        ms_ssim=0.975,
        ms_ssim_scales=4,
        encode_s=0.123456789,
        decode_fps=1234.5,
        config={"crf": 28, "args": ["-preset", "medium"], "nested": {"pad": [0, 1], "none": None}},
        key=row_key("x265-medium", "carphone", 10, "crf28"),
        nerva_version="0.1.0",
        git_sha="0123456789abcdef0123456789abcdef01234567",
        ffmpeg_version="ffmpeg version n9.0.2",
        created="2026-01-02T03:04:05+00:00",
    )
    base.update(changes)
    if "bytes" in changes and "bpp" not in changes:
        base["bpp"] = 8 * base["bytes"] / (base["frames"] * base["height"] * base["width"])
    return Row(**base)


def test_json_round_trip_is_exact_including_infinite_psnr_and_no_ffmpeg():
    for row in (_row(), _row(psnr=math.inf, psnr_y=math.inf, ffmpeg_version=None, bytes=0)):
        line = row.to_json()
        assert "\n" not in line
        assert Row.from_json(line) == row


def test_integer_valued_floats_become_floats_so_the_round_trip_keeps_types():
    row = _row(encode_s=2, decode_fps=30)
    back = Row.from_json(row.to_json())
    assert back == row and type(back.encode_s) is float and type(back.decode_fps) is float


def test_from_json_rejects_missing_and_unknown_keys():
    data = json.loads(_row().to_json())
    with pytest.raises(ValueError, match="missing \\['psnr'\\]"):
        Row.from_json(json.dumps({k: v for k, v in data.items() if k != "psnr"}))
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        Row.from_json(json.dumps({**data, "extra": 1}))


def test_rows_reject_wrong_types_inconsistent_bpp_and_non_json_config():
    with pytest.raises(ValueError, match="frames"):
        _row(frames="10")
    with pytest.raises(ValueError, match="bpp"):
        _row(bpp=0.5)
    with pytest.raises(ValueError, match="config"):
        _row(config={"pad": (0, 1)})   # a tuple would come back as a list
    with pytest.raises(ValueError, match="NaN"):
        _row(psnr=math.nan)
    with pytest.raises(ValueError, match="created"):
        _row(created="yesterday")


def test_appended_rows_read_back_in_order_one_terminated_line_each(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    rows = [_row(preset=f"crf{c}", key=row_key("x265-medium", "carphone", 10, f"crf{c}")) for c in (20, 30)]
    for row in rows:
        append_row(path, row)
    assert read_rows(path) == rows
    assert path.read_text().count("\n") == 2 and path.read_text().endswith("\n")


def test_read_rows_raises_on_a_malformed_line_naming_its_number(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = _row().to_json()
    path.write_text(f"{good}\n{{not json\n{good}\n")
    with pytest.raises(ValueError, match=r"rows.jsonl:2: bad row"):
        read_rows(path)
    path.write_text(f"{good}\n\n{good}\n")
    with pytest.raises(ValueError, match=r":2: bad row"):
        read_rows(path)


def test_an_unterminated_last_line_is_an_error_for_reading_and_appending(tmp_path):
    path = tmp_path / "rows.jsonl"
    good = _row().to_json()
    path.write_text(f"{good}\n{good[:40]}")
    with pytest.raises(ValueError, match=r":2: last line is unterminated"):
        read_rows(path)
    with pytest.raises(ValueError, match="unterminated"):
        append_row(path, _row())


def test_done_keys_is_empty_for_a_missing_file_and_lists_written_keys(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert done_keys(path) == set()
    append_row(path, _row())
    append_row(path, _row(preset="crf35", key=row_key("x265-medium", "carphone", 10, "crf35")))
    assert done_keys(path) == {"x265-medium|carphone|10|crf28", "x265-medium|carphone|10|crf35"}


def test_appending_a_key_the_file_already_holds_is_refused_and_leaves_the_file_unchanged(tmp_path):
    path = tmp_path / "rows.jsonl"
    append_row(path, _row())
    before = path.read_bytes()
    with pytest.raises(ResultsFileError, match=re.escape("already holds a row with key 'x265-medium|carphone|10|crf28'")):
        append_row(path, _row(psnr=40.0, created="2026-01-03T00:00:00+00:00"))   # a re-measurement, same key
    assert path.read_bytes() == before


def test_a_file_holding_one_key_twice_is_refused_for_resuming_and_appending(tmp_path):
    path = tmp_path / "rows.jsonl"
    line = _row().to_json()
    path.write_text(f"{line}\n{line}\n")        # assembled by hand: no sweep writes this
    with pytest.raises(ResultsFileError, match=re.escape("holds key 'x265-medium|carphone|10|crf28' 2 times")):
        done_keys(path)
    with pytest.raises(ResultsFileError, match="2 times"):
        append_row(path, _row(preset="crf35", key=row_key("x265-medium", "carphone", 10, "crf35")))
    assert path.read_text() == f"{line}\n{line}\n"


def test_provenance_has_the_installed_version_and_a_sha_or_unknown():
    info = provenance()
    assert set(info) == {"nerva_version", "git_sha"}
    assert info["nerva_version"] == importlib.metadata.version("nerva")
    sha = info["git_sha"]
    assert sha == "unknown" or (len(sha) == 40 and all(c in "0123456789abcdef" for c in sha))


def test_git_sha_is_unknown_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "_REPO", tmp_path)
    assert results._git_sha() == "unknown"


def test_git_commit_marks_a_checkout_whose_tracked_files_differ_from_head(tmp_path, monkeypatch):
    import subprocess
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    monkeypatch.setattr(results, "_REPO", tmp_path)
    (tmp_path / "new.py").write_text("untracked\n")   # untracked files do not make it dirty
    assert results.git_commit() == head and results._git_sha() == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert results.git_commit() == head + "+dirty"
    assert results._git_sha() == head   # rows' git_sha stays a bare hash


def test_new_row_computes_bpp_key_and_provenance():
    quality = Quality(psnr=30.0, psnr_y=31.0, ms_ssim=0.97, ms_ssim_scales=4)
    row = new_row(
        codec="x264-medium", preset="crf23", clip="carphone", shape=(10, 144, 176), num_bytes=6336,
        quality=quality, encode_s=0.5, decode_fps=900.0, config={"crf": 23}, ffmpeg_version="ffmpeg version x",
    )
    assert row.bpp == pytest.approx(8 * 6336 / (10 * 144 * 176))
    assert row.key == "x264-medium|carphone|10|crf23"
    assert (row.nerva_version, row.git_sha) == (provenance()["nerva_version"], provenance()["git_sha"])
    assert dataclasses.replace(row) == Row.from_json(row.to_json())
