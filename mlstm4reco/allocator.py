"""Keeping freed memory in the process, for training on the CPU.

Each training batch allocates the same large tensors again (the full softmax's
(positions x items) buffer, attention maps, the recurrences' buffers). glibc's malloc
serves the large ones with fresh ``mmap`` s and unmaps them when freed, so the kernel
maps and zeroes every page of them again in the next batch: a large share of a batch's
CPU time on a small machine goes to page faults (docs/benchmarks.md). Told never to map
and never to trim, malloc keeps what was freed in its heap and hands it out again.

The cost: the process holds its peak heap until it ends, rather than returning freed
memory to the system. ``experiments/run.py`` turns it on for its runs (and its worker
processes); a script of your own can call :func:`keep_freed_memory` first thing. The
library never turns it on by itself: it is process-wide.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "keeping_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int: 2 GiB of free heap top before a trim

_kept = False


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse: no ``mmap`` for large blocks and
    (almost) no trimming of the heap. Returns whether it is on: False where malloc is not
    glibc's (macOS, Windows, musl) or where ``MLSTM4RECO_KEEP_MEMORY=0`` turns it off.

    Process-wide and for the rest of the process; call it before the work it should
    speed up (earlier mappings stay as they are)."""
    global _kept
    if os.environ.get("MLSTM4RECO_KEEP_MEMORY", "") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success; musl's stand-in returns 0 and does nothing
    _kept = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1
    return _kept


def keeping_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` turned it on in this process."""
    return _kept
