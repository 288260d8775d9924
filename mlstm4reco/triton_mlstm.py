"""A GPU path for :class:`~mlstm4reco.layers.MLSTM`: persistent Triton kernels
(:mod:`mlstm4reco.triton_kernels`), their launch, and their autograd function.

The fused CPU path (:class:`~mlstm4reco.layers._FusedMLSTM`) launches a handful of small
kernels per time step, which on a GPU makes it bound by launch latency. Here each of the
forward and the backward recurrences is one kernel launch. What is not recurrent stays in
PyTorch, as in the fused path: the input projection of all steps before the kernel (one
matmul) and, after the backward kernel, the weight gradients (one matmul each over all
steps).

On a GPU with multiprocessors to spare (15 tiles of 16 at batch 240 leave 117 of an H100's
132 idle), each tile's hidden units are split across programs (:func:`_split`) that meet
at barriers in global memory; the grid is launched cooperatively, so CUDA refuses it
rather than let programs wait for others that are not resident. :func:`launch_options`
changes tile sizes and launch options, and takes the kernels' variants (one barrier a
step, weights resident, H compiled in, inputs loaded a step ahead): the defaults are the
configuration measured fastest at fp32 accuracy on an H200 (:func:`_launch`). It is what
``benchmarks/gpu.py --sweep`` tunes with.
:func:`compile_for` compiles the kernels for a GPU architecture without a GPU (Triton
ships ``ptxas``) and :func:`resource_usage` reports their shared memory, registers and
spills; the test suite checks them for sm_90.

Matrix products run on tensor cores as ``tf32x3`` by default (three TF32 products that
recover fp32 accuracy), or as one TF32 product (``'tf32'``: faster; ~3e-4 relative error
per product, like PyTorch's ``allow_tf32``) where PyTorch's float32 matmuls may use TF32
(``torch.set_float32_matmul_precision('high')``; :func:`precision`);
``with dot_precision('ieee'):`` gives plain fp32 FMA products, and any of the three
whatever PyTorch's setting.
With ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors in Triton's interpreter:
that is how the test suite checks their numbers on machines without a GPU
(``MLSTM(..., implementation='triton')``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

import torch

try:
    import triton
except ImportError:  # the portable paths need no Triton
    triton = None

__all__ = ["available", "usable", "precision", "dot_precision", "launch_options", "compile_for", "resource_usage",
           "TritonMLSTM", "MAX_AUTO_HIDDEN"]

PRECISIONS = ("tf32x3", "ieee", "tf32")
_precision: str | None = None  # set by dot_precision; None: as PyTorch's float32 matmuls (precision())

#: MLSTM(implementation='auto') uses the kernels up to this hidden size (compiled for
#: sm_90 they keep within registers up to 128 and spill a little at 256; beyond, untested).
MAX_AUTO_HIDDEN = 256


def indexable(T: int, B: int, H: int) -> bool:
    """Whether the kernels' int32 offsets reach every element of the largest buffer, the
    (T, B, 5H) input projections."""
    return T * B * 5 * H < 2**31


def precision() -> str:
    """The precision of the kernels' matrix products now: the innermost
    :func:`dot_precision` block's or, outside any, PyTorch's float32 matmul setting
    (``torch.set_float32_matmul_precision``): ``'highest'``, PyTorch's default, gives
    ``'tf32x3'`` (fp32 accuracy); ``'high'`` and ``'medium'``, with which PyTorch's own
    float32 matmuls may use TF32 (or bfloat16), give ``'tf32'``, one TF32 product
    (~1e-3 relative error, as cuDNN's LSTM has by default; 0.83x the time on an H200)."""
    if _precision is not None:
        return _precision
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


@contextlib.contextmanager
def dot_precision(precision: str):
    """Within the block, the kernels' matrix products use ``precision``: ``'tf32x3'``,
    ``'ieee'`` or ``'tf32'``, whatever PyTorch's float32 matmul setting (:func:`precision`).
    A layer's backward uses its forward's precision."""
    global _precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    previous, _precision = _precision, precision
    try:
        yield
    finally:
        _precision = previous


def available() -> bool:
    """Whether Triton is installed."""
    return triton is not None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def usable(x: torch.Tensor) -> bool:
    """Whether the kernels can run on ``x``: Triton on a CUDA tensor, or Triton's
    interpreter (``TRITON_INTERPRET=1``) on a CPU tensor."""
    return available() and (x.is_cuda or (interpreted() and x.device.type == "cpu"))


if triton is not None:
    from mlstm4reco import triton_kernels


#: the kernels whose launches :func:`launch_options` sets, each on its own or both at once
KERNELS = ("forward", "backward")
_launch_overrides: dict[str, dict[str, int]] = {kernel: {} for kernel in KERNELS}
TUNABLE = ("BLOCK_B", "KC", "K_STAGES", "SPLIT", "BARRIERS", "WAIT", "STATIC_H", "RESIDENT", "PREFETCH", "POLL",
           "BATCHED", "X3", "num_warps", "num_stages")
#: the options that take one of a few values
CHOICES = {"BARRIERS": (1, 2), "WAIT": (0, 1), "STATIC_H": (0, 1), "RESIDENT": (0, 1), "PREFETCH": (0, 1),
           "POLL": (0, 1), "BATCHED": (0, 1), "X3": (0, 1)}


def _check(options: dict, where: str) -> None:
    """ValueError unless each of ``options`` is one of :data:`TUNABLE` with a value it takes."""
    unknown = set(options) - set(TUNABLE)
    if unknown:
        raise ValueError(f"launch_options{where} takes {TUNABLE}, got {sorted(unknown)}")
    for name, value in options.items():
        if name in CHOICES:
            if value not in CHOICES[name] or isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"launch_options{where}: {name} must be one of {CHOICES[name]}, got {value!r}")
            continue
        smallest = 16 if name in ("BLOCK_B", "KC") else 1
        power_of_two = name in ("BLOCK_B", "KC", "SPLIT", "num_warps")
        if (not isinstance(value, int) or isinstance(value, bool) or value < smallest
                or (power_of_two and value & (value - 1))):
            kind = "a power of two" if power_of_two else "an integer"
            raise ValueError(f"launch_options{where}: {name} must be {kind} of at least {smallest}, got {value!r}")


