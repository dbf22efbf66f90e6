"""What a run on an accelerator relies on, checked on the CPU: mixed precision
(`model.matmul_dtype`: bfloat16 products with float32 sums, parameters, optimizer state and
loss; the bfloat16 step against the float32 step on the same batch), the platform a run asks
for, and imports an accelerator image without TensorFlow or wandb can satisfy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asr.training.loop import build_model
from experiments.configs import conformer, rnnt
from tests.helpers import tiny_step


def _dots(jaxpr):
  """Every dot_general of a jaxpr, sub-jaxprs (scans, custom VJPs) included: (lhs, rhs, out)
  dtypes; except optax's CTC loss's own one-hot contractions (the loss stays float32)."""
  out = []
  for eqn in jaxpr.eqns:
    in_loss = any("optax" in f.file_name for f in eqn.source_info.traceback.frames)
    if eqn.primitive.name == "dot_general" and not in_loss:
      out.append(tuple(str(v.aval.dtype) for v in (*eqn.invars[:2], eqn.outvars[0])))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out += _dots(inner)
  return out


def _config(module, dtype):
  c = module.get_config("tiny")
  c.model.matmul_dtype = dtype
  return c


def test_the_bfloat16_step_is_the_float32_step_to_bfloat16_precision():
  runs = {}
  for dtype in ("float32", "bfloat16"):
    _, state, step, batch, _ = tiny_step(_config(rnnt, dtype))
    step = jax.jit(step)
    losses = []
    for _ in range(3):
      state, m = step(state, batch)
      losses.append(float(m["loss"]))
    runs[dtype] = (np.array(losses), state)
  (l32, s32), (l16, s16) = runs["float32"], runs["bfloat16"]
  # bfloat16 keeps 8 significant bits (relative rounding 2^-9 per operand); over a step the
  # loss moves by a few parts in a thousand, and it must move at all (the products really ran
  # in bfloat16).
  assert np.all(np.isfinite(l16))
  np.testing.assert_allclose(l16, l32, rtol=2e-3)
  assert not np.array_equal(l16, l32)
  # Parameters and the optimizer's moments stay float32, and three updates stay close.
  for tree in (s16["params"], s16["opt_state"]):
    assert {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)
            } == {"float32"}
  for a, b in zip(jax.tree.leaves(s16["params"]), jax.tree.leaves(s32["params"])):
    np.testing.assert_allclose(a, b, atol=2e-3)


@pytest.mark.parametrize("module", [rnnt, conformer], ids=["lstm", "conformer"])
def test_every_product_of_the_model_runs_in_its_matmul_dtype(module):
  for dtype, operand in (("bfloat16", "bfloat16"), ("float32", "float32")):
    c = _config(module, dtype)
    model = build_model(c)
    features = jnp.ones((2, 64, c.model.num_mels))
    lengths = jnp.array([64, 40])
    encoded = jax.make_jaxpr(lambda f, n: model.encode(f, n).frames)(features, lengths)
    dots = _dots(encoded.jaxpr)
    labels, label_lengths = jnp.ones((2, 5), jnp.int32), jnp.array([5, 3])
    scored = jax.make_jaxpr(lambda f, n, y, u: model.score(model.encode(f, n), y, u)["rnnt"])(
        features, lengths, labels, label_lengths)
    dots += _dots(scored.jaxpr)
    # (Log-mel features are computed before the model.) Every product is a layer's: operands
    # in the dtype, sums and results in float32.
    assert dots and all(d == (operand, operand, "float32") for d in dots), sorted(set(dots))


def test_an_unknown_matmul_dtype_is_named():
  with pytest.raises(ValueError, match=r"model\.matmul_dtype.*float32 or bfloat16"):
    build_model(_config(rnnt, "float16"))


def test_layers_a_surgery_puts_in_multiply_in_the_model_dtype():
  from compression.quantization import ActivationQuantizedDense
  from experiments.configs import compression
  c = compression.get_config("tiny,act8")
  c.model.matmul_dtype = "bfloat16"
  model = build_model(c)
  replaced = [m for _, m in model.iter_modules() if isinstance(m, ActivationQuantizedDense)]
  assert replaced and all(m.matmul_dtype == "bfloat16" for m in replaced)


def test_a_platform_jax_cannot_see_fails_at_start_naming_what_it_sees(tmp_path):
  from asr.training.loop import Trainer, mesh_devices
  assert mesh_devices("") == jax.devices() and mesh_devices("cpu") == jax.devices("cpu")
  c = rnnt.get_config("tiny")
  c.train.platform = "tpu"
  c.data.data_dir = str(tmp_path / "no_corpus_needed")  # it fails before reading data
  with pytest.raises(ValueError, match=r"train\.platform='tpu': JAX sees no tpu device, only "
                                       r"\d+ cpu .*`cuda` extra"):
    Trainer(c, tmp_path / "run")
  assert not (tmp_path / "no_corpus_needed").exists()


def test_the_model_loss_step_and_their_benchmarks_import_without_tensorflow_or_wandb():
  # An accelerator's image may have neither (the input pipeline and logging import them when
  # they run): what times the loss and the step must not need them to load.
  import subprocess
  import sys
  code = ("import sys\n"
          "import asr.models, asr.losses, asr.decoding, asr.training.loop, asr.training.train_step\n"
          "import benchmarks.train_step, benchmarks.rnnt_loss_vs_torchaudio\n"
          "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets', 'wandb') "
          "if m in sys.modules))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip().splitlines()[-1] == "[]"
