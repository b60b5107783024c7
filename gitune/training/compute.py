"""How a trial computes on its device: precision, memory format and compilation.

On CUDA the defaults are bf16 autocast and channels_last (tensor cores; ResNets on 32 px images are
bandwidth-bound), on CPU plain fp32, so CPU results are exactly those of the plain code path. Autocast
wraps the forward pass and the loss only; the optimizer step and every metric reduction stay in fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from gitune.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Compute:
    device: torch.device
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    def autocast(self):
        """bf16 autocast on the device, or nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """The model input in the memory format the weights use."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the weights into the chosen memory format. Compilation is separate (`compiled`), so that the
        state dict, the optimizer and metric hooks keep addressing the plain module."""
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def compiled(self, model: torch.nn.Module):
        """The callable to train with: torch.compile(model) when asked, else the model itself."""
        return torch.compile(model) if self.compile else model

    def describe(self) -> dict[str, str]:
        return {"compute/device": self.device.type, "compute/precision": "bf16" if self.bf16 else "fp32",
                "compute/channels_last": str(self.channels_last).lower(),
                "compute/compile": str(self.compile).lower()}


def resolve_compute(train_cfg: dict, device: torch.device) -> Compute:
    """`train.precision` (auto: bf16 on CUDA when supported, else fp32), `train.channels_last` (null: on CUDA)
    and `train.compile` (off unless set) for this device."""
    precision = train_cfg.get("precision", "auto")
    if precision not in PRECISIONS:
        raise UserError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda = device.type == "cuda"
    if precision == "auto":
        bf16 = cuda and torch.cuda.is_bf16_supported()
    else:
        bf16 = precision == "bf16"
    channels_last = train_cfg.get("channels_last")
    channels_last = cuda if channels_last is None else bool(channels_last)
    return Compute(device, bf16=bf16, channels_last=channels_last, compile=bool(train_cfg.get("compile", False)))
