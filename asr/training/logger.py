"""Run metrics: JSON lines in the workdir and a wandb run (offline unless the environment says).

Standard metric names (ARCHITECTURE.md): `wer`, `cer`, `flops_per_frame`, `latency_ms_p50`,
`latency_ms_p90`, `model_bytes`, `sparsity`, `backend`. Evaluation also logs a `wandb.Table` of
per-utterance results. wandb's mode is `config.wandb.mode`, else `$WANDB_MODE`, else "offline"
(no account needed; `wandb sync <workdir>/wandb/offline-run-*` uploads later). A resumed run
continues the same wandb run id.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
import uuid


class MetricsLogger:
  def __init__(self, workdir: os.PathLike, config, resumed: bool = False):
    self.workdir = pathlib.Path(workdir)
    self.path = self.workdir / "metrics.jsonl"
    self.last_eval: dict | None = None
    self._run = None
    mode = config.wandb.mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
      return
    import wandb
    id_file = self.workdir / "wandb_run_id"
    if not id_file.exists():
      id_file.write_text(uuid.uuid4().hex[:12])
    os.environ.setdefault("WANDB_SILENT", "true")
    self._run = wandb.init(
        project=config.wandb.project, dir=str(self.workdir), mode=mode,
        id=id_file.read_text().strip(), resume="allow", config=config.to_dict(),
        group=config.wandb.group or None,
        name=config.wandb.name or self.workdir.name,
        settings=wandb.Settings(console="off", x_disable_stats=True))

  def _write(self, record: dict) -> None:
    with self.path.open("a") as f:
      f.write(json.dumps(record) + "\n")

  def log_static(self, values: dict) -> None:
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
    flat = {k: v for k, v in summary.items() if not isinstance(v, dict)}
    flat.update(latency_ms_p50=None, latency_ms_p90=None)  # no latency simulator yet: empty
    self._write({"step": step, "time": time.time(), "eval": summary})
    (self.workdir / "eval").mkdir(exist_ok=True)
    (self.workdir / "eval" / f"step_{step}.json").write_text(json.dumps(summary, indent=2))
    with (self.workdir / "eval" / f"step_{step}.hyps.tsv").open("w") as f:
      f.write("id\tspeaker\taccent\treference\thypothesis\n")
      for r in rows:
        f.write(f"{r['id']}\t{r['speaker']}\t{r['accent']}\t{r['reference']}\t{r['hypothesis']}\n")
    if self._run is not None:
      import wandb
      numeric = {k: v for k, v in flat.items() if isinstance(v, (int, float))}
      table = wandb.Table(columns=["id", "speaker", "accent", "reference", "hypothesis"],
                          data=[[r["id"], r["speaker"], r["accent"], r["reference"],
                                 r["hypothesis"]] for r in rows])
      self._run.log({**numeric, "backend": summary.get("backend", "float"),
                     "eval/utterances": table,
                     **{f"wer_accent/{a}": w for a, w in summary.get("per_accent", {}).items()}},
                    step=step)
      self._run.summary.update({**numeric, "backend": summary.get("backend", "float")})

  def finish(self) -> None:
    if self._run is not None:
      self._run.finish()
      self._run = None
