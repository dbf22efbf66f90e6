"""`asr-report WORKDIR... | --sweep NAME [--root workdirs/sweeps] [--eval NAME] [--x compute]
--out DIR`: the latency-versus-WER plane of a set of runs, from their workdirs (no wandb server
needed).

Writes into DIR:
- `latency_vs_wer.png`: one point per run, WER against latency (p50), one colour per model
  family, marker area by compute per second of audio, the Pareto front (no run both faster and
  better) joined and ringed. Where a run was evaluated without a latency simulator (`asr-train`
  simulates on `train.latency_profile`, cpu650 by default), the x axis is
  the compute per second of audio instead (`flops_per_second`: encoder and decoding, so models
  of different frame rates compare), and says so: latency is never invented.
- `latency_vs_wer.html`: the same plot, self-contained (hover a point for its run and numbers),
  with the table below it (click a column to sort).
- with `--x compute`, `compute_vs_wer.png` and `.html` instead: WER against the encoder's
  FLOPs per output frame (the plane of encoders whose compute follows the input, where the
  latency a processor adds is not the question), each family's points joined in order of
  compute: the curve its swept weight or window traces (a gated and a windowed curve).
- `seeds.md` and `seeds.csv`, when the runs vary `config.seed`: the runs that differ only in
  their seed pooled, each metric's mean with the sample standard deviation, minimum and maximum
  over the seeds beside it; the plot then draws each pool's mean with bars from its best seed
  to its worst on both axes (its seeds' runs faint behind it), and the front joins the means.
- `runs.md` and `runs.csv`: every run with `wer, cer, flops_per_frame, flops_per_second, latency_ms_p50,
  latency_ms_p90, model_bytes, sparsity, backend, flops_per_frame_executed, fast_fraction,
  open_fraction, wer_beam`
  (the encoder's FLOPs on non-zero weights, where it reports them; a branching encoder's share
  of frames sent to its cheap branch and a gated encoder's share of open sub-block gates,
  empty for other models; the WER with beam search, where the final evaluation ran one),
  its family, step, status and
  the values its sweep varied.

A run's numbers are its `final.json` (written when it finished), else its newest evaluation
(status `unfinished`); a run with no evaluation yet is listed with empty numbers. With
`--eval NAME` they are its `eval/NAME.json` instead, an `asr-eval` summary (status
`evaluated`, or `no eval/NAME.json` and empty numbers): `--eval test_greedy_int8` puts every
run on the plane as the edge processor runs it (`asr-eval --split test --backend int8`: the
int8 model, its zero weights skipped, its latency simulated on the NPU profile), where
training's own evaluations run the float model on `train.latency_profile`, so a pruned or
quantized run costs there what its dense model does.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import pathlib
import sys

from asr.training.logger import STANDARD_METRICS
from experiments.sweep import short_value

# Beside the standard metrics: the encoder's FLOPs on non-zero weights, a branching encoder's
# share of frames routed to its cheap branch, a gated encoder's share of open gates, and the
# WER with beam search where the run's final evaluation decoded with one (`train.eval_beam`);
# each empty where a run has none.
METRICS = STANDARD_METRICS + ("flops_per_frame_executed", "fast_fraction", "open_fraction",
                              "wer_beam")
COLUMNS = ("run", "family", "step", "status") + METRICS
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def read_run(workdir: pathlib.Path, evaluation: str | None = None) -> dict:
  """One row of the report for a run workdir: its final or newest evaluation, or with
  `evaluation` its `eval/<evaluation>.json`."""
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
  if evaluation:
    path = workdir / "eval" / f"{evaluation}.json"
    if not path.exists():
      return dict(row, status=f"no eval/{evaluation}.json")
    summary = json.loads(path.read_text())
    row.update({k: summary.get(k) for k in ("step", "profile", *METRICS)},
               status="evaluated")
    return row
  # Training simulates its evaluations' latency on this profile.
  row["profile"] = config.get("train", {}).get("latency_profile") or None
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
    row.update({k: summary.get(k) for k in METRICS if k in summary},
               step=int(evals[-1].stem.removeprefix("step_")), status="unfinished")
  else:
    row["status"] = "no evaluation yet"
  return row


def collect_runs(workdirs, evaluation: str | None = None) -> list[dict]:
  rows = [read_run(w, evaluation) for w in workdirs]
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


SEED = "config.seed"
POOLED = ("wer", "cer", "latency_ms_p50", "latency_ms_p90", "flops_per_frame",
          "flops_per_frame_executed", "flops_per_second", "model_bytes", "sparsity",
          "fast_fraction", "open_fraction", "wer_beam")


def seed_pools(rows: list[dict]) -> list[dict]:
  """The evaluated runs that differ only in `config.seed`, pooled, in the runs' order: `run`
  (the other varied values), `family`, `seeds`, and for each of POOLED its mean, `_std` (sample
  standard deviation; 0 for one seed), `_min` and `_max`. [] when no run varies the seed."""
  if not any(SEED in r["params"] for r in rows):
    return []
  pools: dict[str, list[dict]] = {}
  for r in rows:
    if r.get("wer") is not None:
      label = " ".join(f"{k.removeprefix('config.')}={short_value(v)}"
                       for k, v in sorted(r["params"].items()) if k != SEED)
      pools.setdefault(label or "all", []).append(r)
  out = []
  for label, runs in pools.items():
    pool = {"run": label, "family": runs[0]["family"], "profile": runs[0].get("profile"),
            "seeds": [r["params"].get(SEED) for r in runs]}
    for k in POOLED:
      values = [r[k] for r in runs if r.get(k) is not None]
      if len(values) == len(runs):
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)
        pool.update({k: mean, f"{k}_std": math.sqrt(var), f"{k}_min": min(values),
                     f"{k}_max": max(values)})
    out.append(pool)
  return out


def write_seed_tables(pools: list[dict], out: pathlib.Path) -> None:
  stats = [k for k in POOLED if any(k in p for p in pools)]
  with (out / "seeds.csv").open("w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "family", "seeds"] + [f"{k}{s}" for k in stats
                                             for s in ("", "_std", "_min", "_max")])
    for p in pools:
      w.writerow([p["run"], p["family"], " ".join(map(str, p["seeds"]))] +
                 [p.get(f"{k}{s}", "") for k in stats for s in ("", "_std", "_min", "_max")])
  lines = ["| run | family | seeds | " + " | ".join(f"{k} mean ± std [min, max]" for k in stats)
           + " |", "|" + " --- |" * (3 + len(stats))]
  for p in pools:
    cells = [f"{_fmt(k, p[k])} ± {_fmt(k, p[f'{k}_std'])} [{_fmt(k, p[f'{k}_min'])}, "
             f"{_fmt(k, p[f'{k}_max'])}]" if k in p else "" for k in stats]
    lines.append(f"| {p['run']} | {p['family']} | {', '.join(map(str, p['seeds']))} | "
                 + " | ".join(cells) + " |")
  (out / "seeds.md").write_text("\n".join(lines) + "\n")


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


def family_curves(xs: list[float], families: list[str]) -> dict[str, list[int]]:
  """Each family with two or more points: its points' indices in order of x (the curve a
  family's swept parameter traces on the compute plane)."""
  curves = {}
  for family in sorted(set(families)):
    idx = sorted((i for i, f in enumerate(families) if f == family), key=lambda i: xs[i])
    if len(idx) > 1:
      curves[family] = idx
  return curves