@contextlib.contextmanager
def launch_options(forward: dict | None = None, backward: dict | None = None, **options: int):
    """Within the block, the kernels launch with these tile sizes and options in place of
    :func:`_launch`'s: the hook ``benchmarks/gpu.py --sweep`` tunes with. ``options``
    apply to both kernels, ``forward`` and ``backward`` (dicts of the same options) to one
    of them, over ``options``: the forward and the backward kernels meet nowhere but in the
    buffers the forward saves, the same for every variant, so each may launch its own way.
    A layer's backward uses the options in force at its forward. Any of :data:`TUNABLE`:

    - BLOCK_B, KC, SPLIT, num_warps: powers of two, at least 16 for BLOCK_B and KC, KC at
      most the padded hidden size, at least 16 hidden units per program of a SPLIT;
      K_STAGES, num_stages: at least 1.
    - BARRIERS: 2, or 1 for the kernels that meet once a step when the hidden units are
      split (:func:`~mlstm4reco.triton_kernels.forward_one_barrier_kernel`,
      :func:`~mlstm4reco.triton_kernels.backward_one_barrier_kernel`).
    - WAIT: 1, or 0 for programs that do not wait for each other at the barriers: wrong
      results, there to time what the barriers cost.
    - STATIC_H: 1 (the default) to compile the hidden size into the kernels (one
      compilation per size), so that Triton knows rows of H floats keep 16-byte alignment
      and loads and stores them 16 bytes at a time; 0 to take it as an argument.
    - RESIDENT: 1 for kernels that load the weights each program needs once, before the
      first step (Triton keeps them in shared memory, which they must fit: 5 x BLOCK_H x
      BLOCK_H / SPLIT floats, and with one barrier BLOCK_H x BLOCK_H more in the
      forward), and take each step's products in one piece instead of KC rows at a time;
      0 to re-read them each step. The default is 1 with two barriers, BLOCK_H up to 128
      and :func:`resident_bytes` (in the products' precision) within the GPU's shared
      memory, else 0.
    - PREFETCH: 1 (the default) for kernels that load what a step reads and no barrier
      guards (the forward's input projections; the backward's upstream gradients and what
      the forward saved) one step ahead, so that its latency from memory is off the step's
      critical path (at the cost of the registers that carry it: 10 to 20 a thread at
      H = 120, split 8); 0 to load it in that step.
    - POLL: 0 (the default) for barriers on a counter; 1 for two-barrier kernels with the
      weights resident (RESIDENT=1) and the hidden units split, whose programs read what
      the others wrote without a barrier: the buffers they exchange hold a NaN no GPU
      arithmetic gives until written (:data:`~mlstm4reco.triton_kernels.UNWRITTEN`), and
      a program reads until none is left (:func:`~mlstm4reco.triton_kernels._polled`),
      which saves the barriers' fences and atomics. Ignored when the units are not split.
    - BATCHED: 0 (the default) or 1 for a two-barrier backward with the weights resident
      that takes the gradient of m_t (a sum of four products, one a gate) as one product
      batched over the gates: four independent chains of tensor-core instructions instead
      of one four times as long (compiled for sm_90 at H = 120, 4 programs a tile: 59
      instead of 168 in a row in the step, at the cost of some registers); H above 16.
      Ignored by the forward.
    - X3: 0 (the default) or 1 for two-barrier kernels with the weights resident that take
      tf32x3 by hand: the weights split into high and low TF32 parts once, before the first
      step, and each product as three TF32 products with an accumulator each, summed after
      (Triton's tf32x3 chains its three on one accumulator: three times the tensor-core
      instructions in a row). Ignored in other precisions.
    """
    per_kernel = {"forward": {} if forward is None else forward, "backward": {} if backward is None else backward}
    for kernel, specific in per_kernel.items():
        if not isinstance(specific, dict):
            raise ValueError(f"launch_options: {kernel} must be a dict of options, got {specific!r}")
        _check(specific, f"({kernel}=...)")
    _check(options, "")
    global _launch_overrides
    previous = _launch_overrides
    _launch_overrides = {kernel: {**previous[kernel], **options, **per_kernel[kernel]} for kernel in KERNELS}
    try:
        yield
    finally:
        _launch_overrides = previous


