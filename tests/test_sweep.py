"""Sweeps and reports: a real two-run local sweep on the tiny corpus, skipping on re-run, a failed
run that does not stop the sweep, bad sweep files, and the report's numbers against the runs'."""

import csv
import itertools
import json
import random

import numpy as np

import pytest
import yaml

from experiments import report, sweep

# A few steps, one bucket (one compilation of the step) and one evaluation batch: the sweep
# machinery is under test, not the model.
_FAST = {"config.train.num_steps": 6, "config.train.eval_every": 6,
         "config.train.checkpoint_every": 6, "config.train.log_every": 3,
         "config.train.eval_max_batches": 1, "config.data.bucket_seconds": "(6.0,)"}


def _write_sweep(tmp_path, name, varied, data_dir, **top):
  params = {"config": {"value": "experiments/configs/rnnt.py:tiny"},
            "config.data.data_dir": {"value": data_dir},
            **{k: {"value": v} for k, v in _FAST.items()}, **varied}
  spec = {"name": name, "program": "experiments/train.py", "method": "grid",
          "metric": {"name": "wer", "goal": "minimize"}, "parameters": params, **top}
  path = tmp_path / f"{name}.yaml"
  path.write_text(yaml.safe_dump(spec))
  return path


def test_two_run_local_sweep_logs_skips_on_rerun_and_reports_its_own_numbers(tiny_data_dir,
                                                                            tmp_path):
  path = _write_sweep(tmp_path, "lrgrid", {"config.optim.peak_lr": {"values": [0.001, 0.003]}},
                      tiny_data_dir)
  root = tmp_path / "sweeps"
  status = sweep.run_local(sweep.load_sweep(path), root, parallel=2)
  assert sorted(status.values()) == ["finished", "finished"]
  workdirs = report.sweep_workdirs("lrgrid", root)
  assert len(workdirs) == 2
  finals = {}
  for w in workdirs:
    final = json.loads((w / "final.json").read_text())
    evals = [json.loads(l)["eval"] for l in (w / "metrics.jsonl").read_text().splitlines()
             if "eval" in json.loads(l)]
    assert final["wer"] == evals[-1]["wer"] and final["step"] == 6
    assert set(report.STANDARD_METRICS) <= set(final)
    # asr-train simulates every evaluation's latency (cpu650 by default): one 30 ms frame of
    # the tiny encoder's work at the least, per utterance.
    assert final["latency_ms_p50"] == evals[-1]["latency_ms_p50"]
    assert final["latency_ms_p90"] >= final["latency_ms_p50"] >= 1000 * final["flops_per_frame"] / 650e6
    # wandb offline, grouped under the sweep's name (the group is in the run record).
    run_files = list(w.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1 and b"lrgrid" in run_files[0].read_bytes()
    finals[w.name] = final

  stamps = {w: (w / "final.json").stat().st_mtime_ns for w in workdirs}
  again = sweep.run_local(sweep.load_sweep(path), root)
  assert sorted(again.values()) == ["skipped", "skipped"]
  assert stamps == {w: (w / "final.json").stat().st_mtime_ns for w in workdirs}

  out = tmp_path / "report"
  assert report.main(["--sweep", "lrgrid", "--root", str(root), "--out", str(out)]) == 0
  for name in ("latency_vs_wer.png", "latency_vs_wer.html", "runs.md", "runs.csv"):
    assert (out / name).stat().st_size > 0
  assert (out / "latency_vs_wer.png").read_bytes()[:4] == b"\x89PNG"
  with (out / "runs.csv").open() as f:
    rows = list(csv.DictReader(f))
  assert {r["run"] for r in rows} == set(finals)
  for r in rows:
    f = finals[r["run"]]
    assert float(r["wer"]) == f["wer"] and float(r["cer"]) == f["cer"]
    assert float(r["flops_per_frame"]) == f["flops_per_frame"]
    assert float(r["flops_per_second"]) == f["flops_per_second"] > 0
    assert int(r["model_bytes"]) == f["model_bytes"] and r["backend"] == "float"
    assert float(r["latency_ms_p50"]) == f["latency_ms_p50"]
    assert float(r["latency_ms_p90"]) == f["latency_ms_p90"]
    assert float(r["config.optim.peak_lr"]) in (0.001, 0.003)
  page = (out / "latency_vs_wer.html").read_text()
  assert all(name in page for name in finals) and "latency p50 on cpu650 (ms)" in page

  # The plane as the edge processor runs it: one run evaluated on the int8 backend, the other
  # not yet (listed, empty, not plotted).
  from experiments import evaluate as eval_cli
  int8_run, other = workdirs
  assert eval_cli.main(["--workdir", str(int8_run), "--split", "test", "--backend", "int8",
                        "--max-batches", "1", "--calibration-batches", "1"]) == 0
  summary = json.loads((int8_run / "eval" / "test_greedy_int8.json").read_text())
  out = tmp_path / "report_int8"
  assert report.main(["--sweep", "lrgrid", "--root", str(root), "--eval", "test_greedy_int8",
                      "--out", str(out)]) == 0
  with (out / "runs.csv").open() as f:
    rows = {r["run"]: r for r in csv.DictReader(f)}
  assert rows[int8_run.name]["status"] == "evaluated" and rows[int8_run.name]["backend"] == "int8"
  for key in ("wer", "cer", "latency_ms_p50", "flops_per_second"):
    assert float(rows[int8_run.name][key]) == summary[key]
  # Its weights in the compressed format, not the float model's bytes of its final evaluation.
  assert int(rows[int8_run.name]["model_bytes"]) == summary["model_bytes"] < \
      finals[int8_run.name]["model_bytes"]
  assert rows[other.name]["status"] == "no eval/test_greedy_int8.json"
  assert rows[other.name]["wer"] == ""
  page = (out / "latency_vs_wer.html").read_text()
  assert "latency p50 on npu (ms)" in page and "test_greedy_int8" in page


def _run_row(run, method, seed, wer, latency, family="lstm-rnnt"):
  params = {"config": f"experiments/configs/compression.py:{method}"}
  if seed is not None:
    params["config.seed"] = seed
  row = {"run": run, "family": family, "params": params, "wer": wer, "latency_ms_p50": latency,
         "flops_per_second": 1e6, "profile": "npu"}
  return {**{k: None for k in report.COLUMNS}, **row}


def test_runs_that_differ_only_in_their_seed_are_pooled_with_their_spread(tmp_path):
  wers, latencies = {"dense": [0.30, 0.33, 0.31], "sparse50": [0.34, 0.32, 0.36]}, [0.8, 0.5]
  rows = [_run_row(f"{m}_{s}", m, s, w, lat) for (m, ws), lat in zip(wers.items(), latencies)
          for s, w in enumerate(ws)]
  rows.append(_run_row("sparse80_0", "sparse80", 0, None, None))   # not evaluated: left out
  pools = report.seed_pools(rows)
  assert [p["run"] for p in pools] == ["config=compression.py:dense",
                                       "config=compression.py:sparse50"]
  for p, ws in zip(pools, wers.values()):
    assert p["seeds"] == [0, 1, 2]
    assert p["wer"] == pytest.approx(np.mean(ws)) and p["wer_std"] == pytest.approx(np.std(ws, ddof=1))
    assert (p["wer_min"], p["wer_max"]) == (min(ws), max(ws))
  assert pools[1]["latency_ms_p50"] == pytest.approx(0.5) and pools[1]["latency_ms_p50_std"] == 0
  assert report.seed_pools([_run_row("a", "dense", None, 0.3, 0.8)]) == []

  out = tmp_path / "report"
  paths = report.write_report(rows, out, "pooled")
  assert str(out / "seeds.md") in paths
  md = (out / "seeds.md").read_text()
  assert "| config=compression.py:sparse50 | lstm-rnnt | 0, 1, 2 | 34.00% ± 2.00% [32.00%, 36.00%]" in md
  with (out / "seeds.csv").open() as f:
    pooled = {r["run"]: r for r in csv.DictReader(f)}
  assert float(pooled["config=compression.py:dense"]["wer_max"]) == 0.33
  # A later report of runs with no seed varied leaves no stale pooled table behind.
  report.write_report([_run_row("a", "dense", None, 0.3, 0.8)], out, "one")
  assert not (out / "seeds.md").exists()


def test_the_compute_plane_plots_encoder_flops_per_frame(tmp_path):
  rows = [dict(_run_row(f"g{i}", "dense", None, w, 0.5), flops_per_frame=f)
          for i, (w, f) in enumerate([(0.20, 3.3e6), (0.21, 1.25e6), (0.25, 1.5e6)])]
  x_key, label, plotted = report.plot_axes(rows, "compute")
  assert x_key == "flops_per_frame" and "MFLOPs" in label and len(plotted) == 3
  assert [report._x_value(r, x_key) for r in plotted] == pytest.approx([3.3, 1.25, 1.5])
  paths = report.write_report(rows, tmp_path, "cat", x="compute")
  assert str(tmp_path / "compute_vs_wer.png") in paths
  assert (tmp_path / "compute_vs_wer.png").stat().st_size > 0
  page = (tmp_path / "compute_vs_wer.html").read_text()
  assert "encoder compute per output frame (MFLOPs)" in page
  # The front: 3.3M at 20% and 1.25M at 21% (1.5M at 25% is beaten by 1.25M at 21%).
  xs = [report._x_value(r, x_key) for r in plotted]
  assert sorted(report.pareto_front(list(zip(xs, [r["wer"] for r in plotted])))) == [0, 1]


def test_the_compute_plane_joins_each_familys_points_in_order_of_compute(tmp_path):
  # gated at 3.0M, 1.0M, 2.0M and windowed at 3.2M, 3.1M; one ungated point joins nothing.
  points = [("gated", 3.0e6), ("gated", 1.0e6), ("window", 3.2e6), ("ungated", 3.3e6),
            ("gated", 2.0e6), ("window", 3.1e6)]
  xs = [f / 1e6 for _, f in points]
  assert report.family_curves(xs, [fam for fam, _ in points]) == {"gated": [1, 4, 0],
                                                                  "window": [5, 2]}
  # Each variant on two seeds: the plot draws the pools' means, and joins those.
  rows = [dict(_run_row(f"r{i}_{seed}", f"v{i}", seed, 0.2 + 0.01 * i + 0.002 * seed, 0.5,
                        family=fam), flops_per_frame=f)
          for i, (fam, f) in enumerate(points) for seed in (0, 1)]
  fig = report.write_png(rows, tmp_path / "compute.png", "cat", x="compute")
  joined = sorted((list(line.get_xdata()), [round(y, 6) for y in line.get_ydata()])
                  for line in fig.axes[0].lines if line.get_linestyle() == "-")
  assert joined == [([1.0, 2.0, 3.0], [21.1, 24.1, 20.1]), ([3.1, 3.2], [25.1, 22.1])]
  report.write_report(rows, tmp_path, "cat", x="compute")
  page = (tmp_path / "compute_vs_wer.html").read_text()
  assert page.count('class="curve"') == 2 and "joined in order of compute" in page
  # The latency plane joins nothing: its families are not one swept parameter's curve.
  fig = report.write_png(rows, tmp_path / "latency.png", "cat")
  assert not [line for line in fig.axes[0].lines if line.get_linestyle() == "-"]
  report.write_report(rows, tmp_path, "cat")
  assert 'class="curve"' not in (tmp_path / "latency_vs_wer.html").read_text()


def test_a_failed_run_is_reported_and_the_sweep_goes_on(tiny_data_dir, tmp_path, capsys):
  # tiny has one encoder layer, so a time reduction inside it is refused at model build.
  path = _write_sweep(tmp_path, "bad", {"config.model.lstm.reduce": {"values": [2]},
                                        "config.optim.peak_lr": {"values": [0.001]}},
                      tiny_data_dir)
  root = tmp_path / "sweeps"
  assert sweep.main([str(path), "--local", "--root", str(root)]) == 1
  status = json.loads((root / "bad" / "status.json").read_text())
  assert list(status.values()) == ["failed"]
  out = capsys.readouterr()
  assert "FAILED" in out.out + out.err and "reduce_after" in out.out + out.err


@pytest.mark.parametrize("edit, message", [
    ({"paramters": {}}, "unknown top-level key(s) ['paramters']"),
    ({"parameters": {"config": {"value": "experiments/configs/rnnt.py:tiny"},
                     "config.optim.peak_lrr": {"values": [1]}}}, "no key 'optim.peak_lrr'"),
    ({"parameters": {"config": {"value": "experiments/configs/rnnt.py:tiny"},
                     "config.optim.peak_lr": {"valuse": [1]}}}, "unknown key(s) ['valuse']"),
    ({"parameters": {"config": {"value": "experiments/configs/rnnt.py:tiny"},
                     "config.optim.peak_lr": {"distribution": "lognormal", "min": 1, "max": 2}}},
     "unknown distribution 'lognormal'"),
    ({"method": "hyperband"}, "method 'hyperband'"),
    ({"parameters": {"config": {"value": "nowhere.py:tiny"}}}, "no config file 'nowhere.py'"),
    ({"parameters": {"config": {"values": ["experiments/configs/compression.py:tiny,qat8",
                                           "experiments/configs/rnnt.py:tiny"]},
                     "config.method": {"value": "qat4"}}},   # every recipe is checked
     "rnnt.py:tiny has no key 'method'"),
])
def test_a_bad_sweep_file_fails_with_the_key_named(tmp_path, capsys, edit, message):
  spec = {"program": "experiments/train.py", "method": "grid",
          "parameters": {"config": {"value": "experiments/configs/rnnt.py:tiny"},
                         "config.optim.peak_lr": {"values": [0.001]}}}
  spec.update(edit)
  path = tmp_path / "s.yaml"
  path.write_text(yaml.safe_dump(spec))
  with pytest.raises(sweep.SweepError) as e:
    sweep.load_sweep(path)
  assert message in str(e.value) and str(path) in str(e.value)
  assert sweep.main([str(path), "--local", "--root", str(tmp_path)]) == 2
  assert message in capsys.readouterr().err


def _spec(tmp_path, method, parameters, **top):
  path = tmp_path / "s.yaml"
  path.write_text(yaml.safe_dump({"name": "s", "program": "experiments/train.py",
                                  "method": method, "parameters": {
                                      "config": {"value": "experiments/configs/rnnt.py:tiny"},
                                      **parameters}, **top}))
  return sweep.load_sweep(path)


def test_grid_is_the_full_product_with_unique_names(tmp_path):
  s = _spec(tmp_path, "grid", {"config.optim.peak_lr": {"values": [0.001, 0.003, 0.01]},
                               "config.model.lstm.hidden": {"values": [32, 64]},
                               "config.seed": {"value": 7}})
  runs = sweep.expand_runs(s)
  got = {(r.params["config.optim.peak_lr"], r.params["config.model.lstm.hidden"]) for r in runs}
  assert got == set(itertools.product([0.001, 0.003, 0.01], [32, 64]))
  assert all(r.params["config.seed"] == 7 for r in runs)
  assert len({r.name for r in runs}) == 6 and all("seed" not in r.name for r in runs)


def test_every_committed_sweep_loads_and_a_grid_over_recipes_names_each_run_by_its_recipe():
  import pathlib
  files = sorted(pathlib.Path("experiments/sweeps").glob("*.yaml"))
  assert len(files) >= 3
  for f in files:
    sweep.expand_runs(sweep.load_sweep(f), max_runs=50)
  import yaml
  path = "experiments/sweeps/compression.yaml"
  recipes = yaml.safe_load(open(path))["parameters"]["config"]["values"]
  runs = sweep.expand_runs(sweep.load_sweep(path))
  assert [r.name.rsplit("_", 1)[0] for r in runs][:2] == ["config=compression.py-dense",
                                                          "config=compression.py-sparse50"]
  assert len(recipes) >= 18                    # one run per recipe, each named apart
  assert len({r.name for r in runs}) == len(runs) == len(recipes)


def test_random_draws_are_reproducible_and_inside_their_distributions(tmp_path):
  s = _spec(tmp_path, "random", {
      "config.optim.peak_lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
      "config.model.lstm.hidden": {"min": 16, "max": 64},  # ints: int_uniform, as wandb infers
      "config.optim.weight_decay": {"distribution": "q_uniform", "min": 0.0, "max": 1.0,
                                    "q": 0.25},
      "config.model.predictor": {"values": ["lstm", "stateless"], "probabilities": [0.5, 0.5]}},
      run_cap=40)
  runs = sweep.expand_runs(s)
  assert [r.params for r in runs] == [r.params for r in sweep.expand_runs(s)]
  assert len(runs) == 40
  for r in runs:
    p = r.params
    assert 1e-4 <= p["config.optim.peak_lr"] <= 1e-2
    assert isinstance(p["config.model.lstm.hidden"], int) and 16 <= p["config.model.lstm.hidden"] <= 64
    assert p["config.optim.weight_decay"] in (0.0, 0.25, 0.5, 0.75, 1.0)
  assert {r.params["config.model.predictor"] for r in runs} == {"lstm", "stateless"}
  with pytest.raises(sweep.SweepError, match="run_cap"):
    sweep.expand_runs(_spec(tmp_path, "random", {"config.seed": {"values": [1, 2]}}))


def test_local_command_fills_wandbs_macros_as_its_agent_does(tmp_path):
  from wandb.sdk.launch.sweeps import utils as sweep_utils
  s = _spec(tmp_path, "grid", {"config.optim.peak_lr": {"values": [0.003]}},
            command=["${env}", "${interpreter}", "${program}", "--extra", "${args}"])
  run = sweep.expand_runs(s)[0]
  cmd = sweep.command_for(s, run, tmp_path / "w")
  agent = sweep_utils.create_sweep_command_args(
      {"args": {k: {"value": v} for k, v in run.params.items()}})
  assert cmd[1:3] == ["experiments/train.py", "--extra"]
  assert cmd[3:3 + len(run.params)] == agent["args"]
  assert cmd[-3:] == [f"--workdir={tmp_path / 'w'}", "--config.wandb.group=s",
                      f"--config.wandb.name={run.name}"]


def test_pareto_front_equals_brute_force():
  rng = random.Random(0)
  for _ in range(50):
    pts = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(rng.randint(1, 12))]
    front = report.pareto_front(pts)
    dominated = {i for i, p in enumerate(pts) for q in pts
                 if q[0] <= p[0] and q[1] <= p[1] and q != p}
    # Equal points: the first of them in the order is kept.
    expected = {i for i in range(len(pts)) if i not in dominated and pts.index(pts[i]) == i}
    assert set(front) == expected
    assert [pts[i][0] for i in front] == sorted(pts[i][0] for i in front)