def plot_axes(rows: list[dict], x: str = "latency") -> tuple[str, str, list[dict]]:
  """(x key, x label, plottable rows): for `x="latency"`, latency when every evaluated run has
  it, else compute per second of audio; for `x="compute"`, the encoder's FLOPs per frame."""
  rows = [r for r in rows if r.get("wer") is not None]
  if x == "compute":
    return ("flops_per_frame", "encoder compute per output frame (MFLOPs)",
            [r for r in rows if r.get("flops_per_frame") is not None])
  if rows and all(r.get("latency_ms_p50") is not None for r in rows):
    profiles = {r.get("profile") for r in rows}
    where = f" on {profiles.pop()}" if len(profiles) == 1 and None not in profiles else ""
    return "latency_ms_p50", f"latency p50{where} (ms)", rows
  return ("flops_per_second", "compute per second of audio (MFLOP/s); no latency simulated yet",
          [r for r in rows if r.get("flops_per_second") is not None])


def _x_value(row, x_key):
  return row[x_key] / 1e6 if x_key.startswith("flops_per_") else row[x_key]


def _sizes(rows) -> list[float]:
  """Marker areas (points^2) up to 400, in proportion to compute per second of audio (not
  stretched from the smallest to the largest: runs a thousandth apart look alike)."""
  flops = [r.get("flops_per_second") or 0.0 for r in rows]
  hi = max(flops, default=0)
  return [40 + 360 * (f / hi if hi > 0 else 0.5) for f in flops]


