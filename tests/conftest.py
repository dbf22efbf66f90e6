"""Shared fixtures: the tiny synthetic corpus, built once per test session."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# One persistent XLA compilation cache for the session, its subprocesses included: many tests
# build the same tiny step (each trainer jits its own closure), and the killed-and-resumed runs
# are separate processes. Compiling is all it saves; every result is computed afresh. Every
# program goes in, however quick to compile: building a model runs each initializer as its own
# small program, which every process compiled again (a tiny Transformer's 1.6 s to build in a
# second process, 0.5 s with them cached; 12% less CPU time for the kill-and-resume test, the
# eval CLI's tests and mwer.ipynb together).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="asr-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# XLA's CPU backend at LLVM optimisation level 1, not its default 2, for the tests and every
# process they start (subprocesses and notebook kernels inherit the environment): most of a
# test's time is compiling programs it runs for a few steps. On 2 cores this took 14-19% off the
# CPU time of two groups of test files (BENCHMARKS.md, "The test budget"); level 0 compiles
# faster still but runs so much slower that the suite took longer. Results are unchanged (the
# golden tests pass); a test that sets XLA_FLAGS for its own processes adds to these.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=1").strip()

import hypothesis
import pytest

# Property tests draw the same examples on every run, so a test run is reproducible (a red CI
# run means a change, not a new draw). To search afresh: `pytest --hypothesis-profile=explore`.
hypothesis.settings.register_profile("reproducible", derandomize=True)
hypothesis.settings.register_profile("explore", max_examples=1000)
hypothesis.settings.load_profile("reproducible")


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A data dir holding `synth_speech/tiny`, built once for the run (about 20 s on 2 cores):
  pytest-xdist's workers share it (the builder's file lock lets one build while the others
  wait), as they share this run's temporary folder."""
  from asr.data import synth_tfds
  run_dir = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    run_dir = run_dir.parent   # <pytest-N>/popen-gwK: pytest-N is this run's, every worker's
  data_dir = str(run_dir / "tfds-tiny")
  synth_tfds.ensure_built("tiny", data_dir=data_dir, echo=lambda _: None)
  return data_dir


@pytest.fixture(scope="session")
def tiny_source(tiny_data_dir):
  from asr.data.sources import open_source
  return open_source("synth_speech/tiny", tiny_data_dir)


@pytest.fixture(scope="session")
def tiny_trained_run(tiny_data_dir, tmp_path_factory):
  """A finished `rnnt.py:tiny` run of 2 steps (one bucket): a teacher, or a model to factorize."""
  from asr.training.loop import train
  from experiments.configs.rnnt import get_config
  c = get_config("tiny")
  c.data.data_dir, c.wandb.mode = tiny_data_dir, "disabled"
  c.data.bucket_seconds = (6.0,)
  c.train.num_steps, c.train.eval_every, c.train.checkpoint_every = 2, 1000, 2
  workdir = tmp_path_factory.mktemp("tiny_trained_run")
  train(c, workdir)
  return workdir


# The slowest tests (45 s to 2 minutes each on 2 cores, `--durations` of a full run): each starts
# processes that train, or trains several models. They go first, so that the two workers end on
# short tests: collected last (as the notebooks were), one of them could leave the other worker
# idle for its whole length.
HEAVY = ("notebooks/", "test_multihost.py::", "test_sweep.py::test_two_run_local_sweep",
         "test_training.py::test_runs_killed_mid_step", "test_mwer.py::test_tiny_recipe",
         "test_compression_recipes.py::test_a_pruned_quantized_run")


def pytest_collection_modifyitems(session, config, items):
  """Heavy tests first, in their collected order; the others after, in theirs (pytest-xdist's
  `--dist load` needs every worker to see the same order: this one is deterministic)."""
  heavy = lambda item: any(h in item.nodeid for h in HEAVY)
  items.sort(key=lambda item: not heavy(item))
