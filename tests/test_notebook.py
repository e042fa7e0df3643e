"""docs/seeing-backprop.ipynb runs headless, and its cells display what a learner should see."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbclient: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel: pip install -e '.[test]'")
pytest.importorskip("matplotlib", reason="the drawings need matplotlib: pip install 'xbackprop[plot]'")
pytest.importorskip("sklearn", reason="the notebook trains on scikit-learn's digits: pip install scikit-learn")

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "seeing-backprop.ipynb"


def test_the_notebook_runs_and_shows_a_net_a_graph_and_curves():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [cell.outputs[-1]["data"] for cell in notebook.cells if cell.cell_type == "code"]
    assert outputs[0]["text/plain"].startswith("TwoLayerNet: 39,760 parameters, numpy, float32, device cpu")
    assert "image/svg+xml" in outputs[1] and "backward values" in outputs[1]["image/svg+xml"]
    assert "image/png" in outputs[2]