def test_report_reads_an_unfinished_run_from_its_newest_evaluation(tmp_path):
  w = tmp_path / "run"
  (w / "eval").mkdir(parents=True)
  (w / "config.json").write_text(json.dumps({"family": "lstm-rnnt"}))
  (w / "metrics.jsonl").write_text(json.dumps({"model_bytes": 1234}) + "\n")
  for step, wer in ((100, 0.5), (1000, 0.25), (300, 0.4)):
    (w / "eval" / f"step_{step}.json").write_text(json.dumps(
        {"wer": wer, "cer": wer / 2, "flops_per_frame": 2e6, "flops_per_second": 5e7,
         "backend": "float"}))
  (row,) = report.collect_runs([w])
  assert (row["status"], row["step"], row["wer"], row["model_bytes"]) == ("unfinished", 1000,
                                                                         0.25, 1234)
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "config.json").write_text("{}")
  (row,) = report.collect_runs([tmp_path / "empty"])
  assert row["status"] == "no evaluation yet" and row["wer"] is None
  report.write_report(report.collect_runs([w, tmp_path / "empty"]), tmp_path / "out")
  assert "| run |" in (tmp_path / "out" / "runs.md").read_text()
  # Runs evaluated without a latency simulator are drawn against compute, and it says so.
  assert "no latency simulated yet" in (tmp_path / "out" / "latency_vs_wer.html").read_text()


def test_without_local_and_without_an_account_says_how_to_log_in_or_run_locally(tmp_path,
                                                                                monkeypatch):
  monkeypatch.delenv("WANDB_API_KEY", raising=False)
  for var in ("HOME", "WANDB_CONFIG_DIR", "WANDB_DIR"):
    monkeypatch.setenv(var, str(tmp_path))
  monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
  with pytest.raises(SystemExit) as e:
    sweep.main(["experiments/sweeps/tiny_lr.yaml"])
  assert "wandb login" in str(e.value) and "--local" in str(e.value)
