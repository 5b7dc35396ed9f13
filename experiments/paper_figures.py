r"""The paper's Figures 1–5, redrawn on the bundled digits, as PNG files.

* ``fig1_2_boundaries.png`` (Fig. 1/2): the decision boundaries in the
  (s_n, s_p) plane — the line s_p − s_n = m of losses that optimise s_n − s_p
  against Circle's circle s_n² + (s_p − 1)² = 2m² — over the gradient fields:
  autodiff of the unified loss (Eq. 1, K = L = 1) and the closed-form Circle
  gradients of :func:`circle_jax.circle_loss_grads` (Eq. 9–10).
* ``fig3_robustness.png`` (Fig. 3): Recall@1 of the unseen digits against γ and
  against m for class-level Circle, AM-Softmax and ArcFace, mean ± std over
  three seeds, one ablation program per loss (:mod:`experiments.grid`, the
  seed an axis of the grid).
* ``fig3_robustness_omniglot.png``: the same on Omniglot (each loss in
  ``experiments/configs/omniglot.py``'s setup, R@1 of the unseen alphabets),
  three points an axis.
* ``fig4_similarity.png`` (Fig. 4): mean s_p and s_n over training, Circle vs
  AM-Softmax.
* ``fig5_convergence.png`` (Fig. 5): where (s_n, s_p) pairs cross their
  decision boundary during training, and where they sit at the end, for
  AM-Softmax (m = 0.35), Circle (m = 0.325, the tangent circle) and Circle
  (m = 0.25) — one ablation program of the three.

Fig. 4/5 use class-level labels: for a probe set of training images (100 per
class, inference mode), s_p is the cosine to the own class proxy and s_n the
cosines to the other proxies (Fig. 4 averages all of them; a Fig. 5 point
is (max_j s_n^j, s_p), the hardest negative, one per image).

The training setups are the configs ``experiments/configs/{circle_class,
am_softmax, arcface}.py`` (steps, model, optimiser, γ, m); only the grids and
the Fig. 5 margins come from here. The command is ``experiments/figures.py``:

  python -m experiments.figures --out docs/figures

``--tiny`` is a smoke run (3 steps, a tiny model, two grid points, two seeds);
``--only fig3`` draws some of the figures; ``--fig3_steps`` shortens the
Fig. 3 runs (36 settings × ``--fig3_seeds``). The numbers are also written to ``figures.json`` in ``--out``.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # noqa: E402

import circle_jax as cj  # noqa: E402
from circle_jax import training  # noqa: E402
from experiments import grid as grid_lib  # noqa: E402
from experiments.configs import ablate as ablate_config  # noqa: E402
from experiments.configs import am_softmax as am_config  # noqa: E402
from experiments.configs import arcface as arc_config  # noqa: E402
from experiments.configs import circle_class as circle_config  # noqa: E402

GAMMAS = (32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
MARGINS = (-0.2, -0.1, 0.0, 0.1, 0.2, 0.3)   # the paper: −0.2 … 0.3 in steps of 0.05
# Omniglot (a run costs about 15 digits runs): three points an axis, around the losses' own.
OMNIGLOT_GAMMAS = (32.0, 128.0, 512.0)
OMNIGLOT_MARGINS = (0.1, 0.25, 0.4)
FIG5_MARGINS = {"am_softmax": 0.35, "circle_tangent": 0.325, "circle": 0.25}
_LOSS_CONFIGS = {"circle_class": circle_config, "am_softmax": am_config, "arcface": arc_config}
_LABELS = {"circle_class": "Circle", "am_softmax": "AM-Softmax", "arcface": "ArcFace"}


# ---------------------------------------------------------------- geometry


def circle_decision(sn, sp, margin):
  r"""Eq. 7 with the paper's O_p = 1 + m, O_n = −m, Δ_p = 1 − m, Δ_n = m: ≤ 0 inside.

  .. math:: f = [s_n + m]_+ (s_n - m) - [1 + m - s_p]_+ (s_p - 1 + m)

  Where neither α is clipped, f = s_n² + (s_p − 1)² − 2m², the circle.

  Example:
    >>> float(circle_decision(0.0, 1.0, 0.25)) < 0, abs(float(circle_decision(0.0, 1 - 0.25 * 2 ** .5, 0.25))) < 1e-12
    (True, True)
  """
  sn, sp = np.asarray(sn, float), np.asarray(sp, float)
  return (np.maximum(sn + margin, 0) * (sn - margin)
          - np.maximum(1 + margin - sp, 0) * (sp - 1 + margin))


def am_decision(sn, sp, margin):
  """AM-Softmax's boundary s_p − s_n = m: ≤ 0 inside (s_p − s_n ≥ m)."""
  return margin - (np.asarray(sp, float) - np.asarray(sn, float))


