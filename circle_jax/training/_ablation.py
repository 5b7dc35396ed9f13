r"""Hyper-parameter ablations as one program: N train states stacked, one step for all.

An ablation is a list of :class:`Member` s, each a loss name, its numeric
hyper-parameters (γ, m, …) and its static options (``grad_through_alpha``, …).
Their train states are stacked along a leading axis of size N and one compiled
step, :func:`circle_jax.training.train_step` over the members, advances all of
them:

.. math::  (\theta_i, o_i) \leftarrow \mathrm{step}(\theta_i, o_i;\ \text{batch}_i,
           \text{rng}_i, \ell_{k_i}, \gamma_i, m_i), \qquad i = 1 \dots N

* **Numeric hyper-parameters** (those whose registry default is a Python
  ``float``: γ, m, triplet margins, …) are ``[N]`` arrays, traced, so one
  compiled step serves every value.
* **Loss choice**: the distinct (loss, static options) pairs are the branches
  of a ``lax.switch`` on a per-member index ``k_i``. Under ``vmap`` a switch
  with a batched index evaluates every branch for every member and selects, so
  each member pays for all distinct losses; the backbone, which dominates,
  runs once per member. A branch a member did not choose is evaluated at that
  loss's *default* hyper-parameters (never at another loss's γ or m), so it
  stays finite and its zero cotangent adds exact zeros to the gradient.
  (``"unroll"`` and ``"map"`` members run only their own branch.)
  Mixing pair-wise and class-level losses works when the model carries class
  proxies (pair-wise members ignore them; they then change only by weight
  decay).
* **Randomness**: every member has its own ``rng`` (dropout) and, through
  :func:`create_stacked_states`, its own initialisation key.
* **How the members run** (``member_strategy``): batched by ``jax.vmap`` (the
  default on accelerators), or as N ordinary steps unrolled in the program
  (the default on a CPU, where vmapped convolutions become slow grouped ones),
  or in a ``lax.map`` loop; :func:`resolve_member_strategy` has the measurements.

Member ``i`` of the stacked run equals a separate run of
:func:`circle_jax.training.train_step` with :func:`make_loss` and the same
settings, up to float rounding, under every strategy (tested; the compiled
programs differ: batched convolutions under ``vmap``, and γ, m as runtime
values instead of folded constants).

The ablation axis shards over devices: :func:`ablation_mesh` and
:func:`jit_ablation_step` place member ``i`` on device ``i·d/N`` with
``NamedSharding(mesh, P('ablation'))``; members never communicate.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from circle_jax.training._loss_registry import get_loss_spec
from circle_jax.training._loss_registry import make_hparam_loss
from circle_jax.training._state import create_train_state
from circle_jax.training._steps import embed_step
from circle_jax.training._steps import train_step

AXIS = "ablation"

#: Values of ``member_strategy``: how one compiled program runs the N members.
MEMBER_STRATEGIES = ("auto", "vmap", "unroll", "map")


def resolve_member_strategy(member_strategy: str = "auto", backend: str | None = None) -> str:
  """``"vmap"``, ``"unroll"`` or ``"map"``: ``member_strategy`` with ``"auto"`` decided.

  * ``"vmap"``: ``jax.vmap`` over the members. Convolutions with per-member
    kernels become one grouped convolution, and a ``lax.switch`` over losses
    runs every branch for every member. One copy of the step is compiled; on
    accelerators, batching N small models is expected to pay (not measured
    here: no accelerator was available).
  * ``"unroll"``: the program holds N copies of the ordinary step, one per
    member, on static slices of the stacked state. Ordinary convolutions, only
    the member's own loss branch; compile time grows with N.
  * ``"map"``: ``jax.lax.map`` (a loop inside the program): one copy of the
    ordinary step and one member's activations at a time, for grids too large
    to batch or to unroll.
  * ``"auto"``: ``"unroll"`` on a CPU, ``"vmap"`` on any other backend.

  Why ``"unroll"`` on a CPU, measured on the 8-member digits grid of
  ``experiments/configs/ablate.py`` (2 cores shared with other jobs, jax
  0.10.2; CPU time per training step, range over 2–5 runs): the 8 separately
  jitted steps 0.72–0.84 s; ``"unroll"`` 0.60–0.82 s (the same ordinary
  convolutions); ``"vmap"`` 1.49–1.70 s (a grouped convolution per layer,
  which XLA:CPU runs slower than the N ordinary ones it replaces); ``"map"``
  6.5–6.8 s, because inside the loop XLA:CPU leaves the weight-gradient
  convolutions in a transposed layout and emits them as plain loops instead of
  its convolution library; ``lax.map(..., batch_size=2 or 4)`` 8.4–10.1 s, its
  loop body then holding grouped convolutions as well. What the unrolled
  program saves over separate runs is compilation: 21 s (wall) for the one
  program against 47 s for the 8 separate steps (``"vmap"``: 10 s).

  Args:
    member_strategy: one of :data:`MEMBER_STRATEGIES`.
    backend: the platform deciding ``"auto"``; ``jax.default_backend()`` if None.

  Raises:
    ValueError: an unknown strategy.

  Example:
    >>> resolve_member_strategy("auto", "cpu"), resolve_member_strategy("auto", "gpu")
    ('unroll', 'vmap')
  """
  if member_strategy not in MEMBER_STRATEGIES:
    raise ValueError(f"member_strategy: {member_strategy!r}; known: "
                     f"{', '.join(repr(m) for m in MEMBER_STRATEGIES)}")
  if member_strategy != "auto":
    return member_strategy
  return "unroll" if (backend or jax.default_backend()) == "cpu" else "vmap"


def _over_members(fn: Callable, strategy: str, stacked):
  """``fn(member_i)`` for every member of the pytree ``stacked``, outputs stacked on axis 0."""
  if strategy == "vmap":
    return jax.vmap(fn)(stacked)
  if strategy == "map":
    return jax.lax.map(fn, stacked)
  n = jax.tree.leaves(stacked)[0].shape[0]
  outs = [fn(jax.tree.map(lambda x: x[i], stacked)) for i in range(n)]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


@dataclasses.dataclass(frozen=True)
class Member:
  """One configuration of an ablation.

  Attributes:
    loss: a key of :data:`circle_jax.training.LOSSES`.
    hparams: numeric hyper-parameters (float defaults in the registry, e.g.
      ``{"gamma": 256.0, "margin": 0.25}``); missing ones take the registry
      default.
    options: static keyword arguments (``grad_through_alpha``, ``chunk_size``,
      …): members that differ here are different ``lax.switch`` branches.
  """

  loss: str
  hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _numeric_names(loss: str) -> tuple[str, ...]:
  spec = get_loss_spec(loss)
  # bool is not float, int (SphereFace's multiplicative margin, chunk sizes) is not either.
  return tuple(k for k, v in spec.hparams.items() if isinstance(v, float))


@functools.partial(jax.tree_util.register_dataclass, data_fields=("loss_index", "hparams"),
                   meta_fields=("variants",))
@dataclasses.dataclass(frozen=True)
class Ablation:
  """The members of an ablation as static branches plus ``[N]`` arrays (a pytree).

  Build it with :func:`make_ablation`. ``variants`` is static (it decides the
  program); ``loss_index`` and ``hparams`` are the pytree's leaves: they are
  traced when an :class:`Ablation` is passed to a jitted function, so new
  values of γ or m reuse the compiled step.

  Attributes:
    variants: the distinct ``(loss, options)`` pairs, options as sorted tuples.
    loss_index: ``[N]`` int32, each member's branch in ``variants``.
    hparams: ``{name: [N] float32}`` over the union of numeric names; entries a
      member's loss does not take are NaN (never read: see the module doc).
  """

  variants: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
  loss_index: jax.Array
  hparams: dict[str, jax.Array]

  @property
  def size(self) -> int:
    return self.loss_index.shape[0]

  @property
  def kinds(self) -> frozenset[str]:
    """``{"pair"}``, ``{"class"}`` or both: what the model and sampler must provide."""
    return frozenset(get_loss_spec(loss).kind for loss, _ in self.variants)


def make_ablation(members: Sequence[Member]) -> Ablation:
  """Validates members and lays them out as branches and ``[N]`` arrays.

  Raises:
    ValueError: no members; an unknown loss, hyper-parameter or option; a
      numeric hyper-parameter given as an option or a static one as a number.

  Example:
    >>> ab = make_ablation([Member("circle_class", {"gamma": g}) for g in (32.0, 256.0)]
    ...                    + [Member("am_softmax")])
    >>> ab.size, [v[0] for v in ab.variants], ab.loss_index.tolist()
    (3, ['circle_class', 'am_softmax'], [0, 0, 1])
    >>> ab.hparams["gamma"].tolist(), ab.hparams["margin"].tolist()[2]
    ([32.0, 256.0, 64.0], 0.3499999940395355)
  """
  members = tuple(members)
  if not members:
    raise ValueError("make_ablation: needs at least one member")
  variants: list[tuple[str, tuple]] = []
  index = []
  names: list[str] = []
  for i, m in enumerate(members):
    if not isinstance(m, Member):
      raise TypeError(f"make_ablation: member {i} is a {type(m).__name__}, not a Member")
    spec = get_loss_spec(m.loss)
    numeric = _numeric_names(m.loss)
    for k in m.hparams:
      if k not in numeric:
        raise ValueError(f"member {i} ({m.loss}): {k!r} is not a numeric hyper-parameter of "
                         f"{m.loss!r}; numeric: {list(numeric)} (static ones go in options)")
    for k in m.options:
      if k not in spec.hparams or k in numeric:
        raise ValueError(f"member {i} ({m.loss}): {k!r} is not a static option of {m.loss!r}; "
                         f"options: {sorted(set(spec.hparams) - set(numeric))}")
    variant = (m.loss, tuple(sorted(m.options.items())))
    if variant not in variants:
      variants.append(variant)
    index.append(variants.index(variant))
    names += [k for k in numeric if k not in names]
  hparams = {}
  for k in names:
    values = []
    for m in members:
      if k in _numeric_names(m.loss):
        values.append(float(m.hparams.get(k, get_loss_spec(m.loss).hparams[k])))
      else:
        values.append(float("nan"))
    hparams[k] = jnp.asarray(values, jnp.float32)
  return Ablation(tuple(variants), jnp.asarray(index, jnp.int32), hparams)


def ablation_loss(variants) -> Callable:
  """``loss(embeddings, labels, class_weights, index, hparams) -> scalar`` for one member.

  ``index`` picks the branch of ``variants`` (``lax.switch``); ``hparams`` are
  that member's scalars. Each branch sees the member's values only if it is the
  member's branch, its loss's defaults otherwise (finite, never NaN).

  Example:
    >>> ab = make_ablation([Member("circle_pair", {"gamma": 32.0}), Member("triplet")])
    >>> loss = ablation_loss(ab.variants)
    >>> x, y = jnp.eye(4, 3) + 0.1, jnp.array([0, 0, 1, 1])
    >>> hp = {k: v[0] for k, v in ab.hparams.items()}
    >>> from circle_jax.training import make_loss
    >>> bool(jnp.allclose(loss(x, y, None, ab.loss_index[0], hp),
    ...                   make_loss("circle_pair", {"gamma": 32.0})[1](x, y)))
    True
  """
  branches = []
  for b, (loss, options) in enumerate(variants):
    _, fn = make_hparam_loss(loss, dict(options))
    names = _numeric_names(loss)
    defaults = get_loss_spec(loss).hparams

    def branch(embeddings, labels, class_weights, index, hparams, b=b, fn=fn, names=names,
               defaults=defaults):
      mine = index == b
      hp = {k: jnp.where(mine, hparams[k], jnp.asarray(defaults[k], hparams[k].dtype))
            for k in names}
      return fn(embeddings, labels, class_weights, hp)

    branches.append(branch)

  def loss(embeddings, labels, class_weights, index, hparams):
    if len(branches) == 1:
      return branches[0](embeddings, labels, class_weights, index, hparams)
    return jax.lax.switch(index, branches, embeddings, labels, class_weights, index, hparams)

  return loss


def create_stacked_states(model, tx, rngs: jax.Array, sample_input: jax.Array):
  """N train states initialised from the N keys ``rngs``, stacked along axis 0.

  Equal, leaf by leaf, to ``create_train_state(model, tx, rngs[i], sample_input)``
  (JAX's random numbers do not depend on batching).

  Example:
    >>> import optax
    >>> from circle_jax.models import SmallCNN
    >>> s = create_stacked_states(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                           jax.random.split(jax.random.key(0), 3), jnp.ones((1, 8, 8, 1)))
    >>> s.step.shape, s.params["head"]["fc"]["kernel"].shape
    ((3,), (3, 4, 6))
  """
  return jax.vmap(lambda r: create_train_state(model, tx, r, sample_input))(rngs)


def stack_states(states: Sequence[Any]):
  """Stacks train states (or any identical pytrees) along a new leading axis.

  Raises:
    ValueError: no states, or states whose structure (including the static
      ``apply_fn`` and ``tx``) differs.

  Example:
    >>> stack_states([{"w": jnp.zeros(2)}, {"w": jnp.ones(2)}])["w"].shape
    (2, 2)
  """
  states = list(states)
  if not states:
    raise ValueError("stack_states: no states")
  first = jax.tree.structure(states[0])
  for i, s in enumerate(states[1:], 1):
    if jax.tree.structure(s) != first:
      raise ValueError(f"stack_states: state {i} has a different structure from state 0 "
                       "(create states with the same model and optimiser object, or use "
                       "create_stacked_states)")
  return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def unstack_state(stacked, i: int):
  """Member ``i`` of a stacked pytree.

  Example:
    >>> unstack_state({"w": jnp.arange(6).reshape(3, 2)}, 1)["w"].tolist()
    [2, 3]
  """
  n = jax.tree.leaves(stacked)[0].shape[0]
  if not -n <= i < n:
    raise IndexError(f"unstack_state: member {i} of {n}")
  return jax.tree.map(lambda x: x[i], stacked)


def ablation_train_step(state, batch: dict, rngs: jax.Array, ablation: Ablation, *,
                        batch_axis: int | None = 0, member_strategy: str = "auto"):
  """One step of every member: :func:`train_step` over the ablation axis, in one program.

  Args:
    state: stacked train state (leading axis N).
    batch: ``{"image": [N, B, …], "label": [N, B]}`` (``batch_axis=0``, one
      batch per member) or ``[B, …]`` shared by all (``batch_axis=None``).
    rngs: ``[N]`` keys; member i's dropout key is ``fold_in(rngs[i], step)``.
    ablation: from :func:`make_ablation`.
    batch_axis: 0 or None, as above.
    member_strategy: how the program runs the members, one of
      :data:`MEMBER_STRATEGIES` (``"vmap"``, ``"unroll"``, ``"map"``; ``"auto"``
      is ``"unroll"`` on a CPU, ``"vmap"`` elsewhere): see
      :func:`resolve_member_strategy`. Every strategy computes the same step.

  Returns:
    ``(state, metrics)``, metrics ``{"loss": [N], "grad_norm": [N]}``.

  Raises:
    ValueError: leading sizes other than N, a ``batch_axis`` other than 0 or
      None, an unknown ``member_strategy``.

  Example:
    >>> import optax
    >>> from circle_jax.models import SmallCNN
    >>> ab = make_ablation([Member("circle_pair", {"gamma": g}) for g in (32.0, 80.0)])
    >>> s = create_stacked_states(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                           jax.random.split(jax.random.key(0), 2), jnp.ones((1, 8, 8, 1)))
    >>> batch = {"image": jnp.ones((4, 8, 8, 1)), "label": jnp.array([0, 0, 1, 1])}
    >>> step = jax.jit(lambda s, b, k: ablation_train_step(s, b, k, ab, batch_axis=None,
    ...                                                    member_strategy="unroll"))
    >>> s, m = step(s, batch, jax.random.split(jax.random.key(1), 2))
    >>> s.step.tolist(), m["loss"].shape
    ([1, 1], (2,))
  """
  strategy = resolve_member_strategy(member_strategy)
  _check_members(state, rngs, ablation)
  if batch_axis not in (0, None):
    raise ValueError(f"ablation_train_step: batch_axis must be 0 or None, got {batch_axis!r}")
  loss = ablation_loss(ablation.variants)

  def member_step(args):
    state, batch, rng, index, hparams = args
    loss_fn = lambda e, y, w: loss(e, y, w, index, hparams)
    return train_step(state, batch, rng, loss_fn=loss_fn)

  if batch_axis is None:
    # A shared batch is closed over: unbatched under vmap, not copied N times otherwise.
    return _over_members(lambda a: member_step((a[0], batch, *a[1:])), strategy,
                         (state, rngs, ablation.loss_index, ablation.hparams))
  return _over_members(member_step, strategy,
                       (state, batch, rngs, ablation.loss_index, ablation.hparams))


def ablation_embed_step(state, images: jax.Array, *, member_strategy: str = "auto") -> jax.Array:
  """Embeddings ``[N, B, D]`` of the same ``images [B, …]`` under every member (inference mode).

  ``member_strategy`` as in :func:`ablation_train_step`.

  Example:
    >>> import optax
    >>> from circle_jax.models import SmallCNN
    >>> s = create_stacked_states(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                           jax.random.split(jax.random.key(0), 3), jnp.ones((1, 8, 8, 1)))
    >>> ablation_embed_step(s, jnp.ones((5, 8, 8, 1)), member_strategy="unroll").shape
    (3, 5, 6)
  """
  strategy = resolve_member_strategy(member_strategy)
  return _over_members(lambda s: embed_step(s, images), strategy, state)


def _check_members(state, rngs, ablation):
  n = ablation.size
  sizes = {x.shape[0] if x.ndim else None for x in jax.tree.leaves(state)}
  if sizes != {n}:
    raise ValueError(f"stacked state: every leaf needs a leading axis of the {n} members, "
                     f"got leading sizes {sorted(sizes, key=str)}")
  if rngs.shape != (n,):
    raise ValueError(f"rngs: expected [{n}] keys (one per member), got shape {rngs.shape}")


def ablation_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh with axis ``'ablation'`` over the first ``num_devices`` devices (all by default).

  Example:
    >>> ablation_mesh(1).axis_names
    ('ablation',)
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"ablation_mesh: num_devices={num_devices} but {len(devices)} devices "
                     "are visible")
  return jax.make_mesh((n,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def member_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (member) axis split along ``'ablation'``; members never communicate."""
  return NamedSharding(mesh, P(AXIS))


def jit_ablation_step(ablation: Ablation, mesh: Mesh | None = None, *,
                      batch_axis: int | None = 0, member_strategy: str = "auto") -> Callable:
  """``step(state, batch, rngs) -> (state, metrics)``: :func:`ablation_train_step`, jitted.

  With a ``mesh`` (from :func:`ablation_mesh`) every stacked input and output
  is sharded along ``'ablation'`` (a shared batch is replicated), so each
  device trains N/d members; N must be divisible by the number of devices.
  The step runs inside a ``shard_map``, so each device steps its own N/d
  members whatever the ``member_strategy``; ``"auto"`` is decided by the
  platform of the mesh's devices.
  The input state is donated. ``step.lower(state, batch, rngs)`` lowers the
  jitted step ahead of time, as ``jax.jit(...).lower`` does.

  Raises:
    ValueError: N not divisible by the devices of ``mesh``; an unknown
      ``member_strategy``.

  Example:
    >>> import optax
    >>> from circle_jax.models import SmallCNN
    >>> ab = make_ablation([Member("circle_pair", {"margin": m}) for m in (0.1, 0.4)])
    >>> s = create_stacked_states(SmallCNN(features=(4,), embedding_dim=6), optax.sgd(0.1),
    ...                           jax.random.split(jax.random.key(0), 2), jnp.ones((1, 8, 8, 1)))
    >>> step = jit_ablation_step(ab, ablation_mesh(1), batch_axis=None)
    >>> batch = {"image": jnp.ones((4, 8, 8, 1)), "label": jnp.array([0, 0, 1, 1])}
    >>> s, m = step(s, batch, jax.random.split(jax.random.key(1), 2))
    >>> s.step.tolist()
    [1, 1]
  """
  backend = None if mesh is None else mesh.devices.flat[0].platform
  strategy = resolve_member_strategy(member_strategy, backend)

  def step(state, batch, rngs, ablation):
    return ablation_train_step(state, batch, rngs, ablation, batch_axis=batch_axis,
                               member_strategy=strategy)

  if mesh is None:
    jitted = jax.jit(step, donate_argnums=(0,))
  else:
    d = mesh.shape[AXIS]
    if ablation.size % d:
      raise ValueError(f"jit_ablation_step: {ablation.size} members cannot be split evenly over "
                       f"the {d} devices of the '{AXIS}' axis")
    members = member_sharding(mesh)
    batch_spec = P(AXIS) if batch_axis == 0 else P()
    # Each device runs the step on its own N/d members, whatever the strategy.
    # Left to the partitioner, the vmapped step all-gathered and computed the
    # convolutions of all N members on every device (compiled HLO on 8
    # emulated CPU devices); a loop over a sharded axis has no such guarantee.
    step = jax.shard_map(step, mesh=mesh, in_specs=(P(AXIS), batch_spec, P(AXIS), P(AXIS)),
                         out_specs=P(AXIS))
    jitted = jax.jit(step, in_shardings=(members, NamedSharding(mesh, batch_spec), members,
                                         members),
                     out_shardings=(members, members), donate_argnums=(0,))
  # γ, m and the loss index enter as arguments, not constants: traced, never folded.
  def bound(state, batch, rngs):
    return jitted(state, batch, rngs, ablation)

  # The same program ahead of time (its HLO, cost and memory analyses); compiled
  # for the arguments of a call, it is the executable that call runs (JAX caches it).
  bound.lower = lambda state, batch, rngs: jitted.lower(state, batch, rngs, ablation)
  return bound
