"""The C++ time loops of the fused mLSTM on the CPU (``csrc/mlstm_loop.cpp``), built on
first use by torch's JIT extension loader (a C++ compiler and ninja needed; the build is
cached, in ``$TORCH_EXTENSIONS_DIR`` when set, and rebuilt when the source changes).
:func:`loops` is None where they cannot be built, with one warning saying why, and the
fused path runs its Python loops instead: the same buffers and arithmetic, slower at
small sizes. ``MLSTM4RECO_NO_EXTENSION=1`` turns them off.

On an x86 CPU whose capability (``torch.backends.cpu.get_cpu_capability()``, which
``ATEN_CPU_CAPABILITY`` can lower) is AVX-512 the loops are built for it (the row-wise
kernels on 64-byte vectors), where it is AVX2 with AVX2 and FMA, elsewhere for the
baseline instruction set; the build is named after the choice, so one cache shared by
different machines never hands one a build its CPU cannot run."""

from __future__ import annotations

import functools
import os
import pathlib
import platform
import sys
import warnings

import torch

SOURCE = pathlib.Path(__file__).with_name("csrc") / "mlstm_loop.cpp"


_LOADED: dict = {}
"""The builds this process has loaded, by name suffix: once each (``loops.cache_clear()``
does not load one again: a library the build step relinked in between would register
its operators a second time, which torch refuses)."""


@functools.cache
def loops():
    """``torch.ops.mlstm4reco_loop`` (``forward_loop``, ``backward_loop``, ``matmul``,
    ``use_onednn``, ``threads_used``), or None."""
    if os.environ.get("MLSTM4RECO_NO_EXTENSION", "") not in ("", "0"):
        return None
    try:
        from torch.utils.cpp_extension import load

        suffix, flags = build_flags()
        openmp = openmp_flags()
        if suffix not in _LOADED:
            load(
                name=f"mlstm4reco_loop_{suffix}",
                sources=[str(SOURCE)],
                extra_cflags=["-O3", "-fno-trapping-math", "-fno-math-errno", *flags, *openmp],
                extra_ldflags=openmp,
                is_python_module=False,
                verbose=False,
            )
            _LOADED[suffix] = torch.ops.mlstm4reco_loop
        return _LOADED[suffix]
    except Exception as error:  # noqa: BLE001 - no compiler, no ninja, a failed build
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"the mLSTM's C++ loops could not be built ({first}); the fused path runs its "
            "Python loops (same numbers, slower at small sizes)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def openmp_flags() -> list[str]:
    """``-fopenmp`` where torch runs its threads on OpenMP and the compiler is GCC's or
    Clang's on Linux: ATen's ``parallel_for`` is a header template that runs serially in
    code compiled without it. The build links the same ``libgomp.so.1`` that torch has
    already loaded (the loader matches it by name), not a second runtime."""
    if sys.platform.startswith("linux") and torch.backends.openmp.is_available():
        return ["-fopenmp"]
    return []


def build_flags() -> tuple[str, list[str]]:
    """The build's name suffix and its instruction-set flags for this CPU."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    capability = torch.backends.cpu.get_cpu_capability()
    avx2 = ["-mavx2", "-mfma", "-ffp-contract=fast"]
    if x86 and capability == "AVX512":
        avx512 = ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"]
        return "avx512", [
            *avx2,
            *avx512,
            "-mprefer-vector-width=512",
            "-DMLSTM4RECO_VECTOR_BYTES=64",
        ]
    if x86 and capability == "AVX2":
        return "avx2", avx2
    return "baseline", []
