"""Every notebook in notebooks/ runs top to bottom (a smoke setting: seconds, not minutes)."""

import glob
import os
import sys

import pytest

# Executes every notebook in a kernel: the slow tier.
pytestmark = pytest.mark.slow

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_the_notebooks_exist():
  assert [os.path.basename(p) for p in NOTEBOOKS] == [
      "01_circle_loss_and_gradients.ipynb", "02_train_and_visualise.ipynb",
      "03_sharded_and_chunked.ipynb"]


def test_the_kernel_is_this_interpreter():
  # "python3" must start this environment's Python (where circle_jax and its
  # requirements are installed), not some other Jupyter installation's.
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.prefix)")])
  nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
  assert nb.cells[0].outputs[0].text.strip() == sys.prefix


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, monkeypatch):
  monkeypatch.setenv("CIRCLE_JAX_NOTEBOOK_SMOKE", "1")
  # The kernel imports circle_jax and experiments from this checkout.
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  nb = nbformat.read(path, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": ROOT}})
  client.execute()   # raises CellExecutionError, with the cell and traceback, on any error
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any(o.output_type == "stream" for o in outputs)
