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
        if suffix not in _LOADED:
            openmp = openmp_flags()

            def build(openmp: list[str]) -> None:
                load(
                    name=f"mlstm4reco_loop_{suffix}",
                    sources=[str(SOURCE)],
                    extra_cflags=["-O3", "-fno-trapping-math", "-fno-math-errno", *flags, *openmp],
                    extra_ldflags=openmp,
                    is_python_module=False,
                    verbose=False,
                )

            try:
                build(openmp)
            except Exception as error:  # noqa: BLE001 - e.g. a compiler without libgomp
                if not openmp:
                    raise
                warnings.warn(
                    f"the mLSTM's C++ loops could not be built with OpenMP ({_first_line(error)});"
                    " built without it, they run on one thread",
                    RuntimeWarning,
                    stacklevel=2,
                )
                build([])
            _LOADED[suffix] = torch.ops.mlstm4reco_loop
        return _LOADED[suffix]
    except Exception as error:  # noqa: BLE001 - no compiler, no ninja, a failed build
        warnings.warn(
            f"the mLSTM's C++ loops could not be built ({_first_line(error)}); the fused path "
            "runs its Python loops (same numbers, slower at small sizes)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def openmp_flags() -> list[str]:
    """``-fopenmp`` on Linux where torch runs its threads on OpenMP (its wheels there use
    GCC's libgomp) and the extension's compiler is GCC: ATen's ``parallel_for`` is a header
    template that runs serially in code compiled without it. The build links the
    ``libgomp.so.1`` that torch has already loaded (the loader matches it by name). With
    another compiler (Clang's ``-fopenmp`` links LLVM's runtime, a second thread pool
    beside torch's) the loops are built without it and run on one thread."""
    if not (sys.platform.startswith("linux") and torch.backends.openmp.is_available()):
        return []
    try:
        from torch.utils import cpp_extension

        gcc = cpp_extension.check_compiler_is_gcc(cpp_extension.get_cxx_compiler())
    except Exception:  # noqa: BLE001 - an older torch without these helpers, no compiler
        return []
    return ["-fopenmp"] if gcc else []


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
