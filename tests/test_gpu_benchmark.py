"""benchmarks/gpu.py's choices, on any machine: which configuration its sweep returns (the
next default of the Triton kernels is chosen from it) and what its options run, with the
timings and the GPU faked. The GPU's numbers come from a lent GPU only."""

import json
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
gpu = pytest.importorskip("gpu")  # benchmarks/gpu.py

from mlstm4reco import triton_launch, triton_mlstm  # noqa: E402


def test_sweep_returns_the_fastest_configuration_at_fp32_accuracy(monkeypatch, capsys):
    """Faked: each configuration's time follows its kernels' options and its difference
    from fused its precision. The sweep returns the fastest that agrees to 1e-5, never a
    WAIT=0 one (wrong by design, even where it happens to agree, as unsplit) nor one TF32
    product (~5e-4) nor one whose first forward+backward took too long (not timed: it
    would be the fastest), and times the fastest forward's configuration with the fastest
    backward's."""
    monkeypatch.setattr(
        gpu,
        "SWEEP",
        [
            ({}, "tf32x3", "defaults"),
            (dict(WAIT=0), "tf32x3", "fastest, wrong"),
            ({}, "tf32", "fast, 1e-3"),
            (dict(PREFETCH=0), "tf32x3", "fast forward, slow backward"),
            (dict(K_STAGES=1), "tf32x3", "slow forward, fast backward"),
            (dict(SPLIT=64), "tf32x3", "does not build"),
            (dict(POLL=1), "tf32x3", "waits that give up: fastest if timed"),
        ],
    )
    median = gpu.median_seconds
    monkeypatch.setattr(
        gpu,
        "median_seconds",
        lambda fn, device, repeats, warmup=2: (
            3.0
            if triton_launch._launch_overrides["forward"].get("POLL")
            else median(fn, device, repeats, warmup)
        ),
    )

    def seconds(layer, x, grad, device, repeats):
        if isinstance(layer, torch.nn.LSTM):  # cuDNN in fp32: slower
            return (1.0, 0.4) if torch.backends.cudnn.allow_tf32 else (2.0, 0.8)
        forward, backward = (
            triton_launch._launch_overrides[kernel] for kernel in triton_mlstm.KERNELS
        )
        if forward.get("SPLIT") == 64:
            raise RuntimeError("out of resource: shared memory")
        if forward.get("WAIT") == 0 or forward.get("POLL"):
            return 0.5, 0.2
        cheaper = 0.5 if triton_launch._precision == "tf32" else 1.0
        fwd = cheaper * (2.0 if forward.get("PREFETCH") == 0 else 4.0)
        return fwd + cheaper * (3.0 if backward.get("K_STAGES") == 1 else 5.0), fwd

    def step(layer, x, grad):
        out = torch.ones(3)
        if isinstance(layer, torch.nn.LSTM):
            return out + (1e-3 if torch.backends.cudnn.allow_tf32 else 0), out
        if layer.implementation == "fused":
            return out, out
        # WAIT=0 too: right by chance
        off = {"tf32": 5e-4, "tf32x3": 1e-7}[triton_launch._precision]
        return out + off, out

    monkeypatch.setattr(gpu, "layer_seconds", seconds)
    monkeypatch.setattr(gpu, "step", step)
    best = gpu.sweep_launch_options(torch.device("cpu"), 1, batch=2, seq=2, dim=16)
    assert best == ({"forward": {"PREFETCH": 0}, "backward": {"K_STAGES": 1}}, "tf32x3")
    printed = capsys.readouterr().out
    assert "the fastest forward with the fastest backward above" in printed
    assert (
        "fastest that agrees with fused to 1e-03: defaults tf32" in printed
    )  # 4.5 s, 1e-3: what 'auto' takes
    recorded = gpu.RESULTS.parts["sweep"]  # what --json writes: each configuration, WAIT=0 too
    assert [
        (c["options"], c["precision"], c["seconds"]) for c in recorded["configurations"][:3]
    ] == [({}, "tf32x3", 9.0), ({"WAIT": 0}, "tf32x3", 0.5), ({}, "tf32", 4.5)]
    assert recorded["configurations"][5] == {
        "options": {"SPLIT": 64},
        "precision": "tf32x3",
        "meaning": "does not build",
        "failed": "RuntimeError: out of resource: shared memory",
    }
    assert (
        recorded["configurations"][6]["failed"]
        == "one forward+backward took 3.00 s (over 0.5 s): not timed"
    )
    assert len(recorded["configurations"]) == 8 and recorded["lstm_seconds"] == 1.0
    lstm = gpu.RESULTS.parts["lstm_precision"]  # cuDNN with and without TF32, the flag restored
    assert (lstm["seconds"], lstm["fp32_seconds"]) == (1.0, 2.0) and lstm[
        "difference"
    ] == pytest.approx(1e-3, rel=1e-4)
    assert torch.backends.cudnn.allow_tf32 == lstm["tf32_allowed"]
    assert (
        "9000.00    1.00x  9.00x  4.50x" in printed
    )  # the defaults against the LSTM with and without TF32
    assert gpu.RESULTS.parts["sweep_fastest_within_1e-05"] == {
        "options": best[0],
        "precision": "tf32x3",
        "seconds": 5.0,
    }


