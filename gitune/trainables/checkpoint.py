"""The checkpoint state both trainables save and restore: one `state.pt` per Tune checkpoint holding the
state dicts of the trial's parts (networks, optimizers, schedules), its progress (epoch or iteration), its
named RNG streams with the device type they live on, and torch's global RNG, so that a restored trial goes
on exactly where it stopped. Ray-free: a checkpoint is anything with `as_directory()`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch

STATE_FILE = "state.pt"

log = logging.getLogger(__name__)


def state_of(parts: dict[str, Any], gens: dict[str, torch.Generator], **progress: int) -> dict[str, Any]:
    """The state to save: each part's state_dict under its key, the progress keys (e.g. epoch=3), the RNG
    streams by name, their device type and torch's global RNG."""
    return {**{key: part.state_dict() for key, part in parts.items()}, **progress,
            "rng": {k: g.get_state() for k, g in gens.items()},
            "rng_device": next(iter(gens.values())).device.type,
            "torch_rng": torch.get_rng_state()}


def save_state(folder: str, parts: dict[str, Any], gens: dict[str, torch.Generator], **progress: int) -> None:
    """Write `state_of(...)` as folder/STATE_FILE."""
    torch.save(state_of(parts, gens, **progress), os.path.join(folder, STATE_FILE))


def restore_streams(gens: dict[str, torch.Generator], saved: dict[str, torch.Tensor], saved_device: str | None,
                    reseeds: dict[str, int], where: str) -> bool:
    """Load the saved RNG streams; False when they were reseeded instead. A CPU generator's state does not
    fit a CUDA generator (nor the reverse), so a trial retried on another device type reseeds each stream
    with its seed in `reseeds` (derived from the trial's seed and where it resumes: `where` says which, for
    the warning): reproducible, but not the draws the first device would have made. `saved_device` None: a
    checkpoint from before the device type was stored."""
    device = next(iter(gens.values())).device.type
    if saved_device in (None, device):
        try:
            for k, g in gens.items():
                if k in saved:
                    g.set_state(saved[k])
            return True
        except RuntimeError:
            if saved_device is not None:
                raise
    log.warning("RNG streams saved on %s cannot be loaded into %s generators: reseeding them for %s "
                "(the run goes on, with other random draws than an uninterrupted run)",
                saved_device or "another device type", device, where)
    for name, g in gens.items():
        g.manual_seed(reseeds[name])
    return False


def restore_state(checkpoint, parts: dict[str, Any], gens: dict[str, torch.Generator], progress: str,
                  reseeds: Callable[[int], dict[str, int]]) -> int:
    """Load a checkpoint's STATE_FILE into `parts` and `gens` and torch's global RNG; returns its progress
    value (the `progress` key, e.g. "epoch"). `reseeds(progress value)` gives each stream's seed for a
    checkpoint from another device type (see restore_streams)."""
    with checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=True)
    for key, part in parts.items():
        part.load_state_dict(state[key])
    step = int(state[progress])
    saved = state["rng"]
    if isinstance(saved, torch.Tensor):  # a one-stream checkpoint from before the streams were named
        saved = dict.fromkeys(gens, saved)
    restore_streams(gens, saved, state.get("rng_device"), reseeds(step), f"{progress} {step}")
    torch.set_rng_state(state["torch_rng"])
    return step
