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