def run_main(monkeypatch, *arguments):
    """gpu.main with ``arguments`` on a faked GPU whose kernels work, each part recorded."""
    calls = []
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--device", "cuda", *arguments])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a faked GPU")
    monkeypatch.setattr(triton_mlstm, "available", lambda: True)
    monkeypatch.setattr(gpu, "print_kernel_resources", lambda hidden: calls.append("resources"))
    monkeypatch.setattr(gpu, "check_triton", lambda device: ["tf32x3"])
    tuned = ({"forward": {"PREFETCH": 0}}, "tf32x3")
    monkeypatch.setattr(
        gpu, "sweep_launch_options", lambda device, repeats: calls.append("sweep") or tuned
    )
    monkeypatch.setattr(
        gpu,
        "compare_layers",
        lambda layers, *rest: calls.append(("layers", list(layers))) or {"nn.LSTM": {"seconds": 1}},
    )
    monkeypatch.setattr(gpu, "lstm_without_tf32", lambda measured, *rest: {"seconds": 2})
    monkeypatch.setattr(
        gpu, "training_benchmark", lambda *args: calls.append(("epoch",) + args[3:])
    )
    monkeypatch.setattr(gpu, "implementation_mrr", lambda *args: calls.append(("mrr",) + args[3:]))
    monkeypatch.setattr(gpu, "softmax_benchmark", lambda *args: calls.append("softmax"))
    monkeypatch.setattr(
        gpu, "shape_scan", lambda device, repeats, tuned: calls.append(("shapes", tuned))
    )
    gpu.main()
    return calls, tuned


def test_json_has_each_part_as_it_ends(monkeypatch, tmp_path):
    """--json: the run's measurements, rewritten atomically after each part (here the faked
    parts record nothing but the run itself, the layers' table and the tuned configuration)."""
    path = tmp_path / "logs" / "gpu.json"
    monkeypatch.setattr(gpu, "RESULTS", gpu.Results())
    calls, tuned = run_main(monkeypatch, "--tune", "--no-softmax", "--json", str(path))
    written = json.loads(path.read_text())
    assert list(written) == ["run", "tuned", "layer_seconds"]
    assert written["run"]["device"] == "a faked GPU" and written["run"]["arguments"]["json"] == str(
        path
    )
    assert written["tuned"] == {"options": tuned[0], "precision": "tf32x3"}
    assert written["layer_seconds"] == {
        "nn.LSTM": {"seconds": 1},
        "nn.LSTM without TF32": {"seconds": 2},
    }
    assert [p.name for p in path.parent.iterdir()] == ["gpu.json"]  # no temporary file left


def test_tune_sweeps_first_and_measures_the_winner_beside_the_defaults(monkeypatch):
    calls, tuned = run_main(
        monkeypatch, "--sweep", "--tune", "--no-softmax"
    )  # as gpu_check.sh passes them
    layers = ["nn.LSTM", "MLSTM fused", "MLSTM triton", "MLSTM triton tuned"]
    assert calls == ["resources", "sweep", ("layers", layers), ("epoch", tuned), ("mrr", tuned)]
    calls, tuned = run_main(monkeypatch, "--sweep", "--tune", "--no-softmax", "--shapes")
    assert calls == [
        "resources",
        "sweep",
        ("layers", layers),
        ("epoch", tuned),
        ("mrr", tuned),
        ("shapes", tuned),
    ]


def test_sweep_comes_last_and_sweep_only_alone(monkeypatch):
    calls, _ = run_main(monkeypatch, "--sweep")
    layers = ["nn.LSTM", "MLSTM fused", "MLSTM triton"]
    assert calls == [
        "resources",
        ("layers", layers),
        ("epoch", None),
        ("mrr", None),
        "softmax",
        "sweep",
    ]
    calls, _ = run_main(monkeypatch, "--sweep-only")
    assert calls == ["resources", "sweep"]
    calls, _ = run_main(monkeypatch, "--sweep", "--shapes")  # the shapes before the untuned sweep
    assert calls[-2:] == [("shapes", None), "sweep"]