def overrides_key() -> tuple:
    """The launch options in force (:func:`launch_options`), hashable."""
    return tuple((kernel, tuple(sorted(_launch_overrides[kernel].items()))) for kernel in KERNELS)


#: the fewest hidden units a program of a split tile gets by default, by the precision of
#: the products: with 16 (16 x 16 products) Triton gives each of a program's warps the
#: same product to compute. The H200 ran the benchmark's layer (H = 120, batch 240) in
#: tf32x3 faster split 4 ways than 8 (0.87x the time with the weights resident, 0.91-0.97x
#: without), with one TF32 product faster split 8 ways (1.97 against 2.14 ms, weights
#: resident, in one run: 0.92x) (docs/results/gpu_h200, runs 6 and 7)
MIN_UNITS = {"tf32x3": 32, "ieee": 32, "tf32": 16}

#: the shared memory a block may have (bytes, opt-in) by NVIDIA architecture, for
#: :func:`compile_for` without the GPU (on a GPU, its own figure): sm_80 (A100),
#: sm_86/sm_89 (consumer Ampere/Ada), sm_90 (H100/H200)
SHARED_MEMORY = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448}


def _split(block_h: int, tiles: int, multiprocessors: int, fewest: int = MIN_UNITS["tf32x3"]) -> int:
    """How many programs share each tile's hidden units: the most (a power of two, at
    least ``fewest`` units each: :data:`MIN_UNITS`) with which every program of the grid
    has a multiprocessor of its own, so that all are resident at once (their barriers
    wait for each other)."""
    split = 1
    while block_h // (2 * split) >= fewest and tiles * 2 * split <= multiprocessors:
        split *= 2
    return split


