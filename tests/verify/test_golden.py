"""The shipped golden vectors: current, readable with numpy alone, and right.

Right means: the default variants are the public circle_jax functions, and the
variants that pytorch-metric-learning and Keras 3 compute are what those
libraries return on the same inputs.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import circle_jax as cj
from circle_jax.verify import _golden
from circle_jax.verify import _spec
from circle_jax.verify import golden
from circle_jax.verify import golden_cases

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PML = "pytorch-metric-learning CircleLoss (DoNothingReducer)"
PML_CLASS = "pytorch-metric-learning CircleLoss (ref_emb = proxies)"
KERAS = "Keras 3 keras.losses.circle"


def _error(theirs, ours) -> float:
  """max|theirs − ours| relative to max|ours| (absolute where ours is all 0)."""
  err = float(np.max(np.abs(np.asarray(theirs, np.float64) - ours), initial=0.0))
  scale = float(np.max(np.abs(ours), initial=0.0))
  return err / scale if scale > 0 else err


def _grad_error(theirs: dict, case) -> float:
  """Over every gradient of the case, all-zero embedding rows left out (a convention)."""
  rows = {"embeddings": case.grad_rows}
  a = np.concatenate([np.asarray(theirs[n])[rows.get(n, slice(None))].ravel() for n in case.grads])
  b = np.concatenate([g[rows.get(n, slice(None))].ravel() for n, g in case.grads.items()])
  return _error(a, b)


@pytest.fixture(scope="module")
def shipped():
  return golden_cases()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
  out = tmp_path_factory.mktemp("golden")
  manifest = _golden.generate(out)
  return out, manifest


# --------------------------------------------------------------------------- the set is current


def test_every_registered_loss_and_sound_variant_is_shipped(shipped):
  for name in _spec.names():
    spec = _spec.get(name)
    problems = _golden.golden_problems(spec)
    cases = [c for c in shipped if c.loss == name]
    first = [p for p in problems if p.setting == next(iter(spec.settings))]
    for variant in spec.sound_variants():
      mine = [c for c in cases if all(c.variant[a] == v for a, v in variant.items)]
      full = variant == spec.default or bool(_golden._conventions(spec, variant))
      assert len(mine) == len(problems if full else first), (name, str(variant))
    assert sum(c.default for c in cases) == len(problems), name


@pytest.mark.slow  # regenerates the whole golden set
def test_shipped_set_is_what_the_generator_writes(regenerated):
  """Fails when a loss or a spec changed without ``python -m circle_jax.verify.golden``."""
  out, manifest = regenerated
  shipped = golden.manifest()
  drop = lambda m: {k: v for k, v in m.items() if k not in ("circle_jax_version", "cases")}  # noqa: E731
  assert drop(shipped) == drop(json.loads(json.dumps(manifest)))
  assert [c["id"] for c in shipped["cases"]] == [c["id"] for c in manifest["cases"]]
  for old, new in zip(golden_cases(), golden_cases(directory=out)):
    assert {k: v for k, v in vars(old).items() if not isinstance(v, (np.ndarray, dict))} == {
        k: v for k, v in vars(new).items() if not isinstance(v, (np.ndarray, dict))}
    assert (old.variant, old.hyperparameters) == (new.variant, new.hyperparameters)
    for name in ("embeddings", "labels", "class_weights", "cotangent"):
      a, b = getattr(old, name), getattr(new, name)
      assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), name
    # Results to a few units in the last place rather than bitwise: XLA may sum
    # in another order on another CPU; any change to a loss is far larger.
    assert _error(new.values, old.values) <= 1e-13, old.id
    assert old.grads.keys() == new.grads.keys()
    for name in old.grads:
      assert _error(new.grads[name], old.grads[name]) <= 1e-13, (old.id, name)


@pytest.mark.slow  # regenerates the whole golden set
def test_generator_output_is_deterministic(regenerated, tmp_path):
  out, manifest = regenerated
  for file in sorted({c["file"] for c in manifest["cases"]}):
    with np.load(os.path.join(out, file)) as npz:
      arrays = {k: npz[k] for k in npz.files}
    _golden._write_npz(os.path.join(tmp_path, file), arrays)
    with open(os.path.join(out, file), "rb") as a, open(os.path.join(tmp_path, file), "rb") as b:
      assert a.read() == b.read(), file
  with open(os.path.join(out, golden.MANIFEST), encoding="utf-8") as f:
    assert f.read() == _golden._dump_manifest(json.loads(json.dumps(manifest)))


def test_shipped_files_are_the_manifest_s_and_small():
  """No npz of a loss no longer registered is left behind; the set stays small."""
  info = golden.manifest()
  data = sorted(f for f in os.listdir(golden.DIRECTORY) if f.endswith((".npz", ".json")))
  assert data == sorted({c["file"] for c in info["cases"]} | {golden.MANIFEST})
  assert sum(os.path.getsize(os.path.join(golden.DIRECTORY, f)) for f in data) < 2 * 1024 * 1024


# --------------------------------------------------------------------------- numpy alone


def _doc_snippets() -> list[str]:
  with open(os.path.join(REPO, "docs", "golden_vectors.md"), encoding="utf-8") as f:
    return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


# A numpy pytorch-metric-learning CircleLoss (α detached, torch's softplus
# cut-off): values and the closed-form gradient (Eq. 9-10 through the
# normalisation), to run the documented recipe end to end without JAX.
_NUMPY_LOSS = '''
def my_loss_and_grad(x, labels, v, *, margin, gamma):
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    n = np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0.0)
    s = n @ n.T
    same = labels[:, None] == labels[None, :]
    pos, neg = same & ~np.eye(len(x), dtype=bool), ~same
    ap, an = np.maximum(1 + margin - s, 0), np.maximum(s + margin, 0)
    lp = np.where(pos, -gamma * ap * (s - 1 + margin), -np.inf)
    ln = np.where(neg, gamma * an * (s - margin), -np.inf)
    def lse(l):
      top = np.max(l, axis=1, keepdims=True)
      top = np.where(np.isfinite(top), top, 0.0)
      return (top + np.log(np.sum(np.exp(l - top), axis=1, keepdims=True)))
    lse_p, lse_n = lse(lp), lse(ln)
    t = lse_p + lse_n
    ok = (pos.any(1) & neg.any(1))[:, None]
    values = np.where(ok, np.where(t > 20, t, np.logaddexp(0, t)), 0.0)[:, 0]
    dt = np.where(ok, np.where(t > 20, 1.0, 1 / (1 + np.exp(-t))), 0.0) * v[:, None]
    ds = dt * (np.where(pos, np.exp(lp - lse_p), 0) * -gamma * ap
               + np.where(neg, np.exp(ln - lse_n), 0) * gamma * an)
    dn = (ds + ds.T) @ n
    grad = np.where(norm > 0, (dn - n * np.sum(n * dn, 1, keepdims=True)) / np.where(norm > 0, norm, 1), 0.0)
  return values, grad
'''


def test_reader_docstring_has_the_documented_recipe():
  lines = golden.__doc__.splitlines()
  for snippet in _doc_snippets():
    for line in snippet.splitlines():
      assert not line.strip() or "  " + line in lines, line


def test_documented_recipe_runs_with_numpy_alone():
  """The docs' snippets, run in a fresh interpreter: no JAX, no circle_jax imported."""
  loader, usage = _doc_snippets()
  script = "\n".join([
      "import sys", "import numpy as np", _NUMPY_LOSS, loader,
      "checked = 0",
      usage + "  checked += 1\n",
      "assert checked >= 8, checked",
      # The reader module, loaded from its file, imports no JAX either.
      "import importlib.util",
      "spec = importlib.util.spec_from_file_location('reader', os.path.join(root, '__init__.py'))",
      "reader = sys.modules['reader'] = importlib.util.module_from_spec(spec)",
      "spec.loader.exec_module(reader)",
      "cases = reader.golden_cases()",
      "assert len(cases) == len(json.load(open(os.path.join(root, 'manifest.json')))['cases'])",
      "assert all(c.values.dtype == np.float64 and c.embeddings.shape[0] == c.values.shape[0] "
      "for c in cases)",
      "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'circle_jax'))",
      "assert not bad, bad",
      "print('ok', checked, len(cases))",
  ])
  env = dict(os.environ, PYTHONPATH=REPO)
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=120)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.startswith("ok"), done.stdout


