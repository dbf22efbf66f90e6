"""`asr-sweep experiments/sweeps/NAME.yaml [--local [--parallel N]]`: one wandb sweep file, two
ways to run it.

The file is a standard wandb sweep specification (`program`, `method`, `metric`, `parameters`,
optional `command`, `name`, `run_cap`, ...). Parameters are the trainer's flags: `config` (the
config file and variant, e.g. `experiments/configs/rnnt.py:tiny`) and `config.*` keys.

- Without `--local`: creates the sweep on the user's wandb server and prints the `wandb agent`
  command to start on each machine (one agent per machine; each run trains in
  `workdirs/sweeps/<sweep id>/<run id>`).
- With `--local`: no server. The grid (or `run_cap` random draws, seeded by the sweep's name)
  is expanded here and each run is an ordinary `asr-train` run in `workdirs/sweeps/NAME/RUN`,
  logged to wandb offline under the group NAME. A failed run is reported and the sweep goes
  on; running the sweep again skips the runs that finished. `bayes` needs the server's
  optimizer: locally it is run as random search over the same space, and says so.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import math
import os
import pathlib
import random
import re
import subprocess
import sys
import time

TOP_LEVEL_KEYS = {"program", "command", "method", "metric", "parameters", "name", "description",
                  "project", "entity", "early_terminate", "run_cap"}
PARAMETER_KEYS = {"value", "values", "distribution", "min", "max", "mu", "sigma", "q",
                  "probabilities", "a", "b"}
DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform",
                 "log_uniform_values", "q_log_uniform_values", "log_uniform", "normal",
                 "q_normal", "log_normal", "q_log_normal"}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
DEFAULT_ROOT = pathlib.Path("workdirs") / "sweeps"
FINISHED = "final.json"   # written by the trainer when a run reaches num_steps


class SweepError(ValueError):
  """A sweep file that cannot run; the message names the file, the key and the problem."""


@dataclasses.dataclass(frozen=True)
class Sweep:
  name: str
  spec: dict
  path: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  params: dict   # flag name ("config", "config.optim.peak_lr", ...) -> value
  varying: tuple = ()  # the flags the sweep varies (the others have one `value`)


def load_sweep(path: os.PathLike) -> Sweep:
  """Reads and checks a sweep file: top-level keys, parameter specs, and every `config.*` key
  against the config it names."""
  import yaml
  path = pathlib.Path(path)
  if not path.exists():
    raise SweepError(f"{path}: no such sweep file")
  spec = yaml.safe_load(path.read_text())
  if not isinstance(spec, dict):
    raise SweepError(f"{path}: a sweep file is a mapping of keys (program, method, parameters, ...)")
  unknown = sorted(set(spec) - TOP_LEVEL_KEYS)
  if unknown:
    raise SweepError(f"{path}: unknown top-level key(s) {unknown}; a wandb sweep has "
                     f"{sorted(TOP_LEVEL_KEYS)}")
  for key in ("program", "method", "parameters"):
    if key not in spec:
      raise SweepError(f"{path}: missing required key {key!r}")
  if spec["method"] not in ("grid", "random", "bayes"):
    raise SweepError(f"{path}: method {spec['method']!r} is not grid, random or bayes")
  params = spec["parameters"]
  if not isinstance(params, dict) or not params:
    raise SweepError(f"{path}: parameters must map flag names to value specs")
  for name, p in params.items():
    _check_parameter(path, name, p)
  if "config" not in params or not ({"value", "values"} & set(params["config"])):
    raise SweepError(f"{path}: parameters.config.value (or .values, a list) must name the "
                     f"config, e.g. 'experiments/configs/rnnt.py:tiny'")
  if "workdir" in params:
    raise SweepError(f"{path}: parameters.workdir: the sweep chooses each run's workdir")
  _check_config_keys(path, params)
  return Sweep(str(spec.get("name") or path.stem), spec, path)


def _check_parameter(path, name, p) -> None:
  where = f"{path}: parameters.{name}"
  if not isinstance(p, dict):
    raise SweepError(f"{where}: expected a mapping such as {{values: [...]}}, got {p!r}")
  unknown = sorted(set(p) - PARAMETER_KEYS)
  if unknown:
    raise SweepError(f"{where}: unknown key(s) {unknown}; allowed {sorted(PARAMETER_KEYS)}")
  dist = p.get("distribution")
  if dist is not None and dist not in DISTRIBUTIONS:
    raise SweepError(f"{where}: unknown distribution {dist!r}; known {sorted(DISTRIBUTIONS)}")
  if not ({"value", "values"} & set(p) or {"min", "max"} <= set(p) or {"mu", "sigma"} <= set(p)):
    raise SweepError(f"{where}: give value, values, min and max, or mu and sigma")
  if name != "config" and not name.startswith("config."):
    raise SweepError(f"{where}: the trainer takes `config` and `config.*` flags only")


def _check_config_keys(path, params) -> None:
  """Every `config.*` key against every config the sweep names (`config.value` or each of
  `config.values`: a grid over recipes, e.g. one compression method per run)."""
  p = params["config"]
  for config_arg in ([p["value"]] if "value" in p else list(p["values"])):
    _check_keys_of(path, params, config_arg)


def _check_keys_of(path, params, config_arg) -> None:
  import importlib.util
  file, _, arg = str(config_arg).partition(":")
  if not pathlib.Path(file).exists():
    raise SweepError(f"{path}: parameters.config: no config file {file!r} (paths are relative "
                     f"to the directory asr-sweep runs in)")
  spec = importlib.util.spec_from_file_location(f"_sweep_config_{pathlib.Path(file).stem}", file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg) if arg else module.get_config()
  for name in params:
    if name == "config":
      continue
    node = config
    for part in name.split(".")[1:]:
      if not hasattr(node, "keys") or part not in node:
        raise SweepError(f"{path}: parameters.{name}: {config_arg} has no key "
                         f"{name.removeprefix('config.')!r}")
      node = node[part]


def expand_runs(sweep: Sweep, max_runs: int | None = None) -> list[Run]:
  """The runs of a local sweep, in a fixed order: the grid's product, or `run_cap` (or
  `max_runs`) random draws from a generator seeded by the sweep's name."""
  params = sweep.spec["parameters"]
  names = sorted(params)
  if sweep.spec["method"] == "grid":
    choices = []
    for n in names:
      p = params[n]
      if "value" in p:
        choices.append([p["value"]])
      elif "values" in p:
        choices.append(list(p["values"]))
      else:
        raise SweepError(f"{sweep.path}: parameters.{n}: grid search needs value or values, "
                         f"not a distribution")
    assignments = [dict(zip(names, combo)) for combo in itertools.product(*choices)]
    if max_runs is not None:
      assignments = assignments[:max_runs]
  else:
    count = max_runs or sweep.spec.get("run_cap")
    if not count:
      raise SweepError(f"{sweep.path}: {sweep.spec['method']} search locally needs run_cap in "
                       f"the file or --max-runs")
    rng = random.Random(_digest(sweep.name))
    assignments = [{n: _draw(rng, params[n], sweep.path, n) for n in names} for _ in range(count)]
  varying = [n for n in names if "value" not in params[n]]
  runs, seen = [], set()
  for a in assignments:
    run = Run(run_name(a, varying), a, tuple(varying))
    if run.name not in seen:  # a random draw may repeat a categorical-only assignment
      seen.add(run.name)
      runs.append(run)
  return runs


