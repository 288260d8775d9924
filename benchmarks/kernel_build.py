"""Developer tooling for the Triton kernels of :mod:`mlstm4reco.triton_mlstm`: compile them
for a GPU architecture on any machine (Triton ships ``ptxas``) and read the resources they
ask for (shared memory, registers, spills) from the cubin with Triton's ``cuobjdump``.
The test suite checks the kernels for sm_90 with these; ``gpu.py`` reports them.

    python benchmarks/kernel_build.py [--hidden 120] [--arch 90] [--batch 240] \
        [--multiprocessors 132]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile

from mlstm4reco import triton_mlstm

triton = triton_mlstm.triton  # None without Triton

#: the shared memory a block may have (bytes, opt-in) by NVIDIA architecture, for
#: :func:`compile_for` without the GPU (on a GPU, its own figure): sm_80 (A100),
#: sm_86/sm_89 (consumer Ampere/Ada), sm_90 (H100/H200)
SHARED_MEMORY = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448}


#: the optional inputs of each kernel (constexpr flags); all present by default
KERNEL_FLAGS = {"forward": ("HAS_B_MH",), "backward": ("HAS_GRAD_HS", "HAS_GRAD_CS")}


def compile_for(
    kernel: str,
    hidden_size: int,
    arch: int = 90,
    batch: int = 1,
    multiprocessors: int = 0,
    **flags: bool,
):
    """Compile the ``'forward'`` or ``'backward'`` kernel for NVIDIA architecture ``arch``
    (90: H100/H200, 80: A100) at ``hidden_size``, with the launch options and precision
    :class:`~mlstm4reco.triton_mlstm.TritonMLSTM` would use for ``batch`` sequences on a
    GPU of ``multiprocessors`` multiprocessors (the defaults: hidden units unsplit) and the
    optional inputs ``flags`` (see :data:`KERNEL_FLAGS`; omitted ones present), on any
    machine: no GPU is needed,
    Triton ships ``ptxas``. Specialised as Triton's launcher would specialise it: every
    pointer 16-byte aligned (as PyTorch allocates), B and H known to be multiples of 16
    where they are (the number of steps is not). Returns Triton's compiled kernel
    (``.asm['ptx']``, ``.metadata``...)."""
    if triton is None:
        raise RuntimeError("compiling the kernels needs Triton: pip install -e '.[triton]'")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = triton_mlstm._launch(
        hidden_size, batch, multiprocessors, kernel, SHARED_MEMORY.get(arch, 0)
    )
    function = triton_mlstm._kernel(kernel)
    constants = {
        **{flag: flags.get(flag, True) for flag in KERNEL_FLAGS[kernel]},
        # the kernels' constexpr options: every tunable but the compiler's own, and BLOCK_H
        **{k: options[k] for k in ("BLOCK_H", *triton_mlstm.TUNABLE) if not k.startswith("num_")},
        "PRECISION": triton_mlstm.precision(),
    }
    signature = {
        arg: ("*i32" if arg == "sync_ptr" else "*fp32") if arg.endswith("_ptr") else "i32"
        for arg in function.arg_names
    }
    signature.update({arg: "constexpr" for arg in constants})
    multiple_of_16 = {"B": batch % 16 == 0, "H": hidden_size % 16 == 0}
    aligned = {
        (i,): [["tt.divisibility", 16]]
        for i, arg in enumerate(function.arg_names)
        if arg.endswith("_ptr") or multiple_of_16.get(arg, False)
    }
    source = ASTSource(
        fn=function,
        signature=signature,
        attrs=aligned,
        constexprs={(function.arg_names.index(k),): v for k, v in constants.items()},
    )
    keys = ("num_warps", "num_stages", "enable_fp_fusion", "launch_cooperative_grid")
    return triton.compile(
        source, target=GPUTarget("cuda", arch, 32), options={k: options[k] for k in keys}
    )


def resource_usage(
    hidden_size: int, arch: int = 90, batch: int = 1, multiprocessors: int = 0
) -> dict[str, dict[str, int]]:
    """Per kernel (:func:`compile_for`, every optional input present), the shared memory it
    asks for (bytes), its registers per thread and the bytes per thread it spills to local
    memory (its stack frame), read from the cubin with Triton's ``cuobjdump``."""
    if triton is None:
        raise RuntimeError("resource_usage needs Triton: pip install -e '.[triton]'")
    cuobjdump = os.path.join(
        os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"
    )
    if not os.path.exists(cuobjdump):
        cuobjdump = shutil.which("cuobjdump")
    if cuobjdump is None:
        raise RuntimeError("resource_usage needs cuobjdump (shipped with Triton's NVIDIA backend)")
    usage = {}
    for kernel in KERNEL_FLAGS:
        compiled = compile_for(kernel, hidden_size, arch, batch, multiprocessors)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "kernel.cubin")
            with open(path, "wb") as f:
                f.write(compiled.asm["cubin"])
            dump = subprocess.run(
                [cuobjdump, "--dump-resource-usage", path],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        line = next(line for line in dump.splitlines() if "REG:" in line)
        fields = dict(field.split(":", 1) for field in line.split() if ":" in field)
        usage[kernel] = {
            "shared": int(compiled.metadata.shared),
            "registers": int(fields["REG"]),
            "spilled": int(fields["STACK"]),
        }
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=120)
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--batch", type=int, default=240)
    parser.add_argument("--multiprocessors", type=int, default=132)
    args = parser.parse_args()
    for kernel, usage in resource_usage(
        args.hidden, args.arch, args.batch, args.multiprocessors
    ).items():
        print(
            f"{kernel}: {usage['shared']} bytes of shared memory, {usage['registers']} registers, "
            f"{usage['spilled']} bytes spilled per thread"
        )


if __name__ == "__main__":
    main()
