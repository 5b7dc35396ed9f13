r"""Draws the paper's Figures 1–5 on the bundled digits (``experiments/paper_figures.py``).

Command, from the repository root:

  python -m experiments.figures --out docs/figures

``--tiny`` is a smoke run (3 steps, a tiny model, two grid points, two seeds);
``--only fig3`` draws some of the figures; ``--fig3_steps`` shortens the Fig. 3
runs and ``--fig3_seeds`` sets how many seeds each Fig. 3 setting averages.
The numbers are also written to ``figures.json`` in ``--out``.
"""

from absl import app
from absl import flags

from experiments import absl_logging
from experiments import cli
from experiments import paper_figures

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs/figures", "Folder for the PNG files and figures.json.")
flags.DEFINE_bool("tiny", False, "Smoke run: 3 steps, a tiny model, two grid points per axis.")
flags.DEFINE_list("only", list(paper_figures.FIGURES), "Which figures to draw.")
flags.DEFINE_integer("fig3_steps", 0, "Training steps of every Fig. 3 member (0: the configs').")
flags.DEFINE_integer("fig3_seeds", 3, "Seeds of every Fig. 3 setting (0, 1, …): mean ± std; "
                     "--tiny uses 2.")


def main(argv):
  absl_logging.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    paper_figures.make_figures(FLAGS.out, tiny=FLAGS.tiny, only=tuple(FLAGS.only),
                               fig3_steps=FLAGS.fig3_steps,
                               fig3_seeds=2 if FLAGS.tiny else FLAGS.fig3_seeds)
  except ValueError as e:
    raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
