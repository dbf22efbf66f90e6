"""Run metrics: JSON lines in the workdir and a wandb run (offline unless the environment says).

Standard metric names (the same in every run, sweep, report and dashboard): `wer`, `cer`,
`flops_per_frame`, `flops_per_second` (per second of audio, encoder and decoding: the one that
compares across frame rates), `latency_ms_p50`, `latency_ms_p90`, `model_bytes`, `sparsity`,
`backend`; they go to the run's summary, so runs compare on a wandb workspace with no custom code. Each evaluation also logs a
`wandb.Table` of per-utterance results (`eval/utterances`) and a latency-versus-WER scatter of
the run's evaluations so far (`eval/latency_vs_wer`; its x axis is the simulated p50 latency
when the trainer was given a device simulator, as `asr-train` does by default, else FLOPs per
second of audio: `latency_ms_*` stay empty where nothing simulated them, never invented). A finished run
writes the standard metrics of its last evaluation to `final.json` (sweeps and reports read it),
with a branching encoder's `fast_fraction` (`asr.models.amnet`), a gated one's
`open_fraction` (`asr.models.gates`) and the encoder's
`flops_per_frame_executed` (non-zero weights only) where it reports them.

A resumed run first cuts `metrics.jsonl` and `eval/` back to the step it restored, so the
steps logged between that checkpoint and the interruption are not counted twice. (wandb keeps
the values it already received for those steps and ignores their replay, which is identical.)
Only the first process of a multi-host run writes.

wandb's mode is `config.wandb.mode`, else `$WANDB_MODE`, else "offline" (no account needed;
`wandb sync <workdir>/wandb/offline-run-*` uploads later). A resumed run continues the same
wandb run id; under a `wandb agent` the run takes the agent's run id.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import uuid

from asr.training.evaluate import HYPOTHESIS_COLUMNS, write_hypotheses

STANDARD_METRICS = ("wer", "cer", "flops_per_frame", "flops_per_second", "latency_ms_p50",
                    "latency_ms_p90", "model_bytes", "sparsity", "backend")


def _records(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cut_back(workdir: os.PathLike, step: int) -> None:
  """Drops what a run logged after `step` (it restarts from there): `metrics.jsonl` records and
  `eval/step_N.*` files with N > step."""
  workdir = pathlib.Path(workdir)
  path = workdir / "metrics.jsonl"
  kept = [r for r in _records(path) if r.get("step", 0) <= step]
  if path.exists():
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
  for f in (workdir / "eval").glob("step_*"):
    if int(f.name.split(".")[0].removeprefix("step_")) > step:
      f.unlink()


class MetricsLogger:
  def __init__(self, workdir: os.PathLike, config, enabled: bool = True):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / "metrics.jsonl"
    self.enabled = enabled
    self.last_eval: dict | None = None
    self._run = None
    records = _records(self.path)
    self.evaluated_steps = {r["step"] for r in records if "eval" in r}
    self.static = {k: v for r in records if "step" not in r for k, v in r.items() if k != "time"}
    # (step, flops_per_second, latency_ms_p50, wer) of every evaluation, resumed runs included.
    self.eval_history = [[r["step"], r["eval"].get("flops_per_second"), None, r["eval"]["wer"]]
                         for r in records if "eval" in r]
    mode = config.wandb.mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled" or not enabled:
      return
    import wandb
    id_file = self.workdir / "wandb_run_id"
    if not id_file.exists():  # a wandb agent names the run it started
      id_file.write_text(os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:12])
    os.environ.setdefault("WANDB_SILENT", "true")
    self._run = wandb.init(
        project=config.wandb.project, dir=str(self.workdir), mode=mode,
        id=id_file.read_text().strip(), resume="allow", config=config.to_dict(),
        group=config.wandb.group or None,
        name=config.wandb.name or self.workdir.name,
        settings=wandb.Settings(console="off", x_disable_stats=True))

  def _write(self, record: dict) -> None:
    if self.enabled:
      with self.path.open("a") as f:
        f.write(json.dumps(record) + "\n")

  def log_static(self, values: dict) -> None:
    """Values that hold for the whole run (model size); written once."""
    if any(self.static.get(k) != v for k, v in values.items()):
      self.static.update(values)
      self._write({"time": time.time(), **values})
    if self._run is not None:
      self._run.summary.update(values)

  def log(self, step: int, values: dict, prefix: str = "") -> None:
    record = {f"{prefix}{k}": v for k, v in values.items()}
    self._write({"step": step, "time": time.time(), **record})
    if self._run is not None:
      self._run.log(record, step=step)

  def log_eval(self, step: int, summary: dict, rows: list[dict]) -> None:
    self.last_eval = dict(summary, step=step)
    self.evaluated_steps.add(step)
    self.eval_history.append([step, summary["flops_per_second"], summary.get("latency_ms_p50"),
                              summary["wer"]])
    self._write({"step": step, "time": time.time(), "eval": summary})
    if not self.enabled:
      return
    (self.workdir / "eval").mkdir(exist_ok=True)
    (self.workdir / "eval" / f"step_{step}.json").write_text(json.dumps(summary, indent=2))
    write_hypotheses(self.workdir / "eval" / f"step_{step}.hyps.tsv", rows)
    if self._run is not None:
      import wandb
      # Numbers only: latency stays unlogged (empty) where no simulator measured it.
      numeric = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
      x = "latency_ms_p50" if summary.get("latency_ms_p50") is not None else "flops_per_second"
      table = wandb.Table(columns=list(HYPOTHESIS_COLUMNS),
                          data=[[r[c] for c in HYPOTHESIS_COLUMNS] for r in rows])
      history = wandb.Table(columns=["step", "flops_per_second", "latency_ms_p50", "wer"],
                            data=self.eval_history)
      self._run.log({**numeric, "backend": summary.get("backend", "float"),
                     "eval/utterances": table,
                     "eval/latency_vs_wer": wandb.plot.scatter(
                         history, x, "wer", title=f"WER vs {x}"),
                     **{f"wer_accent/{a}": w for a, w in summary.get("per_accent", {}).items()}},
                    step=step)
      self._run.summary.update({**numeric, "backend": summary.get("backend", "float")})

  def write_final(self, summary: dict) -> dict:
    """The run's standard metrics (and step, split, utterances) in `final.json`."""
    final = {k: summary.get(k) for k in STANDARD_METRICS}
    final.update({k: summary[k] for k in ("step", "num_utterances", "split", "fast_fraction",
                                          "open_fraction", "flops_per_frame_executed",
                                          "wer_beam", "cer_beam", "per_accent_beam")
                  if k in summary})
    if self.enabled:
      (self.workdir / "final.json").write_text(json.dumps(final, indent=2))
    return final

  def finish(self) -> None:
    if self._run is not None:
      self._run.finish()
      self._run = None