def _draw(rng: random.Random, p: dict, path, name):
  if "value" in p:
    return p["value"]
  dist = p.get("distribution") or ("categorical" if "values" in p else
                                   "int_uniform" if all(isinstance(p[k], int) for k in ("min", "max"))
                                   else "uniform" if "min" in p else "normal")
  q = p.get("q", 1)
  quantize = lambda x: round(x / q) * q  # noqa: E731
  if dist == "categorical":
    return rng.choices(p["values"], weights=p.get("probabilities"))[0]
  if dist == "constant":
    return p["value"]
  if dist == "int_uniform":
    return rng.randint(p["min"], p["max"])
  if dist in ("uniform", "q_uniform"):
    x = rng.uniform(p["min"], p["max"])
    return quantize(x) if dist == "q_uniform" else x
  if dist in ("log_uniform_values", "q_log_uniform_values"):
    x = math.exp(rng.uniform(math.log(p["min"]), math.log(p["max"])))
    return quantize(x) if dist.startswith("q_") else x
  if dist == "log_uniform":  # wandb's: min and max are natural logs
    return math.exp(rng.uniform(p["min"], p["max"]))
  if dist in ("normal", "q_normal"):
    x = rng.gauss(p.get("mu", 0.0), p.get("sigma", 1.0))
    return quantize(x) if dist == "q_normal" else x
  if dist in ("log_normal", "q_log_normal"):
    x = math.exp(rng.gauss(p.get("mu", 0.0), p.get("sigma", 1.0)))
    return quantize(x) if dist.startswith("q_") else x
  raise SweepError(f"{path}: parameters.{name}: distribution {dist!r} cannot be drawn locally")


