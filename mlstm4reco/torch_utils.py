"""Small torch helpers of the model (Spotlight's ``spotlight.torch_utils``)."""

from __future__ import annotations

import torch

__all__ = ["device_for"]


def device_for(device: str | torch.device | None, use_cuda: bool | None) -> torch.device:
    """The torch device of ``ImplicitSequenceModel(device=..., use_cuda=...)``: 'auto' (or
    None) is CUDA when there is a GPU, else the CPU; ``use_cuda`` is Spotlight's flag."""
    if use_cuda is not None and device not in (None, "auto"):
        raise ValueError(
            f"give device or use_cuda, not both (device={device!r}, use_cuda={use_cuda})"
        )
    if use_cuda is not None:
        device = "cuda" if use_cuda else "cpu"
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was asked for, but CUDA is not available")
    return device
