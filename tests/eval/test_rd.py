"""`nerva rd`: a small sweep writes rows, plots and a BD table, and a re-run skips finished rows."""

import pytest

from eval import rd
from eval.cli import main
from eval.results import read_rows
from inr.config import Geometry
from inr.errors import ConfigError

SMALL = ["--frames", "0:6", "--resize", "64x48", "--points", "2", "--epochs", "1", "--quiet"]


@pytest.mark.slow
def test_sweep_writes_rows_plots_and_bd_table_and_resumes(tmp_path, capsys):
    out = tmp_path / "rd.jsonl"
    argv = ["rd", "carphone", "-o", str(out), "--codecs", "nerv,x265-medium", *SMALL]
    assert main(argv) == 0
    rows = read_rows(out)
    assert sorted({r.codec for r in rows}) == ["nerv", "x265-medium"]
    assert len(rows) == 4
    for r in rows:
        assert r.bpp == pytest.approx(8 * r.bytes / (6 * 48 * 64))
        assert r.frames == 6 and (r.height, r.width) == (48, 64)
    assert (tmp_path / "rd.png").stat().st_size > 0 and (tmp_path / "rd.svg").stat().st_size > 0
    text = capsys.readouterr().out
    assert "BD-rate vs x265-medium" in text
    before = out.read_text()
    plots = [(tmp_path / f"rd.{ext}").read_bytes() for ext in ("png", "svg")]
    assert main(argv) == 0          # every row is already there: nothing is run again
    assert out.read_text() == before
    assert [(tmp_path / f"rd.{ext}").read_bytes() for ext in ("png", "svg")] == plots   # same bytes


def test_bd_table_without_an_anchor_says_so():
    from codec.metrics import Quality
    from eval.results import new_row
    rows = [new_row(codec="nerv", preset=f"{b}", clip="c", shape=(1, 1, 8000), num_bytes=round(b * 1000),
                    quality=Quality(30 + b, 30 + b, 0.9, 1), encode_s=0.0, decode_fps=0.0, config={})
            for b in (0.1, 0.2)]
    assert rd.format_bd_table(rd.bd_table(rows)).startswith("no BD-rate table")


def test_codec_groups_expand_and_unknown_codecs_are_refused():
    assert rd.expand_codecs("nerv,x265") == ["nerv", "x265-medium", "x265-veryslow"]
    with pytest.raises(ConfigError, match="unknown codec 'x266'"):
        rd.expand_codecs("x266")


def test_models_with_config_overrides_are_codecs():
    assert rd.expand_codecs("nerv,hnerv:cam_nodes=30,av1") == ["nerv", "hnerv:cam_nodes=30", "av1"]
    with pytest.raises(ConfigError, match="bad model option"):
        rd.expand_codecs("hnerv:cam=30")


def test_explicit_sizes_give_every_model_the_same_budgets():
    g = Geometry.of(120, 144, 176, 30)
    points = rd.plan(["nerv", "nervpp:cam_nodes=30", "x265-medium"], g, 3, bits=6, sizes=(60_000, 120_000))
    inr = [(p.codec, p.n_params) for p in points if p.n_params]
    assert inr == [("nerv", 60_000), ("nerv", 120_000), ("nervpp:cam_nodes=30", 60_000),
                   ("nervpp:cam_nodes=30", 120_000)]
    assert len([p for p in points if p.codec == "x265-medium"]) == 3


def test_inr_points_cover_the_bpp_range_in_increasing_size():
    g = Geometry.of(120, 144, 176, 30)
    sizes = [p.n_params for p in rd.inr_points("nerv", g, 4)]
    assert len(sizes) == 4 and sizes == sorted(sizes)
    assert sizes[-1] == int(rd.BPP_RANGE[1] * g.pixels / 7.5)   # 7.5 file bits per parameter at 8 bits
    assert sizes[-1] > 10 * sizes[0]
    narrow = [p.n_params for p in rd.inr_points("nerv", g, 4, bpp_range=(0.02, 0.2))]
    assert narrow[0] == sizes[0] and narrow[-1] == int(0.2 * g.pixels / 7.5)