def _colours(rows) -> dict[str, str]:
  families = sorted({r["family"] for r in rows})
  return {f: PALETTE[i % len(PALETTE)] for i, f in enumerate(families)}


def write_png(rows: list[dict], path: pathlib.Path, title: str, x: str = "latency"):
  """Draws the plane into `path`; returns the matplotlib Figure."""
  # A figure of its own (no pyplot): the caller's backend (a notebook's inline plots) stays.
  from matplotlib.figure import Figure
  x_key, x_label, rows = plot_axes(rows, x)
  fig = Figure(figsize=(7, 4.5), dpi=120)
  ax = fig.subplots()
  colours = _colours(rows)
  pools = seed_pools(rows)
  if pools:   # each seed's run faint; the pools' means are the points that follow
    ax.scatter([_x_value(r, x_key) for r in rows], [100 * r["wer"] for r in rows], s=12,
               c=[colours[r["family"]] for r in rows], alpha=0.3, linewidths=0)
    for p in pools:
      px, lo, hi = (_x_value(p, x_key + s) for s in ("", "_min", "_max"))
      py = 100 * p["wer"]   # (a mean of equal values can round past them: bars clipped at 0)
      ax.errorbar(px, py, xerr=[[max(px - lo, 0)], [max(hi - px, 0)]],
                  yerr=[[max(py - 100 * p["wer_min"], 0)], [max(100 * p["wer_max"] - py, 0)]],
                  fmt="none", ecolor=colours[p["family"]], elinewidth=1, capsize=2, alpha=0.8)
    rows = pools
  xs = [_x_value(r, x_key) for r in rows]
  ys = [100 * r["wer"] for r in rows]
  sizes = _sizes(rows)
  for family, colour in colours.items():
    idx = [i for i, r in enumerate(rows) if r["family"] == family]
    ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=[sizes[i] for i in idx],
               c=colour, alpha=0.75, label=family, edgecolors="white", linewidths=0.5)
  if x == "compute":
    for family, idx in family_curves(xs, [r["family"] for r in rows]).items():
      ax.plot([xs[i] for i in idx], [ys[i] for i in idx], "-", c=colours[family], lw=1.2,
              alpha=0.8)
  front = pareto_front(list(zip(xs, ys)))
  if front:
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "k--", lw=1, label="Pareto front")
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=[sizes[i] * 1.8 for i in front],
               facecolors="none", edgecolors="black", linewidths=1.2)
  for px, py, r in zip(xs, ys, rows):
    ax.annotate(r["run"].removeprefix("config=")[:32], (px, py), fontsize=6, xytext=(4, 4),
                textcoords="offset points")
  if xs and min(xs) > 0 and max(xs) > 100 * min(xs):   # milliseconds to seconds: a log axis
    ax.set_xscale("log")
    x_label += ", log scale"
  ax.set_xlabel(x_label)
  ax.set_ylabel("WER (%)")
  ax.set_title(title + "  (marker area: FLOPs per second of audio)", fontsize=10)
  if pools:
    ax.set_ylabel("WER (%): mean over seeds, bars from best to worst")
  ax.grid(alpha=0.3)
  if rows:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  return fig


def _fmt(key: str, value) -> str:
  if value is None:
    return ""
  if key in ("wer", "cer", "sparsity", "fast_fraction", "open_fraction",
             "wer_beam") and isinstance(value, (int, float)):
    return f"{100 * value:.2f}%"
  if key in ("flops_per_frame", "flops_per_frame_executed", "flops_per_second"):
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


