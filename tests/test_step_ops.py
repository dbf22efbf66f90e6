"""The per-op profile's attribution (`benchmarks.step_ops`): HLO op names to the model's scopes."""

import jax
import jax.numpy as jnp

from benchmarks import step_ops
from benchmarks.train_step import build, synthetic_batch
from experiments.configs import transformer


def test_scopes_unwrap_transformations_and_leave_out_jax_structure():
  assert step_ops.scope_of("jit(train_step)/transpose(jvp(encoder))/attention/dot_general",
                           2) == ("encoder/attention", "backward")
  assert step_ops.scope_of("jit(train_step)/jvp(score)/rnnt/while/body/closed_call/checkpoint/"
                           "rematted_computation/tanh", 2) == ("score/rnnt", "forward")
  assert step_ops.scope_of("jit(train_step)/jvp(encoder)/ffn/jit(silu)/div", 1) == \
      ("encoder", "forward")
  assert step_ops.scope_of("jit(train_step)/transpose(jvp(bqhd,bkhd->bhqk))/dot_general",
                           2) == ("(step)", "backward")


def test_every_part_of_a_compiled_step_carries_its_scope():
  # The tiny Transformer recipe's step, compiled: its ops name the parts the profile reports.
  c = transformer.get_config("tiny")
  batch = jax.tree.map(jnp.asarray, synthetic_batch(2, 1.0, 0, 12.0, c.model.vocab))
  step, state = build(c)
  meta = step_ops.op_metadata(step.lower(state, batch).compile().as_text())
  scopes = {step_ops.scope_of(op_name, 2) for op_name, _ in meta.values()}
  for part in ["features", "encoder/subsampling", "encoder/attention", "encoder/ffn",
               "score/prediction", "score/rnnt", "optimizer"]:
    assert (part, "forward") in scopes, part
  for part in ["encoder/attention", "encoder/ffn", "score/rnnt"]:
    assert (part, "backward") in scopes, part