def resident_bytes(block_h: int, block_j: int, products: str = "tf32x3") -> int:
    """The shared memory the two-barrier kernels ask for with their weights resident
    (RESIDENT=1) and their products in precision ``products``: a program keeps five
    BLOCK_H x BLOCK_J blocks of weights; in tf32x3 (and ieee) Triton 3.6 (PyTorch 2.11's)
    lays them out twice (3.9 once), one TF32 product once, and the kernels' other buffers
    take under 16 KiB (``test_resident_weights_take_what_resident_bytes_says``)."""
    return (1 if products == "tf32" else 2) * 5 * block_h * block_j * 4 + 16 * 1024


def _launch(H: int, B: int = 1, multiprocessors: int = 0, kernel: str = "forward", shared_memory: int = 0) -> dict:
    """The tile sizes and launch options of the ``'forward'`` or ``'backward'`` kernel at
    hidden size H for B sequences on a GPU with ``multiprocessors`` multiprocessors (0: the
    hidden units unsplit) and ``shared_memory`` bytes of shared memory a block may have
    (0: the weights never resident), with :func:`launch_options`' overrides for that
    kernel; the defaults follow the tile, the split and the products' precision now
    (:func:`precision`: the split and whether the weights fit in shared memory depend on
    it), and are the fastest measured on an H200 (``benchmarks/gpu.py --sweep``;
    docs/results/gpu_h200/NOTES.md)."""
    overrides, products = _launch_overrides[kernel], precision()
    block_h = max(16, triton.next_power_of_2(H))
    block_b = overrides.get("BLOCK_B", 16)  # tl.dot's smallest tile: more tiles, more SMs
    split = overrides.get("SPLIT", _split(block_h, triton.cdiv(B, block_b), multiprocessors, MIN_UNITS[products]))
    block_j = block_h // split  # each program's hidden units
    barriers = overrides.get("BARRIERS", 2)
    widest = block_h if barriers == 1 else block_j  # one barrier: the forward's m_t is whole in each program
    launch = dict(
        BLOCK_B=block_b,
        BLOCK_H=block_h,
        # the products go KC columns of their left operand at a time: 16 (32 spilled at
        # block_j = 128 with Triton 3.6, torch 2.11's), 32 for the narrower slices of a split
        # (but 16 with one barrier: 32 spills there, on sm_90 with Triton 3.6 and 3.9)
        KC=32 if split > 1 and block_j <= 64 and barriers == 2 else 16,
        K_STAGES=2,  # the next chunk is loaded while this one is multiplied (H200: 0.82x the time of 1)
        SPLIT=split,  # programs per tile, each with BLOCK_H / SPLIT of the hidden units
        BARRIERS=barriers,  # a step (2: triton_kernels.forward_kernel and backward_kernel)
        WAIT=1,  # at the barriers (0: for timing only)
        STATIC_H=1,  # H compiled in (one compilation per size; 0: a kernel argument)
        # the weights loaded once where they fit (0: re-read each step, KC rows at a time):
        # with two barriers, H up to 128 (at 256 they spill kilobytes)
        RESIDENT=int(barriers == 2 and block_h <= 128 and resident_bytes(block_h, block_j, products) <= shared_memory),
        PREFETCH=1,  # a step's inputs loaded a step ahead (0: in that step)
        POLL=0,  # barriers on a counter (1: the data polled, with the weights resident)
        BATCHED=0,  # the backward's gate products chained (1: batched, with the weights resident)
        X3=0,  # Triton's tf32x3 (1: three TF32 products by hand, with the weights resident)
        num_warps=4 if widest <= 32 else 8 if widest <= 128 else 16,  # no spills on sm_90 up to 128
        num_stages=1,  # loops without their own setting (the time loop) are not pipelined
        enable_fp_fusion=True,  # a * b + c as one FMA (Triton 3.9's default; 3.10 turns it off)
    )
    launch.update(overrides)
    launch["STATIC_H"] = H if launch["STATIC_H"] else 0  # the kernels' constant: the size itself
    if launch["KC"] > block_h:
        raise ValueError(f"KC={launch['KC']} is wider than the padded hidden size {block_h}")
    if block_j < 16:
        raise ValueError(f"SPLIT={split} leaves fewer than 16 of the {block_h} padded hidden units to each program")
    # the opt-in variants: off where they would do nothing, refused where they cannot run
    if split == 1:  # no program reads what another wrote
        launch["POLL"] = 0
    if kernel == "forward":  # its four gate products have an accumulator each already
        launch["BATCHED"] = 0
    if products != "tf32x3":  # X3 is tf32x3 by hand
        launch["X3"] = 0
    for option in ("POLL", "BATCHED", "X3"):
        halves = option == "BATCHED"  # its products go over halves of the units, at least 16 each
        if launch[option] and (launch["BARRIERS"] != 2 or not launch["RESIDENT"] or (halves and block_h < 32)):
            raise ValueError(f"{option}=1 needs the two-barrier kernels with their weights resident"
                             f"{' and at least 32 padded hidden units' if halves else ''}, got "
                             f"BARRIERS={launch['BARRIERS']}, RESIDENT={launch['RESIDENT']} at H={H}")
    launch["launch_cooperative_grid"] = split > 1  # CUDA refuses a grid that is not all resident at once
    return launch


