"""The compiled class-sharded program: which collectives it runs, and that none depends on C.

This is a property of the compiled fwd+bwd program (parsed from its HLO), not a
timing: the weights must never cross devices, only O(B) values and the [B, D]
embeddings (and their gradient).
"""

import jax
import pytest

from experiments import benchmark_lib
from tests.parallel.conftest import NUM_DEVICES

BATCH, DIM = 32, 8


def program(classes, chunk_size):
  return benchmark_lib.sharded_program(classes, BATCH, DIM, chunk_size,
                                       jax.devices()[:NUM_DEVICES])


# Fast tier: the dense program; the chunked one runs in the slow tier.
@pytest.mark.parametrize("chunk_size", [None, pytest.param(64, marks=pytest.mark.slow)])
def test_no_collective_depends_on_the_number_of_classes(mesh, chunk_size):
  found = {c: benchmark_lib.collectives(program(c, chunk_size).as_text())
           for c in (NUM_DEVICES * 256, NUM_DEVICES * 4096)}
  signature = lambda cs: sorted((c["op"], tuple(c["shapes"])) for c in cs)
  small, large = found.values()
  assert signature(small) == signature(large)
  ops = {c["op"] for c in large}
  # The embeddings are gathered forward and their gradient reduce-scattered back.
  assert {"all-gather", "all-reduce", "reduce-scatter"} <= ops, ops
  assert f"f32[{BATCH},{DIM}]" in {s for c in large for s in c["shapes"]}
  # Nothing near the size of one weight shard (4096 × 8 floats) crosses devices.
  assert max(c["bytes"] for c in large) <= BATCH * DIM * 4


def test_parser_reads_async_and_tuple_collectives():
  hlo = """
  %ag = (f32[4,8]{1,0}, f32[32,8]{1,0}) all-gather-start(f32[4,8]{1,0} %p), dimensions={0}
  %agd = f32[32,8]{1,0} all-gather-done((f32[4,8]{1,0}, f32[32,8]{1,0}) %ag)
  %ar = (f32[32]{0}, s32[]) all-reduce(f32[32]{0} %a, s32[] %b), to_apply=%add
  %cp = bf16[16,2]{1,0} collective-permute(bf16[16,2]{1,0} %c), source_target_pairs={{0,1}}
  """
  assert benchmark_lib.collectives(hlo) == [
      dict(op="all-gather", shapes=["f32[32,8]"], bytes=32 * 8 * 4),
      dict(op="all-reduce", shapes=["f32[32]", "s32[]"], bytes=32 * 4 + 4),
      dict(op="collective-permute", shapes=["bf16[16,2]"], bytes=16 * 2 * 2),
  ]
