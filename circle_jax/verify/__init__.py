"""Is *my* loss right? Cross-framework verification against circle_jax.

:func:`verify` runs another implementation (torch, TensorFlow, JAX or numpy)
on a fixed set of problems, compares values and gradients with circle_jax under
every documented variant (α detached or differentiated, normalisation inside
or not, softplus cut-off, reduction, ...), and names the variant that matches —
or the closest one and what is wrong. ``python -m circle_jax.verify
impl.py:fn --loss pairwise_circle --framework torch`` prints the same report.

Losses (:func:`losses` lists them): Circle loss pair-wise and class-level;
softmax, NormFace, CosFace, ArcFace, SphereFace (class-level); batch-hard and
batch-all triplet, contrastive, N-pair, lifted structure, multi-similarity.

:func:`golden_cases` reads the shipped golden vectors (every loss under every
sound variant, values and gradients) with numpy alone; see
:mod:`circle_jax.verify.golden` for using them without circle_jax.

Importing this module imports no framework; the one given to :func:`verify`
is imported when it runs.
"""

from circle_jax.verify import _circle_specs  # noqa: F401  (registers the Circle losses)
from circle_jax.verify import _pair_specs  # noqa: F401  (registers the pair-based baselines)
from circle_jax.verify import _proxy_specs  # noqa: F401  (registers the class-level baselines)
from circle_jax.verify._frameworks import FRAMEWORKS
from circle_jax.verify._problems import Problem
from circle_jax.verify._problems import load_problem
from circle_jax.verify._problems import make_problem
from circle_jax.verify._problems import save_problem
from circle_jax.verify._report import TOLERANCE
from circle_jax.verify._report import Diagnosis
from circle_jax.verify._report import ProblemResult
from circle_jax.verify._report import Report
from circle_jax.verify._spec import LossSpec
from circle_jax.verify._spec import get as spec
from circle_jax.verify._spec import names as losses
from circle_jax.verify._variants import REDUCTION
from circle_jax.verify._variants import Axis
from circle_jax.verify._variants import Switches
from circle_jax.verify._variants import Variant
from circle_jax.verify._verify import verify
from circle_jax.verify.golden import GoldenCase
from circle_jax.verify.golden import golden_cases

__all__ = (
    "Axis",
    "Diagnosis",
    "FRAMEWORKS",
    "GoldenCase",
    "LossSpec",
    "Problem",
    "ProblemResult",
    "REDUCTION",
    "Report",
    "Switches",
    "TOLERANCE",
    "Variant",
    "golden_cases",
    "load_problem",
    "losses",
    "make_problem",
    "save_problem",
    "spec",
    "verify",
)