def test_inr_points_on_a_tiny_clip_start_at_the_smallest_model():
    sizes = [p.n_params for p in rd.inr_points("hnerv", Geometry.of(6, 48, 64, 30), 3)]
    assert len(sizes) == 3 and sizes == sorted(sizes) and sizes[-1] >= 4 * sizes[0] * 0.99


def test_bd_table_is_zero_for_the_anchor_against_itself():
    from codec.metrics import Quality
    from eval.results import new_row

    def row(codec, bpp, q):   # a 1×1×8000-pixel "clip", so bpp = bytes / 1000
        return new_row(codec=codec, preset=f"{bpp}", clip="c", shape=(1, 1, 8000), num_bytes=round(bpp * 1000),
                       quality=Quality(q, q, 0.9, 1), encode_s=0.0, decode_fps=0.0, config={})
    rows = [row("x265-medium", b, q) for b, q in [(0.1, 30), (0.2, 33), (0.4, 36), (0.8, 39)]]
    rows += [row("nerv", 2 * b, q) for b, q in [(0.1, 30), (0.2, 33), (0.4, 36), (0.8, 39)]]
    table = {e["codec"]: e for e in rd.bd_table(rows, anchors=("x265-medium",))}
    assert table["x265-medium"]["vs x265-medium"] == pytest.approx(0.0, abs=1e-9)
    assert table["nerv"]["vs x265-medium"] == pytest.approx(100.0, abs=1e-6)


def test_bd_table_says_why_a_cell_is_missing():
    from codec.metrics import Quality
    from eval.results import new_row

    def row(codec, bpp, q):
        return new_row(codec=codec, preset=f"{bpp}", clip="c", shape=(1, 1, 8000), num_bytes=round(bpp * 1000),
                       quality=Quality(q, q, 0.9, 1), encode_s=0.0, decode_fps=0.0, config={})
    rows = [row("x265-medium", b, q) for b, q in [(0.1, 30), (0.2, 33), (0.4, 36)]]
    rows += [row("nerv", 0.3, 31)]                                           # one point
    rows += [row("hnerv", b, q) for b, q in [(0.1, 10), (0.2, 12)]]          # below the anchor's range
    rows += [row("cam", b, q) for b, q in [(0.1, 32), (0.2, 31)]]            # quality falls with rate
    lines = {line.split(" | ")[0]: line for line in rd.format_bd_table(rd.bd_table(rows)).splitlines()}
    assert lines["nerv"].endswith("| n/a (too few points)")
    assert lines["hnerv"].endswith("| n/a (no overlap)")
    assert lines["cam"].endswith("| n/a (not monotonic)")


def test_nerva_rd_refuses_to_append_a_key_another_sweep_wrote_meanwhile(tmp_path, monkeypatch, capsys):
    """A second sweep into the same file finishes the point first: this one exits with one line, no row."""
    from eval import baselines
    from eval.results import append_row, read_rows

    out = tmp_path / "rd.jsonl"
    real = baselines.run_point

    def run_point(frames, fps, clip, codec, crf, workdir):
        row = real(frames, fps, clip, codec, crf, workdir)
        append_row(out, row)          # the other sweep's row lands while this one measures
        return row
    monkeypatch.setattr(baselines, "run_point", run_point)
    argv = ["rd", "carphone", "-o", str(out), "--codecs", "x264-medium", "--frames", "0:4", "--resize", "32x32",
            "--points", "1", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a row with key 'x264-medium|carphone@32x32|4|" in err
    assert len(read_rows(out)) == 1


def test_nerva_rd_refuses_a_results_file_holding_a_key_twice(tmp_path, capsys):
    from codec.metrics import Quality
    from eval.results import new_row
    row = new_row(codec="x264-medium", preset="crf23", clip="c", shape=(1, 1, 8000), num_bytes=100,
                  quality=Quality(30, 30, 0.9, 1), encode_s=0.0, decode_fps=0.0, config={})
    out = tmp_path / "rd.jsonl"
    out.write_text(2 * (row.to_json() + "\n"))
    before = out.read_bytes()
    argv = ["rd", "carphone", "-o", str(out), "--codecs", "x264-medium", "--frames", "0:4", "--resize", "32x32",
            "--points", "1", "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds key 'x264-medium|c|1|crf23' 2 times" in err
    assert out.read_bytes() == before
