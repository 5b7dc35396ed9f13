"""The dependency lists agree: requirements.txt is the core and the ``train`` extra of
pyproject.toml, and tests/requirements.txt holds every extra."""

import pathlib
import re

import pytest

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _requirements(path: pathlib.Path) -> set[str]:
  """The requirement lines of a pip requirements file, without comments or options."""
  lines = (re.sub(r"\s+#.*", "", line).strip() for line in path.read_text().splitlines())
  return {line for line in lines if line and not line.startswith(("#", "-"))}


def _project():
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_requirements_txt_is_the_core_and_the_train_extra():
  project = _project()
  want = set(project["dependencies"]) | set(project["optional-dependencies"]["train"])
  assert _requirements(ROOT / "requirements.txt") == want


def test_the_test_requirements_hold_every_extra():
  extras = _project()["optional-dependencies"]
  assert set(extras) == {"train", "tfds", "tfds-build", "figures"}
  tests = _requirements(ROOT / "tests" / "requirements.txt")
  assert "-r ../requirements.txt" in (ROOT / "tests" / "requirements.txt").read_text()
  missing = {name: sorted(set(reqs) - tests) for name, reqs in extras.items() if name != "train"}
  assert missing == {"tfds": [], "tfds-build": [], "figures": []}


def test_the_default_job_needs_neither_tensorflow_nor_torch():
  # The README's main command installs requirements.txt only.
  names = {re.split(r"[<>=!~; ]", r)[0].lower() for r in _requirements(ROOT / "requirements.txt")}
  assert not names & {"tensorflow", "tensorflow-cpu", "tensorflow-datasets", "torch", "keras",
                      "mlxtend", "matplotlib", "pandas", "scikit-learn"}
