"""notebooks/benchmark.ipynb runs top to bottom in quick mode (what CI executes)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "benchmark.ipynb"


def test_notebook_runs_in_quick_mode(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    # Force quick mode whatever the committed parameter cell says.
    nb.cells.insert(params[0] + 1, nbformat.v4.new_code_cell('QUICK = True\nDEVICE = "cpu"'))
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 4  # Gantt, speedups, predicted vs measured, search history
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "ort-threads" in text and "trials; chosen plan predicted" in text