def test_shape_scan_times_each_shape_against_the_lstm_and_goes_on_past_a_failure(
    monkeypatch, capsys
):
    """Faked timings: each row's microseconds a step and ratios follow them, the tuned
    configuration gets rows of its own, and one that fails at a shape is reported there
    while the scan goes on."""
    monkeypatch.setattr(gpu, "SHAPES", ((4, 16), (2, 32)))

    def seconds(layer, x, grad, device, repeats):
        dim = x.shape[-1]
        if isinstance(layer, torch.nn.LSTM):
            return 1e-3 * dim, 0.5e-3 * dim
        if triton_launch._launch_overrides["forward"].get("PREFETCH") == 0:
            if dim == 32:
                raise RuntimeError("out of resource")
            return 2e-3 * dim, 1.5e-3 * dim
        return 3e-3 * dim, 1e-3 * dim

    def step(layer, x, grad):
        out = torch.ones(3)
        return (out + 0.25, out) if layer.implementation == "triton" else (out, out)

    monkeypatch.setattr(gpu, "layer_seconds", seconds)
    monkeypatch.setattr(gpu, "step", step)
    gpu.shape_scan(torch.device("cpu"), 1, ({"PREFETCH": 0}, "tf32x3"), seq=10)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows[0][:3] == ["4", "16", "nn.LSTM"] and float(rows[0][3]) == pytest.approx(
        1e-3 * 16 / 10 * 1e6
    )
    assert rows[1][:4] == ["4", "16", "1", "defaults"]  # split 1: no GPU
    assert [float(rows[1][i]) for i in (5, 7)] == pytest.approx(
        [3e-3 * 16 / 10 * 1e6, 1.6e-3 * 1e6]
    )
    assert rows[1][6] == "3.00x" and rows[1][8] == "2.00x" and rows[1][9] == "2.5e-01"
    assert (
        rows[2][3:5] == ["{'PREFETCH':", "0}"] and rows[2][7] == "2.00x"
    )  # the tuned configuration
    assert rows[3][:3] == ["2", "32", "nn.LSTM"] and rows[4][3] == "defaults"
    assert rows[5][:3] == ["2", "32", "failed"] and "out of resource" in " ".join(rows[5])
    recorded = gpu.RESULTS.parts["shapes"]  # what --json writes
    assert [(r["batch"], r["hidden"], r["layer"], r.get("options")) for r in recorded] == [
        (4, 16, "nn.LSTM", None),
        (4, 16, "MLSTM triton", {}),
        (4, 16, "MLSTM triton", {"PREFETCH": 0}),
        (2, 32, "nn.LSTM", None),
        (2, 32, "MLSTM triton", {}),
        (2, 32, "MLSTM triton", {"PREFETCH": 0}),
    ]
    assert recorded[1]["seconds"] == pytest.approx(3e-3 * 16) and recorded[1]["difference"] == 0.25
    assert recorded[5]["failed"] == "RuntimeError: out of resource" and "seconds" not in recorded[5]


def test_lstm_without_tf32_times_cudnn_in_fp32_and_restores_the_flag(monkeypatch, capsys):
    """The layer table's extra row: nn.LSTM timed with cuDNN's TF32 off, the Triton rows'
    ratios to it, and PyTorch's flag as it was."""
    seen = []

    def seconds(layer, x, grad, device, repeats):
        seen.append(torch.backends.cudnn.allow_tf32)
        return 0.002, 0.001

    monkeypatch.setattr(gpu, "layer_seconds", seconds)
    before = torch.backends.cudnn.allow_tf32
    measured = {
        "nn.LSTM": {"seconds": 0.0015, "forward_seconds": 0.0005},
        "MLSTM fused": {"seconds": 0.04, "forward_seconds": 0.01},
        "MLSTM triton": {"seconds": 0.003, "forward_seconds": 0.001},
    }
    row = gpu.lstm_without_tf32(measured, torch.device("cpu"), 1, batch=2, seq=3, dim=4)
    assert row == {"seconds": 0.002, "forward_seconds": 0.001} and seen == [False]
    assert torch.backends.cudnn.allow_tf32 == before
    printed = capsys.readouterr().out
    assert "nn.LSTM no TF32            2.0   1.33x       1.0   2.00x" in printed
    assert "fwd+bwd against nn.LSTM without TF32: MLSTM triton 1.50x" in printed
