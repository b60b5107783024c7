"""How a trial computes on its device: precision, memory format and compilation.

On CUDA the defaults are bf16 autocast and channels_last (tensor cores; ResNets on 32 px images are
bandwidth-bound), on CPU plain fp32, so CPU results are exactly those of the plain code path. Autocast
wraps the training forward pass and the loss only: augmentation, GIT's generator, the optimizer step,
evaluation and every invariance metric stay in fp32 (`full_precision`).
"""

from __future__ import annotations

import contextlib
import os
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

    def compiled(self, model: torch.nn.Module, threads: int | None = None):
        """The callable to train with: torch.compile(model) when asked, else the model itself.

        Static shapes (dynamic=False): the trial's training batches all have one size (the loader drops the
        last partial batch when compiling), so there is one compilation per trial, not a second, dynamic one
        in epoch 1. `threads`: Inductor's compile workers, at most the trial's CPUs, so that packed trials
        compiling at once do not oversubscribe the node (its default is one worker per core of the node)."""
        if not self.compile:
            return model
        if threads:
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = max(1, int(threads))
        return torch.compile(model, dynamic=False)

    def describe(self) -> dict[str, str]:
        return {"compute/device": self.device.type, "compute/precision": "bf16" if self.bf16 else "fp32",
                "compute/channels_last": str(self.channels_last).lower(),
                "compute/compile": str(self.compile).lower()}


@contextlib.contextmanager
def full_precision(device: torch.device):
    """Autocast off on `device`, and on CUDA true fp32 (IEEE) for cuDNN convolutions and matmuls instead of
    TF32, which cuDNN uses for fp32 convs by default on Ampere and later: evaluation and every invariance
    metric read fp32 logits, whatever precision the trial trains in, so that accuracy and eKLD depend on the
    weights, not on the rounding of bf16 or TF32's 10-bit mantissa, and GPU numbers compare with CPU ones."""
    with torch.autocast(device_type=device.type, enabled=False), _ieee_fp32(device.type == "cuda"):
        yield


FP32_KNOBS = ("cudnn.conv", "cuda.matmul")  # torch.backends.<knob>.fp32_precision ("ieee" | "tf32" | "none")


@contextlib.contextmanager
def _ieee_fp32(enabled: bool):
    """Set torch.backends' fp32_precision of cuDNN convs and CUDA matmuls to "ieee" for the block, then back.
    Only the new per-backend API is used: torch refuses to read its legacy allow_tf32 flags once they mix."""
    knobs = []
    if enabled:
        for path in FP32_KNOBS:
            obj = torch.backends
            for part in path.split("."):
                obj = getattr(obj, part, None)
            if obj is not None and hasattr(obj, "fp32_precision"):
                knobs.append((obj, obj.fp32_precision))
                obj.fp32_precision = "ieee"
    try:
        yield
    finally:
        for obj, value in knobs:
            obj.fp32_precision = value


CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")  # the two workspace settings cuBLAS is deterministic with


def set_deterministic(enabled: bool) -> None:
    """`train.deterministic`: deterministic kernels (an error, not a warning, for an op that has none),
    deterministic cuDNN without autotuning, and a fixed cuBLAS workspace. Call it before the trial's first
    CUDA work: cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it sets up its workspace. Off, it undoes what an
    earlier trial in the same worker process switched on."""
    if enabled and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in CUBLAS_DETERMINISTIC:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC[0]
    torch.backends.cudnn.deterministic = enabled
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    if enabled:
        torch.backends.cudnn.benchmark = False


def cudnn_autotune(deterministic: bool) -> None:
    """cuDNN benchmarks its conv algorithms once per input shape and keeps the fastest: a trial sees a
    handful of shapes, all warm after its first epoch. Off for deterministic runs, where the chosen
    algorithm could differ from run to run."""
    torch.backends.cudnn.benchmark = not deterministic


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
