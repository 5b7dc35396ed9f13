"""The docstring examples of the experiments modules that define no flags (the entry points
define absl flags at import, so pytest's --doctest-modules stays on circle_jax/)."""

import doctest
import importlib

import pytest

MODULES = ["builder", "evaluators", "grid", "train", "input_pipeline", "paper_figures",
           "loss_comparison"]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
  module = importlib.import_module(f"experiments.{name}")
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0
  if name in ("builder", "evaluators", "grid", "loss_comparison"):
    assert result.attempted > 0
