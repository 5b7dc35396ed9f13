"""The pages' code runs, and their tables are the scripts' renderings of the committed records.

Every ```` ```python ```` block of the README and of the docs pages runs, a page's blocks in
order in one namespace (as a reader would paste them); every ``python -m`` command of a
```` ```bash ```` block names a module that exists, and every config file (with its
``:variant``) and example file it names exists and loads. The guides' tables come from
``docs/generated_tables.py``: each record there renders, each is used, each rendered table is
included by a page, and the README's benchmark targets are the record's.
"""

import contextlib
import importlib.util
import io
import json
import pathlib
import re
import shlex
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
import generated_tables  # noqa: E402  (docs/ on the path above)

PAGES = [ROOT / "README.md"] + sorted(
    p for p in DOCS.rglob("*.md") if not {"_build", "_generated"} & set(p.relative_to(DOCS).parts))
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def _blocks(page: pathlib.Path, language: str) -> list[str]:
  return [body for lang, body in FENCE.findall(page.read_text(encoding="utf-8"))
          if lang == language]


def _name(page: pathlib.Path) -> str:
  return str(page.relative_to(ROOT))


def test_the_pages_are_found():
  names = {_name(p) for p in PAGES}
  assert {"README.md", "docs/index.md", "docs/guides/scale.md"} <= names
  assert not any("_generated" in n for n in names)
  assert set(RUN_ELSEWHERE) <= names


# Pages whose code another test runs as it stands on the page.
RUN_ELSEWHERE = {
    # With a numpy loss as "yours", in an interpreter without JAX.
    "docs/golden_vectors.md": "tests/verify/test_golden.py::"
                              "test_documented_recipe_runs_with_numpy_alone",
}


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "python")
                                  and _name(p) not in RUN_ELSEWHERE], ids=_name)
def test_python_blocks_run(page):
  namespace = {"__name__": "__docs__"}
  for i, block in enumerate(_blocks(page, "python")):
    code = compile(block, f"{_name(page)} (python block {i + 1})", "exec")
    with contextlib.redirect_stdout(io.StringIO()):
      exec(code, namespace)  # pylint: disable=exec-used


def _commands(page: pathlib.Path) -> list[list[str]]:
  """The words of each command line (continuations joined) of the page's bash blocks."""
  out = []
  for block in _blocks(page, "bash"):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("   #")[0].strip()
      if "python" in line and " -m " in line:
        # Shell syntax around the command (loops, `&`, `$i`) is not this test's business.
        words = shlex.split(line.replace("&&", " ; ").replace("&", " "), posix=True)
        out.append(words)
  return out


COMMAND_PAGES = [p for p in PAGES if _commands(p)]


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=_name)
def test_bash_commands_name_modules_and_files_that_exist(page):
  import ml_collections  # pylint: disable=g-import-not-at-top
  for words in _commands(page):
    for i, word in enumerate(words[:-1]):
      # python's -m names a module; pytest's -m ("not slow") a marker expression.
      if word == "-m" and i and words[i - 1].split("/")[-1].startswith("python"):
        module = words[i + 1]
        assert importlib.util.find_spec(module) is not None, f"{_name(page)}: no module {module}"
    for word in words:
      value = word.split("=", 1)[1] if word.startswith("--config=") else word
      path, _, variant = value.partition(":")
      if not path.endswith(".py") or not ("/" in path):
        continue
      assert (ROOT / path).is_file(), f"{_name(page)}: {path} does not exist"
      if path.startswith("experiments/configs/"):
        spec = importlib.util.spec_from_file_location("_docs_config", ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config(variant) if variant else module.get_config()
        assert isinstance(config, ml_collections.ConfigDict), f"{_name(page)}: {value}"


def test_every_page_with_commands_is_checked():
  assert {"README.md", "docs/guides/training.md", "docs/guides/scale.md"} <= {
      _name(p) for p in COMMAND_PAGES}


# ------------------------------------------------------------ generated tables


@pytest.mark.parametrize("table", generated_tables.TABLES, ids=lambda t: t.name)
def test_each_table_renders_from_its_record(table):
  text = generated_tables.render(table)
  assert text.count("\n|") >= 2 or text.startswith("- "), text[:500]
  assert f"docs/{table.source}" in text


def test_every_record_is_rendered_and_every_table_included():
  records = {str(p.relative_to(DOCS)) for p in (DOCS / "results").glob("*.json")}
  assert records <= {t.source for t in generated_tables.TABLES}
  pages = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
  for table in generated_tables.TABLES:
    assert f"_generated/{table.name}.md" in pages, f"no page includes the table {table.name}"


def test_generate_writes_every_table(tmp_path):
  paths = generated_tables.generate(tmp_path)
  assert sorted(p.name for p in paths) == sorted(f"{t.name}.md" for t in generated_tables.TABLES)
  assert all(p.read_text(encoding="utf-8").strip() for p in paths)


def test_missing_record_is_named(tmp_path, monkeypatch):
  monkeypatch.setattr(generated_tables, "DOCS", tmp_path)
  with pytest.raises(RuntimeError, match=r"docs/results/conformance.json .*experiments.conformance"):
    generated_tables.render(generated_tables.TABLES[0])


def test_readme_targets_are_the_benchmark_record():
  from experiments import benchmark_lib  # pylint: disable=g-import-not-at-top
  with open(DOCS / "results" / "benchmark.json", encoding="utf-8") as f:
    targets = "\n".join(f"- {line}" for line in benchmark_lib.targets(json.load(f)))
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  assert targets in readme, "README's benchmark targets differ from docs/results/benchmark.json"


def test_readme_omniglot_table_is_the_comparison_record():
  from experiments import loss_comparison  # pylint: disable=g-import-not-at-top
  with open(DOCS / "results" / "compare_losses_omniglot.json", encoding="utf-8") as f:
    record = json.load(f)
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  rows = {}
  for line in readme.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if line.startswith("| ") and len(cells) == 3 and cells[1] not in ("R@1", "---:"):
      rows[cells[0]] = (cells[1], cells[2])
  cell = lambda v: f"{100 * v[0]:.2f} ± {100 * v[1]:.2f}"
  for label, stats in record["rows"].items():
    assert rows[label] == (cell(stats["recall@1"]), cell(stats["one_shot_error"])), label
  for key, name in (("raw_pixels", "raw pixels"), ("mhd", "MHD of the ink (Omniglot's baseline)")):
    values = record["baselines"][key]
    assert rows[name] == (f"{100 * values['recall@1']:.2f}", f"{100 * values['one_shot_error']:.2f}")
  assert set(record["rows"]) == set(loss_comparison.NAMES.values())  # the seven losses
