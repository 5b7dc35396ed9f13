"""The two test tiers: every test module runs in the fast tier or carries the ``slow`` marker.

The fast tier (``pytest -m "not slow"``, the README's test command) must stay
within minutes; what is slow by nature carries ``@pytest.mark.slow`` and runs
in the second tier (``pytest -m slow``). ``tests/conftest.py`` records every
collected test before ``-m`` deselects any, so either tier's run can check both.
"""

import collections
import pathlib

import pytest

from tests import conftest

TESTS = pathlib.Path(__file__).resolve().parent


def _collected_whole_suite(config) -> bool:
  # Only a run over the whole tests/ tree (either tier's command) has every
  # module in its collection; a run of a few files has nothing to check here.
  root = config.invocation_params.dir
  return any((root / arg.split("::")[0]).resolve() == TESTS for arg in config.args)


def test_every_test_module_runs_in_the_fast_tier_or_is_marked_slow(request):
  if not _collected_whole_suite(request.config):
    pytest.skip("checks the tiers only when the whole of tests/ is collected")
  modules = collections.defaultdict(list)
  for _, path, slow, module_slow in request.config.stash[conftest.COLLECTED]:
    modules[pathlib.Path(path)].append((slow, module_slow))
  files = sorted(p for p in TESTS.rglob("test_*.py"))
  assert files and TESTS / "test_tiers.py" in files
  # A module that collects no test runs in neither tier.
  assert [str(p.relative_to(TESTS)) for p in files if p not in modules] == []
  # A module all of whose tests are slow says so once, at the top
  # (pytestmark = pytest.mark.slow), so that its tier shows where it is defined.
  unmarked = [str(p.relative_to(TESTS)) for p in files
              if all(slow for slow, _ in modules[p]) and not any(m for _, m in modules[p])]
  assert unmarked == []


def test_the_slow_marker_is_registered(request):
  # --strict-markers (pyproject.toml) turns a misspelt marker into an error
  # instead of a test that silently lands in the fast tier.
  assert "--strict-markers" in request.config.getini("addopts")
  assert any(line.startswith("slow:") for line in request.config.getini("markers"))
