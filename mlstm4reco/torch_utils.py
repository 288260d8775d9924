"""Small torch helpers of the model (Spotlight's ``spotlight.torch_utils``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["device_for", "CarriedGenerator"]


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


class CarriedGenerator:
    """Torch draws (dropout masks) from a generator state of their own: seeded with
    ``seed`` at the first use and carried from one use to the next (one fit to the next),
    on the CPU and on ``device``; torch's global generators are as they were after each
    use."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.seed, self.device, self.state = seed, device, None

    @contextmanager
    def active(self):
        cuda = self.device.type == "cuda"
        index = self.device.index if self.device.index is not None else None
        devices = [index if index is not None else torch.cuda.current_device()] if cuda else []
        with torch.random.fork_rng(devices=devices):
            if self.state is None:
                torch.manual_seed(self.seed)  # every device's generator
            else:
                torch.set_rng_state(self.state[0])
                if cuda and self.state[1] is not None:
                    torch.cuda.set_rng_state(self.state[1], devices[0])
            try:
                yield
            finally:
                cuda_state = torch.cuda.get_rng_state(devices[0]) if cuda else None
                self.state = (torch.get_rng_state(), cuda_state)
