"""The notebooks: committed without outputs, and they run end to end in small mode showing figures."""

from pathlib import Path

import nbclient
import nbformat
import pytest

import inr

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("rd_comparison.ipynb", "inside_a_nerva_file.ipynb")


def _execute(name: str, tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    """Runs a notebook in small mode in a fresh python3 kernel (cwd tmp_path); raises on any cell error."""
    monkeypatch.setenv("NERVA_NOTEBOOK_MODE", "small")   # sets os.environ, which the kernel inherits
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def _outputs(nb, output_type: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == output_type]


def _stdout(nb) -> str:
    return "".join(o.text for o in _outputs(nb, "stream") if o.name == "stdout")


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_are_valid_with_outputs_stripped_and_a_python3_kernel(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert 'MODE = os.environ.get("NERVA_NOTEBOOK_MODE", "full")' in code[0].source


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_small_mode_without_errors_and_shows_a_png_figure(name, tmp_path, monkeypatch):
    nb = _execute(name, tmp_path, monkeypatch)
    assert not _outputs(nb, "error")
    assert any("image/png" in o.data for o in _outputs(nb, "display_data"))
    if name == "rd_comparison.ipynb":
        text = _stdout(nb)
        assert "BD-rate vs x265-medium" in text and "BD-rate vs x264-medium" in text
        assert all(f"\n{model} | " in text for model in inr.names())   # a table row for every model
        # and the fixed-bit against rate-distortion table: a row for every model with nerva's rd pipeline
        assert "BD-rate rd vs fixed" in text
        rd_models = [m for m in inr.names() if "pipeline" in inr.get(m).fit_options]
        assert rd_models and all(f"\n{model} | 1 / 1 | " in text for model in rd_models)