def write_html(rows: list[dict], path: pathlib.Path, title: str, x: str = "latency") -> None:
  from experiments.report_html import page
  x_key, x_label, plotted = plot_axes(rows, x)
  points = [{"x": _x_value(r, x_key), "y": 100 * r["wer"], "run": r["run"],
             "family": r["family"], "size": s,
             "tip": " | ".join(f"{k} {_fmt(k, r[k])}" for k in COLUMNS if r[k] is not None)}
            for r, s in zip(plotted, _sizes(plotted))]
  front = pareto_front([(p["x"], p["y"]) for p in points])
  curves = {}
  if x == "compute":   # through the seeds' means where the runs vary the seed, as in the PNG
    means = seed_pools(plotted) or plotted
    cx, cy = [_x_value(r, x_key) for r in means], [100 * r["wer"] for r in means]
    curves = {family: [(cx[i], cy[i]) for i in idx]
              for family, idx in family_curves(cx, [r["family"] for r in means]).items()}
  params = _param_keys(rows)
  header = list(COLUMNS) + [p.removeprefix("config.") for p in params]
  table = [[(_fmt(k, r[k]), r[k] if isinstance(r[k], (int, float)) else None) for k in COLUMNS] +
           [(_fmt(p, r["params"].get(p)), r["params"].get(p)
             if isinstance(r["params"].get(p), (int, float)) else None) for p in params]
           for r in rows]
  path.write_text(page(title, points, front, _colours(plotted), x_label, header, table, curves))


def write_report(rows: list[dict], out: pathlib.Path, title: str = "latency vs WER",
                 x: str = "latency") -> list[str]:
  """The plot (`<x>_vs_wer.png`, `.html`: x `latency` or `compute`), the run tables and, when
  the runs vary the seed, the pooled ones, in `out`; returns their paths."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  write_png(rows, out / f"{x}_vs_wer.png", title, x)
  write_html(rows, out / f"{x}_vs_wer.html", title, x)
  write_tables(rows, out)
  names = [f"{x}_vs_wer.png", f"{x}_vs_wer.html", "runs.md", "runs.csv"]
  pools = seed_pools(rows)
  if pools:
    write_seed_tables(pools, out)
    names += ["seeds.md", "seeds.csv"]
  else:   # not an earlier report's, left in the same folder
    for name in ("seeds.md", "seeds.csv"):
      (out / name).unlink(missing_ok=True)
  return [str(out / n) for n in names]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="asr-report", description=__doc__.split("\n\n")[0])
  p.add_argument("workdirs", nargs="*", help="run workdirs")
  p.add_argument("--sweep", help="a local sweep's name: its runs in ROOT/NAME/*")
  p.add_argument("--root", default="workdirs/sweeps",
                 help="the folder holding the sweeps' runs (one workdir per run)")
  p.add_argument("--eval", dest="evaluation", metavar="NAME",
                 help="each run's numbers from its eval/NAME.json (an asr-eval summary, e.g. "
                      "test_greedy_int8: the edge processor's WER and latency) instead of its "
                      "final evaluation")
  p.add_argument("--out", required=True, help="the folder the table, plots and HTML go to")
  p.add_argument("--x", choices=("latency", "compute"), default="latency",
                 help="the plot's x axis: simulated latency (compute per second of audio where "
                      "none was simulated), or the encoder's FLOPs per frame "
                      "(compute_vs_wer.png)")
  args = p.parse_args(argv)
  if bool(args.workdirs) == bool(args.sweep):
    p.error("give run workdirs or --sweep NAME (one of the two)")
  try:
    workdirs = sweep_workdirs(args.sweep, args.root) if args.sweep else args.workdirs
    rows = collect_runs(workdirs, args.evaluation)
  except FileNotFoundError as e:
    print(f"asr-report: {e}", file=sys.stderr)
    return 2
  title = " ".join(filter(None, [args.sweep or "latency vs WER", args.evaluation]))
  paths = write_report(rows, pathlib.Path(args.out), title, args.x)
  print((pathlib.Path(args.out) / "runs.md").read_text())
  if (pathlib.Path(args.out) / "seeds.md").exists():
    print((pathlib.Path(args.out) / "seeds.md").read_text())
  print("wrote " + ", ".join(paths))
  return 0


if __name__ == "__main__":
  sys.exit(main())
