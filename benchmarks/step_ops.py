"""Where a training step's time goes, op by op: XLA's own timings of every op of the compiled step.

  .venv/bin/python -m benchmarks.step_ops [--config transformer] [--variant small]
      [--seconds 3.0] [--steps 3] [--depth 2] [--top 4] [--set KEY=VALUE]

Runs `benchmarks.train_step`'s donated step (the same batch) under `jax.profiler`, with XLA's
CPU runtime tracing each op (`--xla_cpu_enable_xprof_traceme`, set here before JAX starts), and
reads the trace back (`jax.profiler.ProfileData`). Each op's own time (its span minus the ops
nested in it, so a loop's body ops are not counted twice) is charged to the named scope its HLO
metadata carries: the step names its parts (`features`, `encoder`, `score`, `terms`,
`optimizer`), the encoders their units (`encoder/attention`, `encoder/ffn`,
`encoder/subsampling`, `encoder/lstm0`, ...), the transducer its losses (`score/rnnt`,
`score/ctc`, `score/prediction`). Forward and backward (`transpose(...)` in the op's name) are
apart. Prints ms per step for each scope (the first `--depth` levels), its share of the step's
wall time, and its `--top` op kinds (the primitive and XLA's fusion kind). The thread pool's
waits and the executor's own work are the `runtime` line. The last line sums the matrix
products (`dot_general` ops) and their rate over the step's analytic FLOPs
(`benchmarks.train_step.analytic_flops`: nearly all of them are products), against this run's
matmul peak (`benchmarks.train_step.matmul_peak`), and the time of everything else. What the ops
leave of the wall time is the host's (dispatch, the Python loop), or negative where the two
threads ran ops side by side.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_enable_xprof_traceme=true").strip()

import argparse  # noqa: E402
import collections  # noqa: E402
import glob  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.train_step import (analytic_flops, build, matmul_peak, recipe,  # noqa: E402
                                   recipe_arguments, synthetic_batch)
from experiments import huge_pages  # noqa: E402

# Name-stack parts that are JAX's or XLA's structure, not the model's scopes.
_STRUCTURE = re.compile(r"^(jit\(.*\)|while|body|cond|closed_call|checkpoint|"
                        r"rematted_computation|remat|branch_\d+_fun|pjit|custom_jvp_call|"
                        r"custom_vjp_call|)$")


def scope_of(op_name: str, depth: int) -> tuple[str, str]:
  """`("encoder/attention", "backward")` from an HLO op name such as
  `jit(train_step)/transpose(jvp(encoder))/attention/dot_general`: the model's scopes, the
  transformations unwrapped, the primitive (the last part) and einsum specs left out."""
  parts = op_name.split("/")[1:-1]          # drop the jitted function and the primitive
  direction = "backward" if any(p.startswith("transpose(") for p in parts) else "forward"
  names = []
  for p in parts:
    while (m := re.fullmatch(r"(?:transpose|jvp|vmap)\((.*)\)", p)):
      p = m.group(1)
    if not _STRUCTURE.match(p) and "," not in p and "->" not in p:
      names.append(p)
  return "/".join(names[:depth]) or "(step)", direction


def op_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
  """`{instruction: (op_name, fusion kind or opcode)}` from a compiled module's text."""
  out = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(.*?metadata=\{([^}]*)\}",
                       hlo_text, re.M):
    name, opcode, meta = m.groups()
    op = re.search(r'op_name="([^"]*)"', meta)
    out[name] = (op.group(1) if op else "", opcode)
  return out


def own_times(trace_dir: str) -> collections.Counter:
  """`{event name: ns}` summed over XLA's worker threads, each event's span minus the events
  nested in it on the same thread."""
  path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[-1]
  own = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):   # the worker threads running the ops
        continue
      stack = []
      for start, span, name in sorted(((e.start_ns, e.duration_ns, e.name) for e in line.events),
                                      key=lambda e: (e[0], -e[1])):
        while stack and stack[-1][0] + stack[-1][1] <= start:
          stack.pop()
        if stack:
          own[stack[-1][2]] -= span
        own[name] += span
        stack.append((start, span, name))
  return own


def main():
  huge_pages.ensure()       # as the entry points train (ASR_HUGE_PAGES=0: without)
  p = argparse.ArgumentParser()
  recipe_arguments(p, repeats=3)
  p.add_argument("--steps", type=int, default=3, help="steps traced (after two untraced)")
  p.add_argument("--depth", type=int, default=2, help="scope levels to group by")
  p.add_argument("--top", type=int, default=4, help="op kinds shown per scope")
  args = p.parse_args()
  c = recipe(args)
  batch = jax.tree.map(jnp.asarray, synthetic_batch(c.data.batch_size, args.seconds, 0, 12.0,
                                                    c.model.vocab))
  step, state = build(c)
  compiled = step.lower(state, batch).compile()
  meta = op_metadata(compiled.as_text())
  for _ in range(2):
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    start = time.perf_counter()
    for _ in range(args.steps):
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
    wall = (time.perf_counter() - start) / args.steps * 1e3
    jax.profiler.stop_trace()
    own = own_times(trace_dir)

  per_step = 1e-6 / args.steps
  scopes, kinds = collections.Counter(), collections.defaultdict(collections.Counter)
  for name, ns in own.items():
    if name in meta:
      op_name, opcode = meta[name]
      key = scope_of(op_name, args.depth)
      kind = f"{op_name.rsplit('/', 1)[-1]}:{re.sub(r'[.0-9]+$', '', name)}"
    else:
      key, kind = ("runtime", ""), name
    scopes[key] += ns * per_step
    kinds[key][kind] += ns * per_step
  ops = sum(scopes.values())
  print(f"{args.config}:{args.variant} {' '.join(args.set)}: batch {c.data.batch_size} x "
        f"{args.seconds:.1f} s, {jax.devices()[0].device_kind}; {args.steps} steps traced, "
        f"{wall:.0f} ms a step (traced), the ops {ops:.0f} ms")
  for (scope, direction), ms in sorted(scopes.items(), key=lambda kv: -kv[1]):
    top = ", ".join(f"{k} {v:.1f}" for k, v in kinds[(scope, direction)].most_common(args.top))
    print(f"{ms:7.1f} ms {ms / wall:5.1%}  {scope + ' ' + direction:<32} {top}")
  print(f"{wall - ops:7.1f} ms {(wall - ops) / wall:5.1%}  {'wall minus the ops':<32} "
        "(the host's; negative where ops ran side by side)")
  products = sum(v for key in kinds for k, v in kinds[key].items() if k.startswith("dot_general:"))
  flops, (peak, _) = analytic_flops(c, batch), matmul_peak()
  print(f"matrix products (dot_general ops): {products:.0f} ms for the step's "
        f"{flops / 1e9:.1f} GFLOP (analytic), {flops / products / 1e6:.0f} GFLOP/s = "
        f"{flops / products * 1e3 / peak:.0%} of this run's matmul peak ({peak / 1e9:.0f} "
        f"GFLOP/s); every other op and the runtime: {ops - products:.0f} ms")


if __name__ == "__main__":
  main()
