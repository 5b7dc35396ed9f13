"""TrainInput: where a resumed input starts."""

import numpy as np

from experiments import input_pipeline


def _make(calls):
  def make(start, state):
    calls.append((start, state))
    return iter({"step": np.int64(s)} for s in range(start, 10))
  return make


def test_resumes_from_the_iterator_state_it_saved():
  calls = []
  it = input_pipeline.TrainInput(_make(calls), 0,
                                 {"start": 2, "next_step": 5, "iterator": {"next_index": 3}})
  assert calls == [(2, {"next_index": 3})] and it.start == 2


def test_without_an_iterator_state_resumes_at_the_next_step():
  # A position saved by an input without iterator state (the fine-grained sets'
  # earlier tf.data pipeline): the step alone says where to go on.
  calls = []
  it = input_pipeline.TrainInput(_make(calls), 0, {"start": 0, "next_step": 7, "iterator": None})
  assert calls == [(7, None)] and int(next(it)["step"]) == 7
  assert it.position() == {"start": 7, "next_step": 8, "iterator": None}