def _kernel(name: str, barriers: int):
    """The ``'forward'`` or ``'backward'`` kernel with ``barriers`` barriers a step."""
    return {("forward", 2): triton_kernels.forward_kernel, ("backward", 2): triton_kernels.backward_kernel,
            ("forward", 1): triton_kernels.forward_one_barrier_kernel,
            ("backward", 1): triton_kernels.backward_one_barrier_kernel}[name, barriers]


def _run(name: str, launch: dict, B: int, H: int, device: torch.device, *args, **flags) -> None:
    """Launch the ``'forward'`` or ``'backward'`` kernel (:func:`_kernel`) over the tiles
    of B sequences (times the split of their hidden units), with zeroed barrier counters
    and, for the one-barrier kernels, the forward's copies of m_t or the backward's
    buffers of partial sums, as ``launch`` says."""
    tiles = triton.cdiv(B, launch["BLOCK_B"])
    extra = [torch.zeros(tiles, dtype=torch.int32, device=device)]
    options = dict(launch)
    barriers = options.pop("BARRIERS")
    if barriers == 1:  # the forward's copies of m_t, the backward's partial sums of dm
        extra.append(torch.empty(*(() if name == "forward" else (2,)), options["SPLIT"], B, H, device=device))
    if not options["launch_cooperative_grid"]:
        del options["launch_cooperative_grid"]  # the interpreter takes no such option
    _kernel(name, barriers)[(tiles, options["SPLIT"])](*args, *extra, **flags, **options)


def _unwritten(*buffers: torch.Tensor) -> None:
    """Fill ``buffers`` (float32, any strides) with the bits the kernels' POLL reads as
    not yet written (:data:`~mlstm4reco.triton_kernels.UNWRITTEN`)."""
    for buffer in buffers:
        buffer.view(torch.int32).fill_(triton_kernels.UNWRITTEN.value)


