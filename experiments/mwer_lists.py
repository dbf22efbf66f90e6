"""What the MWER term does to n-best lists (issue 39's tuning, BENCHMARKS.md).

  .venv/bin/python -m experiments.mwer_lists lists W1 [W2 ...] [--batches 8]
  .venv/bin/python -m experiments.mwer_lists gradients W [--fit-steps 16]

`lists`: for each trained run `W`, the 4-best lists of the first `--batches` dev batches, as
the term builds them (`MinimumWordErrorRate.nbest_lists`, scored over all alignments): word
errors per reference word expected under the renormalised list, of the search's best and of
the list's best (oracle). The first run is the reference the others are read against.
`gradients`: on three shuffled training batches of `W`, the global norms of the gradients of
the `rnnt` term (per label) and of the MWER term (expected errors per word) and their cosine;
then Adam (2e-4) on one batch with the MWER term alone, its expected WER every third step.
"""

import argparse
import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from asr import features as F
from asr.data.pipeline import Batches
from asr.losses.mwer import MinimumWordErrorRate, expected_errors
from asr.losses.word_errors import word_errors
from asr.training.loop import load_for_inference, open_dataset, pipeline_config, run_tokenizer

KEYS = ("audio", "audio_lengths", "labels", "label_lengths")


def setup(workdir, split, count, shuffle):
  config, graphdef, variables, _ = load_for_inference(workdir)
  tokenizer = run_tokenizer(config, workdir)
  reader = Batches.from_source(open_dataset(config), config.data[split], tokenizer,
                               pipeline_config(config, False), shuffle=shuffle, num_epochs=1,
                               features=None)
  batches = [{k: jnp.asarray(b[k]) for k in KEYS} for b in itertools.islice(iter(reader), count)]
  reader.close()
  term = MinimumWordErrorRate(nbest=4, mode="on_the_fly", max_symbols=config.train.max_symbols)
  term.attach(tokenizer)
  return graphdef, variables, batches, term


def lists_of(graphdef, term):
  """(variables, batch) -> the term's n-best lists of the batch, as the term builds them (the
  search, the scoring over all alignments, the word errors): `tokens [B, K, L]`, `lengths`,
  `valid` (distinct live hypotheses), word `errors`, renormalised `post` (all `[B, K]`), the
  references' `words` and each utterance's term `loss` (`[B]`)."""
  def run(variables, b):
    model = nnx.merge(graphdef, *variables)
    feats, lengths = F.log_mel(b["audio"], b["audio_lengths"], model.cfg.features)
    encoded = model.encode(feats, lengths)
    tokens, hyp_lengths, valid = term.nbest_lists(model, encoded, b["labels"])
    errors, words = word_errors(tokens, hyp_lengths, b["labels"][:, None],
                                b["label_lengths"][:, None], term.table)
    nll = model.score(encoded, tokens, hyp_lengths)["rnnt"]
    loss, post = expected_errors(-nll, errors, valid)
    return dict(tokens=tokens, lengths=hyp_lengths, valid=valid, errors=errors,
                words=words[:, 0], post=post, loss=loss)
  return run


def lists(workdirs, count):
  graphdef, _, batches, term = setup(workdirs[0], "eval_split", count, shuffle=False)
  run = jax.jit(lists_of(graphdef, term))
  for w in workdirs:
    _, _, variables, _ = load_for_inference(w)
    total = np.zeros(4)   # expected, search's best, oracle errors; reference words
    for b in batches:
      o = {k: np.asarray(v) for k, v in run(variables, b).items()}
      e, real = o["errors"], np.asarray(b["audio_lengths"]) > 0
      total += [(o["post"] * e).sum(-1)[real].sum(), e[:, 0][real].sum(),
                np.where(o["valid"], e, 10**6).min(-1)[real].sum(), o["words"][real].sum()]
    print(f"{w}: expected {total[0] / total[3]:.2%}  search's best {total[1] / total[3]:.2%}  "
          f"oracle {total[2] / total[3]:.2%}  ({int(total[3])} words)", flush=True)


def gradients(workdir, fit_steps):
  graphdef, variables, batches, term = setup(workdir, "train_split", 3, shuffle=True)
  params, rest = variables[0], variables[1:]
  run = lists_of(graphdef, term)

  def rnnt(p, b):
    model = nnx.merge(graphdef, p, *rest)
    feats, lengths = F.log_mel(b["audio"], b["audio_lengths"], model.cfg.features)
    nll = model.score(model.encode(feats, lengths), b["labels"], b["label_lengths"])["rnnt"]
    return jnp.sum(nll) / jnp.sum(b["label_lengths"])

  def mwer(p, b):
    o = run((p, *rest), b)
    words = jnp.sum(o["words"])
    return jnp.sum(o["loss"]) / words, jnp.sum(o["post"] * o["errors"]) / words

  grad_rnnt = jax.jit(jax.value_and_grad(rnnt))
  grad_mwer = jax.jit(jax.value_and_grad(mwer, has_aux=True))
  norm = lambda g: float(optax.global_norm(g))
  for b in batches:
    lr, gr = grad_rnnt(params, b)
    (lm, ew), gm = grad_mwer(params, b)
    dot = sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(gr), jax.tree.leaves(gm)))
    print(f"rnnt {float(lr):.4f} |g| {norm(gr):.4f}   mwer {float(lm):.4f} expected WER "
          f"{float(ew):.2%} |g| {norm(gm):.4f}   cosine {float(dot) / norm(gr) / norm(gm):+.3f}",
          flush=True)
  opt = optax.adam(2e-4)
  state, p = opt.init(params), params
  for i in range(fit_steps):
    (lm, ew), gm = grad_mwer(p, b)
    if i % 3 == 0:
      print(f"MWER alone, step {i}: term {float(lm):.4f}  expected WER {float(ew):.2%}", flush=True)
    updates, state = opt.update(gm, state, p)
    p = optax.apply_updates(p, updates)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="what", required=True)
  a = sub.add_parser("lists")
  a.add_argument("workdirs", nargs="+")
  a.add_argument("--batches", type=int, default=8)
  g = sub.add_parser("gradients")
  g.add_argument("workdir")
  g.add_argument("--fit-steps", type=int, default=16)
  args = p.parse_args()
  if args.what == "lists":
    lists(args.workdirs, args.batches)
  else:
    gradients(args.workdir, args.fit_steps)


if __name__ == "__main__":
  main()