# --------------------------------------------------------------------------- the values are right


def _circle_jax_call(case):
  """(values, grads) of the public circle_jax function on the case, or None if the
  case is neither its default variant nor that with the gradient through α.

  Called eagerly: a function may branch on a hyper-parameter in Python.
  """
  default = _spec.get(case.loss).default.as_dict()
  differs = {a for a in default if case.variant[a] != default[a]}
  kwargs = dict(case.hyperparameters)
  if case.loss == "sphereface":  # its margin is an integer (a Chebyshev degree)
    kwargs["margin"] = int(kwargs["margin"])
  if differs == {"alpha"} and case.variant["alpha"] == "differentiated":
    kwargs["grad_through_alpha"] = True
  elif differs:
    return None
  fn = getattr(cj, case.function.rsplit(".", 1)[1])
  with jax.enable_x64(True):
    x, y = jnp.asarray(case.embeddings, jnp.float64), jnp.asarray(case.labels)
    cotangent = jnp.asarray(case.cotangent)
    if case.kind == "class":
      w = jnp.asarray(case.class_weights, jnp.float64)
      out, vjp = jax.vjp(lambda x, w: fn(x, w, y, **kwargs), x, w)
      gx, gw = vjp(cotangent)
      return np.asarray(out), {"embeddings": np.asarray(gx), "class_weights": np.asarray(gw)}
    out, vjp = jax.vjp(lambda x: fn(x, y, **kwargs), x)
    return np.asarray(out), {"embeddings": np.asarray(vjp(cotangent)[0])}