def _multiprocessors(device: torch.device) -> int:
    """The GPU's multiprocessor count (0 on the CPU: the interpreter runs programs one by
    one, so the hidden units are never split there)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


def _shared_memory(device: torch.device) -> int:
    """The shared memory a block may have on the GPU, in bytes, opting in (0 on the CPU,
    where the interpreter's kernels re-read the weights each step unless told otherwise)."""
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin if device.type == "cuda" else 0


#: the optional inputs of each kernel (constexpr flags); all present by default
KERNEL_FLAGS = {"forward": ("HAS_B_MH",), "backward": ("HAS_GRAD_HS", "HAS_GRAD_CS")}


def compile_for(kernel: str, hidden_size: int, arch: int = 90, batch: int = 1, multiprocessors: int = 0,
                **flags: bool):
    """Compile the ``'forward'`` or ``'backward'`` kernel for NVIDIA architecture ``arch``
    (90: H100/H200, 80: A100) at ``hidden_size``, with the launch options and precision
    :class:`TritonMLSTM` would use for ``batch`` sequences on a GPU of ``multiprocessors``
    multiprocessors (the defaults: hidden units unsplit) and the optional inputs ``flags``
    (see :data:`KERNEL_FLAGS`; omitted ones present), on any machine: no GPU is needed,
    Triton ships ``ptxas``. Specialised as Triton's launcher would specialise it: every
    pointer 16-byte aligned (as PyTorch allocates), B and H known to be multiples of 16
    where they are (the number of steps is not). Returns Triton's compiled kernel
    (``.asm['ptx']``, ``.metadata``...)."""
    if triton is None:
        raise RuntimeError("compiling the kernels needs Triton: pip install -e '.[triton]'")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = _launch(hidden_size, batch, multiprocessors, kernel, SHARED_MEMORY.get(arch, 0))
    function = _kernel(kernel, options["BARRIERS"])
    constants = {**{flag: flags.get(flag, True) for flag in KERNEL_FLAGS[kernel]},
                 **{k: options[k] for k in ("BLOCK_B", "BLOCK_H", "KC", "K_STAGES", "SPLIT", "WAIT", "STATIC_H",
                                             "RESIDENT", "PREFETCH", "POLL", "BATCHED", "X3")},
                 "PRECISION": precision()}
    signature = {arg: ("*i32" if arg == "sync_ptr" else "*fp32") if arg.endswith("_ptr") else "i32"
                 for arg in function.arg_names}
    signature.update({arg: "constexpr" for arg in constants})
    multiple_of_16 = {"B": batch % 16 == 0, "H": hidden_size % 16 == 0}
    aligned = {(i,): [["tt.divisibility", 16]] for i, arg in enumerate(function.arg_names)
               if arg.endswith("_ptr") or multiple_of_16.get(arg, False)}
    source = ASTSource(fn=function, signature=signature, attrs=aligned,
                       constexprs={(function.arg_names.index(k),): v for k, v in constants.items()})
    keys = ("num_warps", "num_stages", "enable_fp_fusion", "launch_cooperative_grid")
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={k: options[k] for k in keys})


def resource_usage(hidden_size: int, arch: int = 90, batch: int = 1,
                   multiprocessors: int = 0) -> dict[str, dict[str, int]]:
    """Per kernel (:func:`compile_for`, every optional input present), the shared memory it
    asks for (bytes), its registers per thread and the bytes per thread it spills to local
    memory (its stack frame), read from the cubin with Triton's ``cuobjdump``."""
    if triton is None:
        raise RuntimeError("resource_usage needs Triton: pip install -e '.[triton]'")
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
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
            dump = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True,
                                  text=True, check=True).stdout
        line = next(line for line in dump.splitlines() if "REG:" in line)
        fields = dict(field.split(":", 1) for field in line.split() if ":" in field)
        usage[kernel] = {"shared": int(compiled.metadata.shared), "registers": int(fields["REG"]),
                         "spilled": int(fields["STACK"])}
    return usage


