"""The entry points' restart under glibc's huge-page tunable (`experiments.huge_pages`)."""

import os
import pathlib
import subprocess
import sys

import pytest

from experiments import huge_pages

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Restarts itself, then reports its environment and arguments; with `touch`, also how much of a
# freshly written 64 MiB block from malloc the kernel backs with huge pages.
PROGRAM = """
import os, sys
from experiments import huge_pages
huge_pages.ensure()
print(os.environ.get("GLIBC_TUNABLES"))
print(sys.argv[1:])
if "touch" in sys.argv:     # glibc's malloc (numpy asks for huge pages on its own)
  import ctypes
  libc = ctypes.CDLL(None)
  libc.malloc.restype = ctypes.c_void_p
  block = libc.malloc(64 << 20)
  ctypes.memset(block, 1, 64 << 20)
  rollup = open("/proc/self/smaps_rollup").read().split("\\n")
  print(next(int(l.split()[1]) for l in rollup if l.startswith("AnonHugePages")))
"""


def _run(*args, **env):
  base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "ASR_HUGE_PAGES")}
  out = subprocess.run([sys.executable, "-c", PROGRAM, *args], env={**base, **env}, cwd=ROOT,
                       capture_output=True, text=True, check=True)
  return out.stdout.splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables: Linux only")
def test_the_program_restarts_once_with_the_tunable_and_its_arguments():
  assert _run("a", "--b=1") == ["glibc.malloc.hugetlb=1", "['a', '--b=1']"]
  # Tunables already set are kept; the switch turns the restart off.
  assert _run(GLIBC_TUNABLES="glibc.malloc.arena_max=2")[0] == \
      "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert _run(ASR_HUGE_PAGES="0")[0] == "None"
  assert not huge_pages.wanted({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})


def _thp_mode():
  try:
    text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
  except OSError:
    return None
  return text[text.index("[") + 1:text.index("]")]


@pytest.mark.skipif(_thp_mode() not in ("madvise", "always"),
                    reason="the kernel gives no transparent huge pages here")
def test_restarted_programs_memory_is_backed_by_huge_pages():
  # Without the tunable, "madvise" mode gives a large malloc none (unless the kernel's mode is
  # "always"); with it, glibc asks for them.
  with_tunable = int(_run("touch")[-1])
  assert with_tunable >= 32 << 10                       # KiB: at least half the array
  if _thp_mode() == "madvise":
    assert int(_run("touch", ASR_HUGE_PAGES="0")[-1]) < with_tunable
