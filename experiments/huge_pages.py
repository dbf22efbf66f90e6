"""Transparent huge pages for XLA's CPU buffers: the entry points run under glibc's
`glibc.malloc.hugetlb=1` tunable.

XLA's CPU runtime allocates a step's buffers afresh at every step, and glibc serves blocks that
large with fresh `mmap`s: every step faults its memory in again, 4 KiB at a time (about 91,000
faults a `transformer.py:small` training step, 42,000 an `rnnt.py:small` one, on this
project's 2-core machine), and then reads it through a TLB that holds few such pages. Linux's
default THP mode ("madvise") gives huge pages to memory that asks for them; with the tunable,
glibc asks for all of its memory. Measured there (BENCHMARKS.md, issue 35): 670 faults a
step, and both training steps 10-11% faster; nothing they compute changes.

A tunable is read when a process starts, so `ensure()` starts the program again with it set,
once, before any work. `ASR_HUGE_PAGES=0` turns this off; elsewhere than Linux, or where the
variable already holds the tunable (the Makefile exports it), it does nothing.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "ASR_HUGE_PAGES"


def wanted(environ=os.environ) -> bool:
  """Whether this process should start again with the tunable."""
  return (sys.platform.startswith("linux") and environ.get(SWITCH, "1") != "0"
          and "glibc.malloc.hugetlb" not in environ.get("GLIBC_TUNABLES", ""))


def ensure() -> None:
  """Replace this process by the same command line with `GLIBC_TUNABLES` holding the tunable
  (`sys.orig_argv`: the interpreter's own options and `-m`/script kept), unless not `wanted`.
  Call it first thing in an entry point's command-line `main`, never from a library call (the
  process is replaced)."""
  if not wanted():
    return
  tunables = os.environ.get("GLIBC_TUNABLES", "")
  env = dict(os.environ, GLIBC_TUNABLES=f"{tunables}:{TUNABLE}" if tunables else TUNABLE)
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