def _digest(text: str) -> int:
  return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def run_name(params: dict, varying: list[str]) -> str:
  """Readable and unique: the values of the `varying` keys by a short label (their last key
  part, or the last two where that alone says little), and a short hash of every value."""
  last = [k.rsplit(".", 1)[-1] for k in varying]

  def label(k):
    tail = k.rsplit(".", 1)[-1]
    return ".".join(k.split(".")[-2:]) if tail == "enabled" or last.count(tail) > 1 else tail
  readable = "_".join(f"{label(k)}={short_value(params[k])}" for k in sorted(varying))
  readable = re.sub(r"[^A-Za-z0-9=._-]+", "-", readable)[:80] or "run"
  return f"{readable}_{hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:6]}"


def short_value(v) -> str:
  """A swept value as run names and reports show it."""
  if isinstance(v, str) and ".py:" in v:   # a config: its file's name and variant
    return pathlib.Path(v).name
  return f"{v:.4g}" if isinstance(v, float) else str(v)


def command_for(sweep: Sweep, run: Run, workdir: pathlib.Path) -> list[str]:
  """The sweep's `command` with wandb's macros filled in as a wandb agent fills them, plus the
  run's workdir and its wandb group and name."""
  flags = [f"--{k}={v}" for k, v in run.params.items()]
  macros = {"${env}": [], "${interpreter}": [sys.executable], "${program}": [sweep.spec["program"]],
            "${args}": flags, "${args_no_hyphens}": [f.removeprefix("--") for f in flags],
            "${args_no_boolean_flags}": flags}
  cmd = []
  for part in sweep.spec.get("command") or DEFAULT_COMMAND:
    part = str(part)
    if part in macros:
      cmd += macros[part]
    elif part.startswith("${"):
      raise SweepError(f"{sweep.path}: command macro {part} is not supported by --local")
    else:
      cmd.append(part)
  return cmd + [f"--workdir={workdir}", f"--config.wandb.group={sweep.name}",
                f"--config.wandb.name={run.name}"]


def is_finished(workdir: pathlib.Path) -> bool:
  return (workdir / FINISHED).exists()


