"""Sphinx configuration of the circle_jax docs (build command: docs/README.md).

The build is offline: the API pages come from the docstrings of the package in
this tree, the notebooks are rendered from their stored outputs, and nothing is
fetched (no intersphinx); the HTML loads MathJax from its CDN when it is viewed.
"""

import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Document the package of this tree, not another installed copy of it.
sys.path.insert(0, str(ROOT))

import circle_jax  # noqa: E402  (after the path above)

sys.path.insert(0, str(ROOT / "docs"))
import generated_tables  # noqa: E402  (the tables rendered from docs/results/)

project = "circle_jax"
author = "the circle_jax authors"
copyright = "the circle_jax authors"  # pylint: disable=redefined-builtin
release = version = circle_jax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",  # registers myst_parser too: Markdown pages and .ipynb
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# _generated/ holds fragments that the guides include, not pages of their own.
exclude_patterns = ["_build", "_generated", "README.md", "results/README.md",
                    "**.ipynb_checkpoints"]

# Every cross-reference must resolve, so a renamed function breaks the build
# rather than leaving dead text. Names from other libraries cannot resolve
# without intersphinx (which would fetch inventories), so only those are let go.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|numpy|np|jnp|flax|optax|orbax|grain|tensorflow|tf|"
               r"torch|ml_collections|chex|PIL|absl)(\..*)?"),
    # Builtins and typing names, which intersphinx would link to python.org.
    (r"py:.*", r"(typing|collections|os|pathlib|enum|dataclasses|concurrent|threading|io)\..*"),
    (r"py:class", r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|Optional|Union|"
                  r"NamedTuple|ArrayLike|Array|PRNGKeyArray|DTypeLike|Path|PathLike|"
                  r"ndarray|Self|TypeAlias|Literal|Generic|TypeVar)"),
]

# The docstrings' "Args:" state each argument's shape and dtype. The
# annotations would add little beyond them, and Sphinx spells jax.typing.ArrayLike
# out as its Union of eight types (an alias for it renders as a repr in
# `ArrayLike | None`), so signatures and descriptions leave them out.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# The docstrings' "Example:" sections are doctests (pytest --doctest-modules).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# Notebooks show the outputs stored in them (tests/notebooks executes them).
nb_execution_mode = "off"

html_theme = "furo"
html_title = f"circle_jax {release}"


def _drop_inherited_docstring(app, what, name, obj, options, lines):
  """A constant has no docstring of its own: drop the one of its type.

  Without this a dict constant is described by ``dict.__doc__``; the API pages
  describe the constants beside their ``autodata`` directives instead.
  """
  del app, name, options
  own = inspect.getdoc(type(obj)) or ""
  if what == "data" and own and " ".join(lines).split() == own.split():
    lines.clear()


def setup(app):
  # Before napoleon (priority 500), which would rewrite the inherited text.
  app.connect("autodoc-process-docstring", _drop_inherited_docstring, priority=400)
  # The tables are rendered from the scripts' JSON before any page is read.
  app.connect("builder-inited", generated_tables.on_builder_inited)
