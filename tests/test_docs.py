"""The docs site builds offline with warnings as errors, and documents the whole public API.

A broken cross-reference, a docstring that does not render or a public name
that autodoc skips (no docstring) fails here rather than on the published site.
"""

import importlib
import pathlib
import subprocess
import sys

import pytest

# Builds the docs site: the slow tier.
pytestmark = pytest.mark.slow

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")
pytest.importorskip("furo")

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The subpackages with an API page (docs/api/<name>.rst).
API = ("data", "losses", "metrics", "models", "parallel", "training", "verify")


@pytest.fixture(scope="module")
def html(tmp_path_factory):
  out = tmp_path_factory.mktemp("docs_html")
  # The command of docs/README.md; a fresh output folder, so every page is built.
  proc = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
       str(DOCS), str(out)],
      capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert proc.returncode == 0 and "WARNING" not in proc.stderr, proc.stderr[-6000:]
  return out


def test_every_subpackage_has_an_api_page():
  packages = {p.parent.name for p in (ROOT / "circle_jax").glob("*/__init__.py")}
  assert packages == set(API)
  pages = {p.stem for p in (DOCS / "api").glob("*.rst")}
  assert pages == set(API)


@pytest.mark.parametrize("name", API)
def test_api_page_documents_every_public_name(html, name):
  module = importlib.import_module(f"circle_jax.{name}")
  page = (html / "api" / f"{name}.html").read_text(encoding="utf-8")
  missing = [n for n in module.__all__ if f'id="circle_jax.{name}.{n}"' not in page]
  assert not missing, f"circle_jax.{name}: not on the page (no docstring?): {missing}"


def test_notebooks_are_rendered_with_their_stored_outputs(html):
  for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
    page = (html / "notebooks" / f"{notebook.stem}.html").read_text(encoding="utf-8")
    assert "cell_output" in page, notebook.name


def test_math_is_rendered_by_mathjax(html):
  page = (html / "api" / "losses.html").read_text(encoding="utf-8")
  assert "mathjax" in page and r"\alpha_p" in page