# Slow tier: every Circle case run eagerly in float64. The fast tier keeps the
# golden values against pytorch-metric-learning and Keras (below) and the verifier's
# references against the library (tests/verify/test_verify.py, test_*_specs.py).
@pytest.mark.slow
def test_default_variants_are_the_circle_jax_functions(shipped):
  """Every Circle case; for a baseline, its P×K case under its first setting (the
  rest equal the reference, which tests/verify/test_*_specs.py hold to the
  library on every standard problem)."""
  checked = 0
  for case in shipped:
    if case.loss not in ("pairwise_circle", "class_circle") and (
        case.pattern != "pk" or case.setting != next(iter(_spec.get(case.loss).settings))):
      continue
    out = _circle_jax_call(case)
    if out is None:
      continue
    values, grads = out
    assert _error(values, case.values) <= 1e-12, case.id
    assert _grad_error(grads, case) <= 1e-12, case.id
    checked += 1
  assert checked >= 2 * sum(c.default for c in shipped if c.loss in ("pairwise_circle", "class_circle"))


def _pml_call(case):
  """pytorch-metric-learning's CircleLoss, one value per example, in float64."""
  torch = pytest.importorskip("torch")
  losses = pytest.importorskip("pytorch_metric_learning.losses")
  reducers = pytest.importorskip("pytorch_metric_learning.reducers")
  x = torch.tensor(case.embeddings, dtype=torch.float64, requires_grad=True)
  y = torch.tensor(case.labels)
  loss = losses.CircleLoss(m=case.hyperparameters["margin"], gamma=case.hyperparameters["gamma"],
                           reducer=reducers.DoNothingReducer())
  leaves = [x]
  if case.kind == "class":
    w = torch.tensor(case.class_weights, dtype=torch.float64, requires_grad=True)
    leaves.append(w)
    out = loss(x, y, ref_emb=w, ref_labels=torch.arange(w.shape[0]))
  else:
    out = loss(x, y)
  entry = out["loss"]
  values = torch.zeros(len(y), dtype=torch.float64)
  if entry["reduction_type"] == "element":
    values = values.index_put((entry["indices"],), entry["losses"].reshape(-1))
  else:  # PML's zero_losses(): no anchor with a positive and a negative
    assert entry["reduction_type"] == "already_reduced" and float(entry["losses"]) == 0.0
    values = values + 0.0 * x.sum()
  (values * torch.tensor(case.cotangent)).sum().backward()
  grads = {"embeddings": x.grad.numpy()}
  if case.kind == "class":
    grads["class_weights"] = leaves[1].grad.numpy()
  return values.detach().numpy(), grads


def test_pytorch_metric_learning_computes_its_golden_cases(shipped):
  cases = [c for c in shipped if PML in c.conventions or PML_CLASS in c.conventions]
  assert {c.loss for c in cases} == {"pairwise_circle", "class_circle"}
  for case in cases:
    values, grads = _pml_call(case)
    assert _error(values, case.values) <= 1e-11, case.id
    assert _grad_error(grads, case) <= 1e-11, case.id


def _keras():
  """keras on its JAX backend (fixed when keras is first imported; conftest sets it)."""
  os.environ.setdefault("KERAS_BACKEND", "jax")
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "jax":
    pytest.skip(f"keras was imported with the {keras.backend.backend()!r} backend")
  return keras


def test_keras_computes_its_golden_cases(shipped):
  """keras.losses.circle on the raw embeddings (it does not normalise).

  Keras's gradient is NaN wherever an anchor has no positive or no negative
  (the log-sum-exp of an empty set); its values are 0 there, as circle_jax's.
  Gradients are compared on the problems where every anchor has both.
  """
  keras = _keras()
  cases = [c for c in shipped if KERAS in c.conventions]
  assert cases
  spec = _spec.get("pairwise_circle")
  compared = 0
  circle = jax.jit(lambda x, y, cot, gamma, margin: jax.vjp(
      lambda x: keras.losses.circle(y, x, gamma=gamma, margin=margin), x)[1](cot)[0])
  value = jax.jit(lambda x, y, gamma, margin: keras.losses.circle(y, x, gamma=gamma, margin=margin))
  for case in cases:
    with jax.enable_x64(True):
      args = (jnp.asarray(case.embeddings, jnp.float64), jnp.asarray(case.labels))
      hp = (jnp.float64(case.hyperparameters["gamma"]), jnp.float64(case.hyperparameters["margin"]))
      out = value(*args, *hp)
      gx = circle(*args, jnp.asarray(case.cotangent), *hp)
    assert out.dtype == jnp.float64
    assert _error(np.asarray(out), case.values) <= 1e-11, case.id
    if spec.valid(_problem_like(case)).all():
      assert _grad_error({"embeddings": np.asarray(gx)}, case) <= 1e-11, case.id
      compared += 1
  assert compared >= len(spec.settings)


def _problem_like(case):
  """The verifier's Problem for a case (for spec.valid, which reads the labels)."""
  from circle_jax.verify import Problem

  return Problem(case.problem, case.pattern, case.embeddings, case.labels,
                 np.zeros((1, case.embeddings.shape[1])), case.cotangent,
                 case.hyperparameters, case.dtype, case.setting)