def run_local(sweep: Sweep, root: os.PathLike = DEFAULT_ROOT, parallel: int = 1,
              max_runs: int | None = None, echo=print) -> dict[str, str]:
  """Runs the sweep here; returns run name -> "finished", "skipped" (finished before) or
  "failed". Each run's output goes to `<workdir>/run.log`."""
  from tqdm.auto import tqdm
  if sweep.spec["method"] == "bayes":
    echo(f"{sweep.name}: bayes search needs a wandb server; running it locally as random "
         f"search over the same space")
  runs = expand_runs(sweep, max_runs)
  sweep_dir = pathlib.Path(root) / sweep.name
  sweep_dir.mkdir(parents=True, exist_ok=True)
  (sweep_dir / "sweep.yaml").write_text(sweep.path.read_text())
  status = {}
  todo = []
  for run in runs:
    workdir = sweep_dir / run.name
    if is_finished(workdir):
      status[run.name] = "skipped"
    else:
      todo.append(run)
  echo(f"sweep {sweep.name}: {len(runs)} runs, {len(runs) - len(todo)} already finished, "
       f"{len(todo)} to run, {parallel} at a time, in {sweep_dir}")
  env = dict(os.environ)
  env.setdefault("WANDB_MODE", "offline")

  def one(run: Run) -> tuple[Run, int, float]:
    workdir = sweep_dir / run.name
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "sweep_params.json").write_text(json.dumps(
        {"sweep": sweep.name, "run": run.name, "params": run.params,
         "varying": list(run.varying)}, indent=2))
    start = time.time()
    with (workdir / "run.log").open("a") as log:
      code = subprocess.call(command_for(sweep, run, workdir), stdout=log,
                             stderr=subprocess.STDOUT, env=env)
    if code == 0 and not is_finished(workdir):
      code = -1  # the command ended without the trainer's final record
    return run, code, time.time() - start

  bar = tqdm(total=len(todo), desc=f"sweep {sweep.name}", unit="run", dynamic_ncols=True)
  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    for run, code, seconds in (f.result() for f in concurrent.futures.as_completed(
        [pool.submit(one, r) for r in todo])):
      workdir = sweep_dir / run.name
      if code == 0:
        final = json.loads((workdir / FINISHED).read_text())
        status[run.name] = "finished"
        bar.write(f"finished {run.name} in {seconds:.0f} s: WER {final.get('wer', float('nan')):.4f}")
      else:
        status[run.name] = "failed"
        bar.write(f"FAILED {run.name} (exit {code}); last lines of {workdir / 'run.log'}:\n"
                  + _tail(workdir / "run.log"))
      bar.update(1)
  bar.close()
  counts = {s: sum(v == s for v in status.values()) for s in ("finished", "skipped", "failed")}
  (sweep_dir / "status.json").write_text(json.dumps(status, indent=2))
  echo(f"sweep {sweep.name}: {counts['finished']} finished, {counts['skipped']} skipped "
       f"(finished before), {counts['failed']} failed. Report: asr-report --sweep {sweep.name} "
       f"--root {root} --out {sweep_dir / 'report'}")
  return status


def _tail(path: pathlib.Path, lines: int = 15) -> str:
  text = path.read_text(errors="replace") if path.exists() else ""
  return "\n".join("    " + line for line in text.replace("\r", "\n").splitlines()[-lines:])


def create_on_server(sweep: Sweep, echo=print) -> str:
  """Creates the sweep on the wandb server the user is logged in to; returns its id."""
  import wandb
  spec = dict(sweep.spec, name=sweep.name)
  project = spec.pop("project", None) or "ondevice-asr"
  entity = spec.pop("entity", None)
  try:
    sweep_id = wandb.sweep(spec, project=project, entity=entity)
  except Exception as e:  # wandb raises several types for "no account / no server"
    raise SystemExit(f"could not create the sweep on a wandb server ({type(e).__name__}: {e}).\n"
                     f"Log in first (`wandb login`, or set WANDB_API_KEY), or run it on this "
                     f"machine with no server: asr-sweep {sweep.path} --local") from e
  path = "/".join(p for p in (entity, project, sweep_id) if p)
  echo(f"created sweep {sweep.name}: {path}\nOn each machine, from the repository root after "
       f"`make venv` (the agent runs `python`, so activate the environment):\n"
       f"  . .venv/bin/activate && wandb agent {path}\n"
       f"Each run trains in workdirs/sweeps/{sweep_id}/<run id> and logs to that sweep.")
  return sweep_id


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="asr-sweep", description=__doc__.split("\n\n")[0])
  p.add_argument("sweep_file", help="a wandb sweep file (experiments/sweeps/*.yaml)")
  p.add_argument("--local", action="store_true", help="run here, no wandb server")
  p.add_argument("--parallel", type=int, default=1, help="runs at once with --local")
  p.add_argument("--max-runs", type=int, default=None, help="cap on local runs (random: draws)")
  p.add_argument("--root", default=str(DEFAULT_ROOT), help="where local sweeps keep their runs")
  args = p.parse_args(argv)
  try:
    sweep = load_sweep(args.sweep_file)
    if not args.local:
      create_on_server(sweep)
      return 0
    status = run_local(sweep, args.root, args.parallel, args.max_runs)
  except SweepError as e:
    print(f"asr-sweep: {e}", file=sys.stderr)
    return 2
  return 1 if "failed" in status.values() else 0


if __name__ == "__main__":
  sys.exit(main())
