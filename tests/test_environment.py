"""The environment is the lock: `make` installs exactly `uv.lock`, and a lock that no longer
matches `pyproject.toml` stops it with the command that mends it."""

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
UV = ROOT / ".uv" / "bin" / "uv"
needs_uv = pytest.mark.skipif(not UV.exists(), reason="uv is installed by make, in .uv/")


@needs_uv
def test_the_virtual_environment_holds_exactly_what_the_lock_pins():
  # With the extras make installed (`make test EXTRAS="dev cuda"` on a GPU machine).
  extras = [f"--extra={e}" for e in os.environ.get("EXTRAS", "dev").split()]
  out = subprocess.run([str(UV), "sync", "--frozen", *extras, "--check"], cwd=ROOT,
                       capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr


@needs_uv
def test_a_lock_that_no_longer_matches_pyproject_stops_make_naming_the_command(tmp_path):
  for name in ("Makefile", "pyproject.toml", "uv.lock"):
    shutil.copy(ROOT / name, tmp_path)
  check = lambda: subprocess.run(["make", "-s", "check-lock", f"UV={UV}"], cwd=tmp_path,
                                 capture_output=True, text=True)
  fresh = check()
  assert fresh.returncode == 0, fresh.stderr
  pyproject = tmp_path / "pyproject.toml"
  text = pyproject.read_text()
  assert '  "tqdm>=4.66",\n' in text
  pyproject.write_text(text.replace('  "tqdm>=4.66",\n', '  "tqdm>=4.66",\n  "rich>=13",\n'))
  stale = check()
  assert stale.returncode != 0
  assert "uv.lock does not match pyproject.toml: run 'make lock'" in stale.stderr
