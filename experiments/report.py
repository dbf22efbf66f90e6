"""`asr-report WORKDIR... | --sweep NAME [--root workdirs/sweeps]  --out DIR`: the
latency-versus-WER plane of a set of runs, from their workdirs (no wandb server needed).

Writes into DIR:
- `latency_vs_wer.png`: one point per run, WER against latency (p50), one colour per model
  family, marker area by compute per second of audio, the Pareto front (no run both faster and
  better) joined and ringed. Where a run was evaluated without a latency simulator (`asr-train`
  simulates on `train.latency_profile`, cpu650 by default), the x axis is
  the compute per second of audio instead (`flops_per_second`: encoder and decoding, so models
  of different frame rates compare), and says so: latency is never invented.
- `latency_vs_wer.html`: the same plot, self-contained (hover a point for its run and numbers),
  with the table below it (click a column to sort).
- `runs.md` and `runs.csv`: every run with `wer, cer, flops_per_frame, flops_per_second, latency_ms_p50,
  latency_ms_p90, model_bytes, sparsity, backend`, its family, step, status and the values
  its sweep varied.

A run's numbers are its `final.json` (written when it finished), else its newest evaluation
(status `unfinished`); a run with no evaluation yet is listed with empty numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import sys

from asr.training.logger import STANDARD_METRICS

COLUMNS = ("run", "family", "step", "status") + STANDARD_METRICS
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def read_run(workdir: pathlib.Path) -> dict:
  """One row of the report for a run workdir."""
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise FileNotFoundError(f"{workdir}: no config.json, so not a run workdir")
  config = json.loads(config_path.read_text())
  row = {"run": workdir.name, "workdir": str(workdir),
         "family": config.get("family") or f"{config.get('model', {}).get('encoder', '')}-rnnt",
         "params": {}}
  sweep_params = workdir / "sweep_params.json"
  if sweep_params.exists():  # the values this run's sweep varied
    record = json.loads(sweep_params.read_text())
    row["params"] = {k: record["params"][k] for k in record["varying"]}
  if (workdir / "final.json").exists():
    row.update(json.loads((workdir / "final.json").read_text()), status="finished")
    return row
  evals = sorted((workdir / "eval").glob("step_*.json"),
                 key=lambda p: int(p.stem.removeprefix("step_")))
  static = {}
  if (workdir / "metrics.jsonl").exists():
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
      record = json.loads(line)
      static.update({k: record[k] for k in ("model_bytes",) if k in record})
  row.update(static)
  if evals:
    summary = json.loads(evals[-1].read_text())
    row.update({k: summary.get(k) for k in STANDARD_METRICS if k in summary},
               step=int(evals[-1].stem.removeprefix("step_")), status="unfinished")
  else:
    row["status"] = "no evaluation yet"
  return row


def collect_runs(workdirs) -> list[dict]:
  rows = [read_run(w) for w in workdirs]
  for r in rows:
    for k in COLUMNS:
      r.setdefault(k, None)
  return rows


def sweep_workdirs(name: str, root: str | pathlib.Path) -> list[pathlib.Path]:
  sweep_dir = pathlib.Path(root) / name
  runs = sorted(p.parent for p in sweep_dir.glob("*/config.json"))
  if not runs:
    raise FileNotFoundError(f"no runs of sweep {name!r} in {sweep_dir}")
  return runs


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
  """Indices of the points no other point beats on both coordinates (lower is better on
  both), ordered by the first coordinate."""
  order = sorted(range(len(points)), key=lambda i: points[i])
  front, best = [], math.inf
  for i in order:
    if points[i][1] < best:
      front.append(i)
      best = points[i][1]
  return front


def plot_axes(rows: list[dict]) -> tuple[str, str, list[dict]]:
  """(x key, x label, plottable rows): latency when every evaluated run has it, else compute."""
  rows = [r for r in rows if r.get("wer") is not None]
  if rows and all(r.get("latency_ms_p50") is not None for r in rows):
    return "latency_ms_p50", "latency p50 (ms)", rows
  return ("flops_per_second", "compute per second of audio (MFLOP/s); no latency simulated yet",
          [r for r in rows if r.get("flops_per_second") is not None])


def _x_value(row, x_key):
  return row[x_key] / 1e6 if x_key == "flops_per_second" else row[x_key]


def _sizes(rows) -> list[float]:
  """Marker areas (points^2) from 40 to 400 by compute per second of audio."""
  flops = [r.get("flops_per_second") or 0.0 for r in rows]
  lo, hi = min(flops, default=0), max(flops, default=0)
  return [40 + 360 * ((f - lo) / (hi - lo) if hi > lo else 0.5) for f in flops]


def _colours(rows) -> dict[str, str]:
  families = sorted({r["family"] for r in rows})
  return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}


def write_png(rows: list[dict], path: pathlib.Path, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  x_key, x_label, rows = plot_axes(rows)
  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  colours = _colours(rows)
  xs = [_x_value(r, x_key) for r in rows]
  ys = [100 * r["wer"] for r in rows]
  sizes = _sizes(rows)
  for family, colour in colours.items():
    idx = [i for i, r in enumerate(rows) if r["family"] == family]
    ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=[sizes[i] for i in idx],
               c=colour, alpha=0.75, label=family, edgecolors="white", linewidths=0.5)
  front = pareto_front(list(zip(xs, ys)))
  if front:
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "k--", lw=1, label="Pareto front")
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=[sizes[i] * 1.8 for i in front],
               facecolors="none", edgecolors="black", linewidths=1.2)
  for x, y, r in zip(xs, ys, rows):
    ax.annotate(r["run"][:24], (x, y), fontsize=6, xytext=(4, 4), textcoords="offset points")
  ax.set_xlabel(x_label)
  ax.set_ylabel("WER (%)")
  ax.set_title(title + "  (marker area: FLOPs per second of audio)", fontsize=10)
  ax.grid(alpha=0.3)
  if rows:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _fmt(key: str, value) -> str:
  if value is None:
    return ""
  if key in ("wer", "cer", "sparsity") and isinstance(value, (int, float)):
    return f"{100 * value:.2f}%"
  if key in ("flops_per_frame", "flops_per_second"):
    return f"{value / 1e6:.3f}M"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def _param_keys(rows) -> list[str]:
  return sorted({k for r in rows for k in r["params"]})


def write_tables(rows: list[dict], out: pathlib.Path) -> None:
  params = _param_keys(rows)
  with (out / "runs.csv").open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(list(COLUMNS) + params)
    for r in rows:
      w.writerow([("" if r[k] is None else r[k]) for k in COLUMNS] +
                 [r["params"].get(p, "") for p in params])
  head = list(COLUMNS) + [p.removeprefix("config.") for p in params]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    lines.append("| " + " | ".join([_fmt(k, r[k]) for k in COLUMNS] +
                                   [_fmt(p, r["params"].get(p)) for p in params]) + " |")
  (out / "runs.md").write_text("\n".join(lines) + "\n")


def write_html(rows: list[dict], path: pathlib.Path, title: str) -> None:
  from experiments.report_html import page
  x_key, x_label, plotted = plot_axes(rows)
  points = [{"x": _x_value(r, x_key), "y": 100 * r["wer"], "run": r["run"],
             "family": r["family"], "size": s,
             "tip": " | ".join(f"{k} {_fmt(k, r[k])}" for k in COLUMNS if r[k] is not None)}
            for r, s in zip(plotted, _sizes(plotted))]
  front = pareto_front([(p["x"], p["y"]) for p in points])
  params = _param_keys(rows)
  header = list(COLUMNS) + [p.removeprefix("config.") for p in params]
  table = [[(_fmt(k, r[k]), r[k] if isinstance(r[k], (int, float)) else None) for k in COLUMNS] +
           [(_fmt(p, r["params"].get(p)), r["params"].get(p)
             if isinstance(r["params"].get(p), (int, float)) else None) for p in params]
           for r in rows]
  path.write_text(page(title, points, front, _colours(plotted), x_label, header, table))


def write_report(rows: list[dict], out: pathlib.Path, title: str = "latency vs WER") -> list[str]:
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  write_png(rows, out / "latency_vs_wer.png", title)
  write_html(rows, out / "latency_vs_wer.html", title)
  write_tables(rows, out)
  return [str(out / n) for n in ("latency_vs_wer.png", "latency_vs_wer.html", "runs.md", "runs.csv")]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="asr-report", description=__doc__.split("\n\n")[0])
  p.add_argument("workdirs", nargs="*", help="run workdirs")
  p.add_argument("--sweep", help="a local sweep's name: its runs in ROOT/NAME/*")
  p.add_argument("--root", default="workdirs/sweeps",
                 help="the folder holding the sweeps' runs (one workdir per run)")
  p.add_argument("--out", required=True, help="the folder the table, plots and HTML go to")
  args = p.parse_args(argv)
  if bool(args.workdirs) == bool(args.sweep):
    p.error("give run workdirs or --sweep NAME (one of the two)")
  try:
    workdirs = sweep_workdirs(args.sweep, args.root) if args.sweep else args.workdirs
    rows = collect_runs(workdirs)
  except FileNotFoundError as e:
    print(f"asr-report: {e}", file=sys.stderr)
    return 2
  paths = write_report(rows, pathlib.Path(args.out), args.sweep or "latency vs WER")
  print((pathlib.Path(args.out) / "runs.md").read_text())
  print("wrote " + ", ".join(paths))
  return 0


if __name__ == "__main__":
  sys.exit(main())