def class_similarities(embeddings, class_weights, labels):
  """Cosines to the own proxy and to the others.

  Args:
    embeddings: [..., P, D]; class_weights: [..., C, D]; labels: [P] in [0, C).

  Returns:
    ``(sp [..., P], sn [..., P, C − 1])``.

  Example:
    >>> sp, sn = class_similarities(np.eye(2, 3), np.eye(3), np.array([0, 2]))
    >>> sp.tolist(), sn.shape
    ([1.0, 0.0], (2, 2))
  """
  x = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
  w = class_weights / np.linalg.norm(class_weights, axis=-1, keepdims=True)
  s = np.einsum("...pd,...cd->...pc", x, w)
  c = s.shape[-1]
  own = np.arange(c)[None, :] == labels[:, None]                        # [P, C]
  sp = np.take_along_axis(s, np.broadcast_to(labels[:, None], s.shape[:-1] + (1,)), -1)[..., 0]
  others = np.argsort(own, axis=-1, kind="stable")[:, :c - 1]           # [P, C − 1], ascending ids
  sn = np.take_along_axis(s, np.broadcast_to(others, s.shape[:-1] + (c - 1,)), -1)
  return sp, sn


# ------------------------------------------------------------------ Fig. 1/2


def fig_boundaries(path: str, *, gamma: float = 32.0, margin: float = 0.25) -> dict:
  """Boundaries and gradient fields in the (s_n, s_p) plane; returns what it drew."""
  grid = np.linspace(0.0, 1.0, 21)
  sn, sp = np.meshgrid(grid, grid)                                      # [21, 21]
  spj, snj = jnp.asarray(sp.reshape(-1, 1)), jnp.asarray(sn.reshape(-1, 1))
  # Eq. 1 with K = L = 1 optimises s_n − s_p: every pair is pushed along (−1, +1).
  uni = jax.vmap(jax.grad(lambda a, b: cj.unified_loss(a, b, margin=margin, gamma=gamma).sum(),
                          argnums=(0, 1)))
  g_sp_u, g_sn_u = (np.asarray(g).reshape(sn.shape) for g in uni(spj[:, None], snj[:, None]))
  g_sp_c, g_sn_c = (np.asarray(g).reshape(sn.shape)
                    for g in cj.circle_loss_grads(spj, snj, margin=margin, gamma=gamma))
  fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
  t = np.linspace(0, 2 * np.pi, 400)
  top = np.log10(max(np.hypot(g_sn_u, g_sp_u).max(), np.hypot(g_sn_c, g_sp_c).max()))
  panels = [("(a) s_n − s_p (Eq. 1, AM-Softmax's pair form)", g_sn_u, g_sp_u),
            ("(b) Circle loss (Eq. 9–10, closed form)", g_sn_c, g_sp_c)]
  for ax, (title, gn, gp) in zip(axes, panels):
    mag = np.hypot(gn, gp)
    im = ax.pcolormesh(sn, sp, np.log10(np.maximum(mag, 1e-6)), shading="auto", cmap="viridis",
                       vmin=-3, vmax=top)
    # Arrows point down the gradient (the direction gradient descent moves a pair), unit length.
    norm = np.maximum(mag, 1e-12)
    ax.quiver(sn[::2, ::2], sp[::2, ::2], (-gn / norm)[::2, ::2], (-gp / norm)[::2, ::2],
              color="white", scale=20, width=0.005)
    ax.plot(grid, grid + margin, "r-", lw=2, label=f"s_p − s_n = m")
    r = np.sqrt(2) * margin
    ax.plot(r * np.cos(t), 1 + r * np.sin(t), "orange", lw=2, label="s_n² + (s_p − 1)² = 2m²")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="s_n", ylabel="s_p", title=title, aspect="equal")
    fig.colorbar(im, ax=ax, label="log10 |∇L|")
  axes[0].legend(loc="lower right", fontsize=8)
  fig.suptitle(f"Decision boundaries and gradients, γ = {gamma:g}, m = {margin:g}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  # Two facts the picture shows, returned for the tests and docs/guides/ablations.md.
  unit = lambda gn, gp: np.stack([gn, gp], -1) / np.maximum(np.hypot(gn, gp), 1e-12)[..., None]
  return {"unified_direction_spread": float(np.ptp(unit(g_sn_u, g_sp_u)[..., 0])),
          "circle_direction_spread": float(np.ptp(unit(g_sn_c, g_sp_c)[..., 0]))}


# -------------------------------------------------------------------- Fig. 3


def _tiny(config):
  config.num_steps = 3
  config.log_every = 3
  config.model.features = (4,)
  config.model.embedding_dim = 8
  config.optimizer.warmup_steps = 0
  return config


def _ablation_config(loss: str, tiny: bool, gammas, margins, steps: int = 0, seeds=(0,),
                     data: str = "digits"):
  if data == "omniglot":
    from experiments import loss_comparison  # pylint: disable=g-import-not-at-top
    config = loss_comparison.protocol_config(loss, "omniglot")
    config.evals.retrieval.mhd = False  # the baselines are in the loss comparison
    del config.evals["one_shot"]
  else:
    config = _LOSS_CONFIGS[loss].get_config()
  if steps:
    config.num_steps = steps
  config.ablation = ablate_config.ablation_section()
  config.ablation.gammas, config.ablation.margins = tuple(gammas), tuple(margins)
  config.ablation.seeds = tuple(seeds)
  config.num_devices = 1
  return _tiny(config) if tiny else config


def fig_robustness(path: str, *, tiny: bool = False, steps: int = 0, seeds=(0, 1, 2),
                   say=print, data: str = "digits") -> dict:
  """R@1 against γ (at each loss's m) and against m (at its γ), mean ± std over ``seeds``;
  one ablation program per loss, its members every (γ, m) × seed.

  ``steps`` overrides the configs' ``num_steps`` (0: keep them). ``data``:
  ``"digits"`` (the loss configs: unseen digits 5–9) or ``"omniglot"`` (each
  loss in experiments/configs/omniglot.py's setup: the unseen alphabets, on
  :data:`OMNIGLOT_GAMMAS` × :data:`OMNIGLOT_MARGINS`).
  """
  grid_g, grid_m = (OMNIGLOT_GAMMAS, OMNIGLOT_MARGINS) if data == "omniglot" else (GAMMAS, MARGINS)
  gammas = (grid_g[0], grid_g[-1]) if tiny else grid_g
  margins = (grid_m[0], grid_m[-1]) if tiny else grid_m
  results = {}
  for loss in _LOSS_CONFIGS:
    config = _ablation_config(loss, tiny, gammas, margins, steps, seeds, data)
    members, member_seeds = grid_lib.grid_from_config(config)
    setup = grid_lib.make_setup(config, members, member_seeds)
    say(f"Fig. 3: {_LABELS[loss]}, {len(members)} members ({len(seeds)} seeds), "
        f"{config.num_steps} steps", flush=True)
    out = grid_lib.run_grid(setup, say=say, nonfinite="mark")
    base = {k: float(config.loss[k]) for k in ("gamma", "margin")}
    by_point: dict[tuple, list] = {}
    for m, r in zip(members, out["metrics"]):
      by_point.setdefault((m.hparams["gamma"], m.hparams["margin"]), []).append(r["recall@1"])
    # A setting that diverged for any seed is a diverged setting (NaN mean).
    rows = [{"gamma": g, "margin": mm, "recall@1": float(np.mean(v)),
             "recall@1_std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
             "recall@1_per_seed": v}
            for (g, mm), v in by_point.items()]
    results[loss] = {"base": base, "rows": rows, "seconds": out["seconds"],
                     "num_steps": config.num_steps, "seeds": list(seeds),
                     "gammas": list(gammas), "margins": list(margins)}
    say(f"  {len(members)} members in {out['seconds']:.1f} s", flush=True)
  what = ("the unseen alphabets (Omniglot, trained on background_small1, "
          f"{next(iter(results.values()))['num_steps']} steps)" if data == "omniglot"
          else "the unseen digits 5–9")
  plot_fig3(path, results, what)
  return results


def plot_fig3(path: str, results: dict, what: str) -> None:
  """Draws Fig. 3 from ``fig_robustness``'s results (a ``figures.json`` entry) to ``path``."""
  fig, (ax_g, ax_m) = plt.subplots(1, 2, figsize=(10, 4.2))
  gammas = sorted({r["gamma"] for res in results.values() for r in res["rows"]})
  seeds = len(next(iter(results.values())).get("seeds", [0]))
  for loss, res in results.items():
    base = res["base"]
    by_g = [(r["gamma"], r["recall@1"], r.get("recall@1_std", 0.0)) for r in res["rows"]
            if r["margin"] == base["margin"]]
    by_m = [(r["margin"], r["recall@1"], r.get("recall@1_std", 0.0)) for r in res["rows"]
            if r["gamma"] == base["gamma"]]
    for ax, pts, at in ((ax_g, by_g, f"m = {base['margin']:g}"),
                        (ax_m, by_m, f"γ = {base['gamma']:g}")):
      pts = sorted(pts)
      ax.errorbar([p[0] for p in pts], [100 * p[1] for p in pts], [100 * p[2] for p in pts],
                  fmt="o-", capsize=3, label=f"{_LABELS[loss]} ({at})")
  ax_g.set(xscale="log", xlabel="γ", ylabel="Recall@1 (%)", title="(a) against the scale γ")
  ax_g.minorticks_off()  # log-axis minor labels would collide with the grid's own γ
  ax_g.set_xticks(gammas, [f"{g:g}" for g in gammas])
  ax_m.set(xlabel="m", ylabel="Recall@1 (%)", title="(b) against the margin m")
  for ax in (ax_g, ax_m):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f"Recall@1 of {what},\nmean ± std over {seeds} seeds "
               "(a missing point: training diverged)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ------------------------------------------------------------------ Fig. 4/5


def fig_training(path4: str, path5: str, *, tiny: bool = False, say=print) -> dict:
  """One ablation program of AM-Softmax (m = 0.35), Circle (m = 0.325), Circle (m = 0.25).

  A probe after every step records s_p and s_n of 100 training images per class.
  """
  circle, am = circle_config.get_config(), am_config.get_config()
  config = _tiny(circle) if tiny else circle
  config.num_devices = 1
  config.ablation = ablate_config.ablation_section()
  members = [
      training.Member("am_softmax", {"gamma": float(am.loss.gamma),
                                     "margin": FIG5_MARGINS["am_softmax"]}),
      training.Member("circle_class", {"gamma": float(circle.loss.gamma),
                                       "margin": FIG5_MARGINS["circle_tangent"]}),
      training.Member("circle_class", {"gamma": float(circle.loss.gamma),
                                       "margin": FIG5_MARGINS["circle"]}),
  ]
  setup = grid_lib.make_setup(config, members)
  per_class = 20 if tiny else 100
  data = setup.base.dataset.data
  labels = data.train_labels
  idx = np.concatenate([np.flatnonzero(labels == c)[:per_class]
                        for c in range(data.num_train_classes)])
  probe_images, probe_labels = jnp.asarray(data.train_images[idx]), labels[idx]
  strategy = grid_lib.member_strategy(config)
  embed = jax.jit(lambda state: (training.ablation_embed_step(state, probe_images,
                                                              member_strategy=strategy),
                                 state.params["class_weights"]))
  snapshots = []   # per step: sp [N, P], sn [N, P, C − 1]

  def probe(step, state):
    emb, w = embed(state)
    snapshots.append(class_similarities(np.asarray(emb, np.float64), np.asarray(w, np.float64),
                                        probe_labels))

  def probe0():
    state = training.create_stacked_states(setup.base.model, setup.base.tx, setup.init_rngs,
                                           jnp.asarray(data.train_images[:1]))
    probe(0, state)

  probe0()
  say(f"Fig. 4/5: {len(members)} members, {config.num_steps} steps, probing "
      f"{len(idx)} training images after every step", flush=True)
  out = grid_lib.run_grid(setup, probe=probe, say=say)
  sp = np.stack([s[0] for s in snapshots], 1)                # [N, T + 1, P]
  sn = np.stack([s[1] for s in snapshots], 1)                # [N, T + 1, P, C − 1]
  sn_max = sn.max(-1)
  steps = np.arange(sp.shape[1])
  names = ["AM-Softmax, m = 0.35", "Circle, m = 0.325", "Circle, m = 0.25"]
  deciders = [lambda a, b: am_decision(a, b, FIG5_MARGINS["am_softmax"]),
              lambda a, b: circle_decision(a, b, FIG5_MARGINS["circle_tangent"]),
              lambda a, b: circle_decision(a, b, FIG5_MARGINS["circle"])]

  # Fig. 4: AM-Softmax vs Circle at the configs' own margin (members 0 and 2).
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, colour in ((0, "tab:blue"), (2, "tab:red")):
    ax.plot(steps, sp[i].mean(-1), "-", color=colour, label=f"s_p, {names[i]}")
    ax.plot(steps, sn[i].mean((-1, -2)), "--", color=colour, label=f"s_n, {names[i]}")
  ax.set(xlabel="training step", ylabel="mean cosine similarity",
         title="Mean s_p and s_n over training (probe: training images)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path4, dpi=110)
  plt.close(fig)

  # Fig. 5: where each image's pair crosses its own boundary, and where it ends.
  fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharex=True, sharey=True)
  grid = np.linspace(-1, 1, 400)
  t = np.linspace(0, 2 * np.pi, 400)
  summary = {}
  for i, ax in enumerate(axes):
    inside = deciders[i](sn_max[i], sp[i]) <= 0              # [T + 1, P]
    # The first step at which a pair is inside, having been outside at step 0.
    crossed = (~inside[0]) & inside.any(0)
    first = np.argmax(inside, axis=0)
    cx, cy = sn_max[i][first, np.arange(len(first))][crossed], sp[i][first, np.arange(len(first))][crossed]
    ax.scatter(cx, cy, s=6, c="tab:orange", alpha=0.6, label="crossing the boundary")
    ax.scatter(sn_max[i, -1], sp[i, -1], s=6, c="tab:blue", alpha=0.6, label="after training")
    m = list(FIG5_MARGINS.values())[i]
    if i == 0:
      ax.plot(grid, grid + m, "r-", lw=1.5, label="s_p − s_n = m")
    else:
      r = np.sqrt(2) * m
      ax.plot(r * np.cos(t), 1 + r * np.sin(t), "r-", lw=1.5, label="circle boundary")
      ax.plot(grid, grid + 0.35, "k:", lw=1, label="AM-Softmax m = 0.35")
    ax.set(xlim=(-0.6, 1.0), ylim=(0.0, 1.05), xlabel="s_n (hardest negative)", title=names[i],
           aspect="equal")
    ax.grid(alpha=0.3)
    final = np.stack([sn_max[i, -1], sp[i, -1]], -1)
    summary[names[i]] = {
        "crossed": int(crossed.sum()), "inside_at_end": int(inside[-1].sum()),
        "probe_size": int(len(first)),
        "crossing_spread_sn": float(np.std(cx)) if crossed.any() else None,
        "crossing_spread_sp": float(np.std(cy)) if crossed.any() else None,
        "final_mean": final.mean(0).tolist(), "final_std": final.std(0).tolist(),
        "final_mean_sp_all": float(sp[i, -1].mean()), "final_mean_sn_all": float(sn[i, -1].mean()),
    }
  axes[0].set_ylabel("s_p")
  axes[0].legend(fontsize=7, loc="lower left")
  axes[1].legend(fontsize=7, loc="lower left")
  fig.suptitle("(s_n, s_p) of training images: where they cross the decision boundary, "
               "and where they end")
  fig.tight_layout()
  fig.savefig(path5, dpi=110)
  plt.close(fig)
  return {"members": [grid_lib.member_label(m) for m in members], "steps": int(steps[-1]),
          "mean_sp": {names[i]: sp[i].mean(-1).tolist() for i in range(3)},
          "mean_sn": {names[i]: sn[i].mean((-1, -2)).tolist() for i in range(3)},
          "fig5": summary, "seconds": out["seconds"],
          "recall@1": {names[i]: out["metrics"][i]["recall@1"] for i in range(3)}}


# --------------------------------------------------------------------- main


FIGURES = ("fig1_2", "fig3", "fig3_omniglot", "fig4_5")


def make_figures(out: str, *, tiny: bool = False, only=FIGURES, fig3_steps: int = 0,
                 fig3_seeds: int = 3, say=print) -> dict:
  """Writes the PNGs and ``figures.json`` to ``out``; returns the JSON record."""
  unknown = sorted(set(only) - set(FIGURES))
  if unknown:
    raise ValueError(f"unknown figure(s) {unknown}; known: {list(FIGURES)}")
  os.makedirs(out, exist_ok=True)
  path = os.path.join(out, "figures.json")
  record = {"tiny": tiny, "platform": jax.devices()[0].platform}
  start = time.time()
  if "fig1_2" in only:
    record["fig1_2"] = fig_boundaries(os.path.join(out, "fig1_2_boundaries.png"))
  if "fig3" in only:
    record["fig3"] = fig_robustness(os.path.join(out, "fig3_robustness.png"), tiny=tiny,
                                    steps=fig3_steps, seeds=tuple(range(fig3_seeds)), say=say)
  if "fig3_omniglot" in only:
    record["fig3_omniglot"] = fig_robustness(
        os.path.join(out, "fig3_robustness_omniglot.png"), tiny=tiny, steps=fig3_steps,
        seeds=tuple(range(fig3_seeds)), say=say, data="omniglot")
  if "fig4_5" in only:
    record["fig4_5"] = fig_training(os.path.join(out, "fig4_similarity.png"),
                                    os.path.join(out, "fig5_convergence.png"), tiny=tiny, say=say)
  record["seconds"] = time.time() - start
  if os.path.exists(path):   # --only redraws some figures and keeps the others' numbers
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
    if old.get("tiny") == tiny:
      record = {**old, **record, "seconds": {**_as_dict(old.get("seconds")),
                                             "+".join(only): record["seconds"]}}
  with open(path, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  for key in ("fig3", "fig3_omniglot"):
    if key in only:
      say(format_fig3(record[key]))
  if "fig4_5" in only:
    say(format_fig45(record["fig4_5"]))
  say(f"Wrote the figures to {out} in {time.time() - start:.0f} s", flush=True)
  return record


def _as_dict(seconds) -> dict:
  return seconds if isinstance(seconds, dict) else {} if seconds is None else {"earlier": seconds}


def format_fig3(results: dict) -> str:
  """Markdown tables of R@1 (%) against γ and against m, one row per loss: mean ± std over
  the seeds, or the value alone for one seed (a record written before the seed axis has no
  ``seeds``: one seed)."""
  lines = []
  for key, label in (("gamma", "γ"), ("margin", "m")):
    values = next(iter(results.values()))[key + "s"]
    lines += [f"| R@1 (%) against {label} | " + " | ".join(f"{v:g}" for v in values) + " |",
              "|---|" + "---:|" * len(values)]
    other = "margin" if key == "gamma" else "gamma"
    for loss, res in results.items():
      at = {r[key]: (r["recall@1"], r.get("recall@1_std", 0.0)) for r in res["rows"]
            if r[other] == res["base"][other]}
      spread = len(res.get("seeds", [0])) > 1
      cells = [("—" if v not in at else "diverged" if np.isnan(at[v][0])
                else f"{100 * at[v][0]:.2f} ± {100 * at[v][1]:.2f}" if spread
                else f"{100 * at[v][0]:.2f}") for v in values]
      lines.append(f"| {_LABELS[loss]} ({other[0] if other == 'margin' else 'γ'} = "
                   f"{res['base'][other]:g}) | " + " | ".join(cells) + " |")
    lines.append("")
  return "\n".join(lines)


def format_fig45(res: dict) -> str:
  lines = ["| member | mean s_p start → end | mean s_n start → end | crossed | inside at end "
           "| final (s_n, s_p) mean ± std | R@1 (%) |", "|---|---|---|---:|---:|---|---:|"]
  for name, f5 in res["fig5"].items():
    sp, sn = res["mean_sp"][name], res["mean_sn"][name]
    mean, std = f5["final_mean"], f5["final_std"]
    lines.append(f"| {name} | {sp[0]:.3f} → {sp[-1]:.3f} | {sn[0]:.3f} → {sn[-1]:.3f} | "
                 f"{f5['crossed']}/{f5['probe_size']} | {f5['inside_at_end']}/{f5['probe_size']} | "
                 f"({mean[0]:.3f} ± {std[0]:.3f}, {mean[1]:.3f} ± {std[1]:.3f}) | "
                 f"{100 * res['recall@1'][name]:.2f} |")
  return "\n".join(lines)