class TritonMLSTM(torch.autograd.Function):
    """One mLSTM layer over a whole time-major sequence (as
    :class:`~mlstm4reco.layers._FusedMLSTM`, same arguments and outputs), each recurrence
    one persistent Triton kernel."""

    @staticmethod
    def forward(ctx, x, weight_ih, bias_ih, h0, c0, weight_hm, bias_mh, weight_mh):
        if x.dtype != torch.float32:
            raise ValueError(f"the Triton mLSTM kernels run in float32, got {x.dtype}")
        T, B, _ = x.shape
        H = weight_hm.shape[0]
        if T == 0:  # the kernels read the first step's inputs before their loop (PREFETCH)
            raise ValueError(f"the Triton mLSTM kernels need at least one time step, got x of shape "
                             f"{tuple(x.shape)}")
        if not indexable(T, B, H):
            raise ValueError(f"the Triton mLSTM kernels index with int32: T * B * 5H must be below 2**31, "
                             f"got T={T}, B={B}, H={H}")
        flat_x = x.reshape(T * B, -1)
        xp = flat_x.mm(weight_ih.t()) if bias_ih is None else torch.addmm(bias_ih, flat_x, weight_ih.t())
        xp = xp.view(T, B, 5 * H).contiguous()
        hs = x.new_empty(T + 1, B, H)
        cs = x.new_empty(T + 1, B, H)
        hs[0], cs[0] = h0, c0
        acts = x.new_empty(T, B, 4 * H)
        tanh_cs, mh, ms = (x.new_empty(T, B, H) for _ in range(3))
        w_hm, w_mh = weight_hm.contiguous(), weight_mh.contiguous()
        b_mh = bias_mh.contiguous() if bias_mh is not None else w_hm  # unread without a bias
        gpu = dict(multiprocessors=_multiprocessors(x.device), shared_memory=_shared_memory(x.device))
        ctx.precision, ctx.launch = precision(), _launch(H, B, kernel="backward", **gpu)
        launch = _launch(H, B, kernel="forward", **gpu)
        if launch["POLL"]:  # what the programs exchange: h_t and m_t
            _unwritten(hs[1:], ms)
        _run("forward", launch, B, H, x.device, xp, w_hm, b_mh, w_mh, hs, cs,
             acts, tanh_cs, mh, ms, T, B, H, HAS_B_MH=bias_mh is not None, PRECISION=ctx.precision)
        ctx.save_for_backward(flat_x, weight_ih, xp, acts, hs, cs, tanh_cs, mh, ms, w_hm, w_mh)
        ctx.has_bias = (bias_ih is not None, bias_mh is not None)
        ctx.set_materialize_grads(False)
        return hs[1:], cs[1:]

    @staticmethod
    def backward(ctx, grad_hs, grad_cs):
        from mlstm4reco.layers import _input_and_weight_gradients

        flat_x, weight_ih, xp, acts, hs, cs, tanh_cs, mh, ms, w_hm, w_mh = ctx.saved_tensors
        T, B, H5 = xp.shape
        H = H5 // 5
        grad_xp = xp.new_empty(T, B, 5 * H)
        grad_mh = xp.new_empty(T, B, H)
        grad_h0, grad_c0 = xp.new_empty(B, H), xp.new_empty(B, H)
        if ctx.launch["POLL"]:  # what the programs exchange: the gate gradients, that of W_mh h_{t-1}
            _unwritten(grad_xp[..., H:], grad_mh)
        grad_hs = grad_hs.contiguous() if grad_hs is not None else None
        grad_cs = grad_cs.contiguous() if grad_cs is not None else None
        _run("backward", ctx.launch, B, H, xp.device,
             grad_hs if grad_hs is not None else xp, grad_cs if grad_cs is not None else xp,
             xp, acts, cs, tanh_cs, mh, w_hm, w_mh, grad_xp, grad_mh, grad_h0, grad_c0, T, B, H,
             HAS_GRAD_HS=grad_hs is not None, HAS_GRAD_CS=grad_cs is not None, PRECISION=ctx.precision)
        return (*_input_and_weight_gradients(flat_x, weight_ih, grad_xp, grad_mh, ms, hs, ctx.has_bias,
                                             grad_h0, grad_c0),)
