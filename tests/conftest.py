"""Shared fixtures: the tiny synthetic corpus, built once per test session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
  """A data dir holding `synth_speech/tiny` (built here: about 20 s on 2 cores)."""
  from asr.data import synth_tfds
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  synth_tfds.builder("tiny", data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture(scope="session")
def tiny_source(tiny_data_dir):
  from asr.data.sources import open_source
  return open_source("synth_speech/tiny", tiny_data_dir)
