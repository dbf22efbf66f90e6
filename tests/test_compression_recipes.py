"""The compression recipes (experiments/configs/compression.py) as a user runs them: methods
combine, their ramps follow the run's length, and a combined run trains, checkpoints and is
evaluated with its sparsity and bytes."""

import json

import jax
import numpy as np
import pytest

from compression import quantization as Q
from compression.weights import Selection
from experiments.configs.compression import BASE_RUN, METHODS, get_config


def test_every_method_builds_and_its_ramps_follow_the_run_length(tiny_trained_run, tmp_path):
  from asr.training import transforms as T
  from asr.training.loop import build_model, import_plugins, loss_terms
  for method in METHODS:
    c = get_config(f"tiny,{method}")
    import_plugins(c)
    if method == "distill":
      assert c.loss.distill.teacher == BASE_RUN
      c.loss.distill.teacher = str(tmp_path / "nowhere")
      with pytest.raises(FileNotFoundError, match="teacher workdir '.*nowhere' holds no config"):
        loss_terms(c)
      c.loss.distill.teacher = str(tiny_trained_run)
    T.build_transforms(dict(c.transforms))
    loss_terms(c)
    build_model(c)
  c = get_config("sparse90")
  assert c.variant == "small" and c.train.num_steps == 1200
  assert c.init_from == "workdirs/compression_base" and c.data.dataset == "synth_speech/full"
  c.train.num_steps = 4000
  prune = dict(c.transforms.prune)
  assert (prune["begin_step"], prune["end_step"], prune["target"]) == (0, 1600, 0.9)
  assert prune["scope"] == "lamp"
  assert (get_config("reg8").loss.quant_reg, get_config("reg4").loss.quant_reg) == (0.1, 1.0)
  assert dict(get_config("ptq4").transforms.quant)["begin_step"] == 1200   # the last step only
  # The pretrained model is the LSTM hour run of BENCHMARKS.md; the student half as wide.
  from experiments.configs import rnnt
  pre, rnnt_small = get_config("pretrain"), rnnt.get_config("small")
  assert (pre.init_from, pre.train.num_steps, pre.optim.to_dict()) == ("", 8000,
                                                                      rnnt_small.optim.to_dict())
  assert pre.model.to_dict() == rnnt_small.model.to_dict()
  student = get_config("student+distill")
  assert student.model.lstm.hidden == 128 and student.train.num_steps == 2400
  assert student.init_from == "" and student.loss.distill.teacher == BASE_RUN
  assert (student.loss.distill.cells, student.loss.distill.weight) == ("alignment", 3.0)
  with pytest.raises(ValueError, match="quantizes twice"):
    get_config("qat8+reg4")
  with pytest.raises(ValueError, match="unknown method 'sparse55'"):
    get_config("sparse55")


def test_a_pruned_quantized_run_ends_sparse_on_the_grid_and_eval_reports_it(
    tiny_data_dir, tiny_trained_run, tmp_path, capsys):
  from asr.training.loop import load_for_inference, train
  from experiments import evaluate as eval_cli
  c = get_config("tiny,sparse50+reg8+act8")
  # As the `small` rows do: continue a trained dense model, which has no activation ranges.
  c.init_from = str(tiny_trained_run)
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)
  c.train.num_steps, c.train.log_every = 20, 10
  c.train.eval_every, c.train.checkpoint_every, c.train.eval_max_batches = 20, 20, 1
  summary = train(c, tmp_path / "run")
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  reg = [r["train/loss/quant_reg"] for r in records if "train/loss/quant_reg" in r]
  assert len(reg) == 2 and all(np.isfinite(reg))
  assert np.isfinite(summary["wer"])
  _, _, (params, model_state), step = load_for_inference(tmp_path / "run")
  assert step == 20
  from asr.training.checkpoint import tree_paths
  ranges = {p: float(x) for p, x in tree_paths(model_state) if p.endswith("act_range/value")}
  assert len(ranges) == 6 and all(v > 0 for v in ranges.values())   # calibrated in training
  weights = {name: np.asarray(w) for name, w in Selection().items(params)}
  total = sum(w.size for w in weights.values())
  zeros = sum(int((w == 0).sum()) for w in weights.values())
  # The ramp's end over all the matrices (floor(50%) cut), plus the few kept weights under half
  # a step of the 8-bit grid, which round to zero (LAMP keeps small weights of small matrices).
  assert 0 <= zeros - np.floor(0.5 * total) <= 0.001 * total
  assert len({(w == 0).mean() for w in weights.values()}) > 1   # not every matrix alike
  for name, w in weights.items():
    grid = w / np.asarray(Q.channel_scales(w, 8))
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-3, err_msg=name)
  assert eval_cli.main(["--workdir", str(tmp_path / "run"), "--split", "test",
                        "--max-batches", "1"]) == 0
  report = json.loads((tmp_path / "run" / "eval" / "test_greedy.json").read_text())
  assert report["sparsity"] == pytest.approx(0.5, abs=0.01)
  assert set(report["sparsity_by_layer"]) == set(Selection().names(params))
  assert report["model_bytes_int8_sparse"] < report["model_bytes_int8"] < \
      report["model_bytes_float32"] / 3
  assert "sparse int8" in capsys.readouterr().out
  # On the int8 path (issue 11) with the ranges it trained: the zeros are skipped and left out.
  assert eval_cli.main(["--workdir", str(tmp_path / "run"), "--split", "test",
                        "--max-batches", "1", "--backend", "int8"]) == 0
  int8 = json.loads((tmp_path / "run" / "eval" / "test_greedy_int8.json").read_text())
  assert int8["macs_per_frame_executed"] < 0.55 * int8["macs_per_frame_dense"]
  assert int8["model_bytes"] < 0.22 * int8["model_bytes_float32"]
