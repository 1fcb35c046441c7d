"""The READMEs' tables are the output of their commands over committed rows, and result files hold each key once."""

import collections
import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


table = _load("table")
first_rows = _load("first_rows")


@pytest.mark.parametrize("doc", ["README.md", "bench/README.md"])
def test_every_table_in_the_readme_equals_the_output_of_the_command_above_it(doc):
    text = (ROOT / doc).read_text()
    found = table.tables_in(text)
    assert found, f"{doc} has no tables"
    lines = text.split("\n")
    for start, end, name in found:
        assert name in table.TABLES, f"{doc}:{start + 1}: table without a `python bench/table.py NAME` line above it"
        assert lines[start:end] == table.TABLES[name]().split("\n"), \
            f"{doc}:{start + 1}: regenerate it with `python bench/table.py --write`"


def test_a_hand_edited_table_and_a_table_without_a_command_are_reported_and_regenerated():
    fresh = table.TABLES["quant"]()
    edited = fresh.replace("30.35", "31.35", 1)
    assert edited != fresh
    text = f"# t\n\nsee `python bench/table.py quant`\n\n{edited}\n\nno command here:\n\n| a | b |\n| --- | --- |\n"
    out, problems = table.regenerate(text)
    assert problems == ["line 5: table 'quant' differs from `python bench/table.py quant`",
                        "line 15: table without a `python bench/table.py NAME` line above it"]
    assert out == text.replace(edited, fresh)


def test_a_tables_extent_is_its_run_of_pipe_lines_and_its_command_the_last_line_above():
    text = "intro `python bench/table.py fit`\n\n`python bench/table.py zoo` then\n| x |\n| - |\nafter\n| y |"
    assert table.tables_in(text) == [(3, 5, "zoo"), (6, 7, None)]


def test_gain_over_a_line_in_log_bpp_is_the_psnr_above_the_interpolated_point():
    # the line through (0.1, 30) and (0.4, 34) gains 4 dB per factor 4 of rate: 32 dB at 0.2 bpp (half way)
    line = [{"bpp": 0.4, "psnr": 34.0}, {"bpp": 0.1, "psnr": 30.0}]
    assert table.gain_over_line({"bpp": 0.2, "psnr": 33.0}, line) == pytest.approx(1.0, abs=1e-12)
    # extrapolated past the upper point: 36 dB at 0.8 bpp (1.5 factors of 4)
    assert table.gain_over_line({"bpp": 0.8, "psnr": 35.0}, line) == pytest.approx(-1.0, abs=1e-12)
    assert math.isclose(table.gain_over_line({"bpp": 0.1, "psnr": 30.0}, line), 0.0, abs_tol=1e-12)


def test_first_rows_keeps_the_first_line_of_every_key_byte_for_byte_and_names_the_repeats():
    lines = [json.dumps({"key": k, "psnr": i}) for i, k in enumerate("abacb")]
    kept, dropped = first_rows.first_rows(lines)
    assert kept == [lines[0], lines[1], lines[3]]
    assert dropped == [(3, "a"), (5, "b")]


def test_first_rows_rewrites_a_file_to_its_first_rows(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps({"key": k}) for k in "aab"]
    path.write_text("".join(line + "\n" for line in lines))
    assert first_rows.main([str(path)]) == 0
    assert path.read_text() == f"{lines[0]}\n{lines[2]}\n"
    assert f"{path}:2: dropped, repeats a" in capsys.readouterr().out


def test_first_rows_drops_every_row_of_the_named_codecs(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    rows = [{"key": "nerv|1", "codec": "nerv"}, {"key": "nerv+rd|1", "codec": "nerv+rd"},
            {"key": "cam+rd|1", "codec": "cam+rd"}, {"key": "nerv+rd|2", "codec": "nerv+rd"}]
    lines = [json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines))
    assert first_rows.main([str(path), "--drop-codecs", "nerv+rd,x265"]) == 0
    assert path.read_text() == f"{lines[0]}\n{lines[2]}\n"
    out = capsys.readouterr().out
    assert f"{path}:2: dropped, codec of nerv+rd|1" in out and f"{path}:4: dropped, codec of nerv+rd|2" in out
    assert "kept 2 of 4 rows" in out


def test_first_rows_drops_the_rows_of_the_named_keys_only(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    rows = [{"key": "hnerv+rd|c|bpp=0.02,e", "codec": "hnerv+rd"}, {"key": "hnerv+rd|c|bpp=0.2,e", "codec": "hnerv+rd"},
            {"key": "nerv+rd|c|bpp=0.02,e", "codec": "nerv+rd"}]
    lines = [json.dumps(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines))
    assert first_rows.main([str(path), "--drop-key", "hnerv+rd|c|bpp=0.02,e", "--drop-key", "x|y"]) == 0
    assert path.read_text() == f"{lines[1]}\n{lines[2]}\n"
    out = capsys.readouterr().out
    assert f"{path}:1: dropped, key hnerv+rd|c|bpp=0.02,e" in out and "kept 2 of 3 rows" in out


def test_the_encode_time_table_shows_each_familys_newest_complete_pair(tmp_path, monkeypatch):
    def row(codec, pipeline, commit, encode_s):
        return {"clip": "c", "codec": codec, "pipeline": pipeline, "commit": commit, "target_bpp": 0.09,
                "params": 1000, "bpp": 0.09, "psnr": 25.0, "encode_s": encode_s, "compile_s": 1.0}
    rows = [row("a", "fixed", "1" * 40, 10.0), row("a", "rd", "1" * 40, 20.0),     # a's old pair: 2.00
            row("b", "fixed", "1" * 40, 10.0), row("b", "rd", "1" * 40, 11.0),     # b's only pair: 1.10
            row("a", "fixed", "2" * 40, 10.0), row("a", "rd", "2" * 40, 13.0),     # a's newest pair: 1.30
            row("a", "fixed", "3" * 40, 10.0)]                                     # a half-run: no pair
    (tmp_path / "rd_time_c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(table, "RESULTS", tmp_path)
    body = [line.split(" | ") for line in table.rd_time().splitlines()[2:]]
    assert [(cells[1], cells[-2], cells[-1].rstrip(" |")) for cells in body] == [("a", "1.30", "2222222"),
                                                                                  ("b", "1.10", "1111111")]


@pytest.mark.parametrize("path", sorted((ROOT / "bench" / "results").glob("*.jsonl")), ids=lambda p: p.name)
def test_a_committed_results_file_holds_each_run_key_once(path):
    keys = collections.Counter(json.loads(line).get("key") for line in path.read_text().splitlines())
    keys.pop(None, None)   # scripts other than `nerva rd` write rows without a run key
    assert [k for k, n in keys.items() if n > 1] == []
