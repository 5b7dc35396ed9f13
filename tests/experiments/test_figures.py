"""experiments/paper_figures.py (the functions of experiments.figures): the geometry it draws,
and every figure in a tiny setting."""

import json

import matplotlib.image
import numpy as np
import pytest

from experiments import paper_figures as figures

# Draws every figure from tiny training runs: the slow tier.
pytestmark = pytest.mark.slow


def test_circle_boundary_is_the_circle_and_the_tangent_margin():
  m = 0.25
  t = np.linspace(0.55 * np.pi, 1.95 * np.pi, 50)   # the arc inside s_n > −m, s_p < 1 + m
  sn, sp = np.sqrt(2) * m * np.cos(t), 1 + np.sqrt(2) * m * np.sin(t)
  keep = (sn > -m) & (sp < 1 + m)
  np.testing.assert_allclose(figures.circle_decision(sn[keep], sp[keep], m), 0, atol=1e-12)
  assert figures.circle_decision(0.0, 1.0, m) < 0 < figures.circle_decision(0.5, 0.5, m)
  # Fig. 5's m = 0.325 circle just touches AM-Softmax's line s_p = s_n + 0.35.
  line = np.linspace(-0.5, 0.6, 20001)
  closest = figures.circle_decision(line, line + 0.35, 0.325).min()
  assert abs(closest) < 1e-6
  assert figures.circle_decision(line, line + 0.35, 0.30).min() > 1e-3   # smaller: no contact
  assert figures.am_decision(0.1, 0.5, 0.35) < 0 < figures.am_decision(0.2, 0.5, 0.35)


def test_class_similarities_against_a_loop(rng):
  x, w = rng.normal(size=(2, 6, 4)), rng.normal(size=(2, 5, 4))
  y = np.array([0, 4, 2, 2, 1, 3])
  sp, sn = figures.class_similarities(x, w, y)
  cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
  for n in range(2):
    for p in range(6):
      assert sp[n, p] == pytest.approx(cos(x[n, p], w[n, y[p]]))
      np.testing.assert_allclose(sn[n, p], [cos(x[n, p], w[n, c]) for c in range(5) if c != y[p]])


def test_all_figures_in_a_tiny_setting(tmp_path, capsys):
  record = figures.make_figures(str(tmp_path), tiny=True, fig3_seeds=1)
  for name in ("fig1_2_boundaries", "fig3_robustness", "fig4_similarity", "fig5_convergence"):
    image = matplotlib.image.imread(tmp_path / f"{name}.png")
    assert image.shape[0] > 300 and image.shape[1] > 500 and image[..., :3].std() > 0.05, name
  assert json.loads((tmp_path / "figures.json").read_text())["tiny"] is True
  # Fig. 1/2: the s_n − s_p loss pushes every pair in one direction; Circle does not.
  assert record["fig1_2"]["unified_direction_spread"] < 1e-6
  assert record["fig1_2"]["circle_direction_spread"] > 0.5
  fig3 = record["fig3"]
  assert set(fig3) == {"circle_class", "am_softmax", "arcface"}
  for res in fig3.values():
    assert len(res["rows"]) == 4 and all(0 <= r["recall@1"] <= 1 for r in res["rows"])
    # One seed here (the grid's seed axis and its mean ± std: tests/experiments/test_ablate.py).
    assert res["seeds"] == [0]
    for r in res["rows"]:
      assert r["recall@1_per_seed"] == [r["recall@1"]] and r["recall@1_std"] == 0.0
  f45 = record["fig4_5"]
  assert len(f45["mean_sp"]) == 3 and all(len(v) == 4 for v in f45["mean_sp"].values())  # steps 0…3
  out = capsys.readouterr().out
  assert "R@1 (%) against γ" in out and "crossed" in out
