"""The checkpoint state both trainables save and restore: one `state.pt` per Tune checkpoint holding the
state dicts of the trial's parts (networks, optimizers, schedules), its progress (epoch or iteration), its
named RNG streams with the device type they live on, and torch's global RNG, so that a restored trial goes
on exactly where it stopped. Ray-free: a checkpoint is anything with `as_directory()`.

A checkpoint whose state cannot be read (a truncated or garbled state.pt) is not the end of the trial: when the
checkpoint has a `path` and a (pyarrow) `filesystem`, as a Tune checkpoint has, the older checkpoints Tune kept
beside it (checkpoint_NNNNNN folders of the trial, `checkpoint.num_to_keep`) are tried, newest first.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # Tune's checkpoint folders in a trial folder

log = logging.getLogger(__name__)


def state_of(parts: dict[str, Any], gens: dict[str, torch.Generator], **progress: int) -> dict[str, Any]:
    """The state to save: each part's state_dict under its key, the progress keys (e.g. epoch=3), the RNG
    streams by name, their device type and torch's global RNG."""
    return {**{key: part.state_dict() for key, part in parts.items()}, **progress,
            "rng": {k: g.get_state() for k, g in gens.items()},
            "rng_device": next(iter(gens.values())).device.type,
            "torch_rng": torch.get_rng_state()}


def save_state(folder: str, parts: dict[str, Any], gens: dict[str, torch.Generator], **progress: int) -> None:
    """Write `state_of(...)` as folder/STATE_FILE, and the progress alone as folder/PROGRESS_FILE (read to
    compare checkpoints without loading them, newest_checkpoint)."""
    torch.save(state_of(parts, gens, **progress), os.path.join(folder, STATE_FILE))
    with open(os.path.join(folder, PROGRESS_FILE), "w") as f:
        json.dump(progress, f)


def newest_checkpoint(checkpoint, progress: str):
    """The checkpoint a trial restores from: the one Tune hands it, or a newer one in the same trial folder.

    Tune records a trial's checkpoints in its experiment state only every few checkpoints (or seconds); after
    the driver died, the trial folder can hold newer ones than the state names, and the trial sent the MLflow
    points of their steps already. Restoring from Tune's would train, and log, those steps a second time. So
    the checkpoint_NNNNNN folder with the highest `progress` (epoch, iteration) in its PROGRESS_FILE wins;
    folder numbers do not tell, since a restored trial writes its next ones over the numbers after Tune's.
    Needs a checkpoint with `path` and a (pyarrow) `filesystem`; anything else is returned as it is."""
    path, filesystem = getattr(checkpoint, "path", None), getattr(checkpoint, "filesystem", None)
    if checkpoint is None or not path or filesystem is None:
        return checkpoint
    from pyarrow import fs as pafs

    def step(folder: str) -> int | None:
        try:
            with filesystem.open_input_stream(f"{folder}/{PROGRESS_FILE}") as src:
                return int(json.loads(src.read())[progress])
        except Exception:  # noqa: BLE001 - none (an older gitune), or half-written: not a candidate
            return None

    own = step(path)
    if own is None:
        return checkpoint
    best, best_step = path, own
    parent = path.rstrip("/").rsplit("/", 1)[0]
    for info in filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True)):
        if info.type != pafs.FileType.Directory or not CHECKPOINT_DIR.fullmatch(info.base_name) or info.path == path:
            continue
        found = step(info.path)
        if found is not None and found > best_step:
            best, best_step = info.path, found
    if best == path:
        return checkpoint
    log.warning("restoring from %s (%s %d), newer than the checkpoint Tune recorded (%s, %s %d): the driver "
                "stopped before it recorded the newer one", best, progress, best_step, path, progress, own)
    return type(checkpoint)(best, filesystem)


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
    checkpoint from another device type (see restore_streams). An unreadable state falls back to the newest
    readable older checkpoint kept beside it, with a warning naming both; none readable: RuntimeError naming
    each one tried."""
    required = (*parts, progress, "rng", "torch_rng")
    where = f"{checkpoint.path}/{STATE_FILE}" if getattr(checkpoint, "path", None) else None
    try:
        with checkpoint.as_directory() as d:
            where = where or os.path.join(d, STATE_FILE)
            state = _read_state(Path(d, STATE_FILE).read_bytes, required)
    except Exception as e:  # noqa: BLE001 - a missing, truncated or garbled file: try the older checkpoints
        state = _older_state(checkpoint, where or repr(checkpoint), required, e, progress)
    for key, part in parts.items():
        part.load_state_dict(state[key])
    step = int(state[progress])
    saved = state["rng"]
    if isinstance(saved, torch.Tensor):  # a one-stream checkpoint from before the streams were named
        saved = dict.fromkeys(gens, saved)
    restore_streams(gens, saved, state.get("rng_device"), reseeds(step), f"{progress} {step}")
    torch.set_rng_state(state["torch_rng"])
    return step


def _read_state(read: Callable[[], bytes], required: tuple[str, ...]) -> dict[str, Any]:
    """The state dict in the bytes `read()` returns, checked to hold every `required` key before anything is
    loaded from it (so a bad file leaves the trial's parts untouched)."""
    state = torch.load(io.BytesIO(read()), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"not a state dict ({type(state).__name__})")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in it")
    return state


def _reason(e: Exception) -> str:
    first = (str(e).strip().splitlines() or [""])[0][:160]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _older_state(checkpoint, where: str, required: tuple[str, ...], error: Exception,
                 progress: str) -> dict[str, Any]:
    """The state of the newest readable checkpoint older than `checkpoint` (whose state file `where` failed
    with `error`) in its trial folder, where Tune keeps `checkpoint.num_to_keep` of them."""
    failed = [f"{where} ({_reason(error)})"]
    path, filesystem = getattr(checkpoint, "path", None), getattr(checkpoint, "filesystem", None)
    if not path or filesystem is None:
        raise RuntimeError(f"checkpoint unreadable, and no older checkpoint to fall back on: {failed[0]}") from error
    parent, name = path.rstrip("/").rsplit("/", 1)
    older = []
    match = CHECKPOINT_DIR.fullmatch(name)
    if match:
        from pyarrow import fs as pafs

        for info in filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True)):
            m = CHECKPOINT_DIR.fullmatch(info.base_name)
            if info.type == pafs.FileType.Directory and m and int(m.group(1)) < int(match.group(1)):
                older.append((int(m.group(1)), info.path))
    for _, folder in sorted(older, reverse=True):
        file = f"{folder}/{STATE_FILE}"

        def read(file: str = file) -> bytes:
            with filesystem.open_input_stream(file) as src:
                return src.read()

        try:
            state = _read_state(read, required)
        except Exception as e:  # noqa: BLE001 - as unreadable as the first: try the next older one
            failed.append(f"{file} ({_reason(e)})")
            continue
        log.warning("checkpoint state %s is unreadable (%s): restoring from the older checkpoint %s (%s %s) "
                    "instead%s", where, _reason(error), folder, progress, state[progress],
                    "; also unreadable: " + "; ".join(failed[1:]) if len(failed) > 1 else "")
        return state
    raise RuntimeError(f"no readable checkpoint to restore the trial from: {'; '.join(failed)}"
                       + ("" if older else f" (no older checkpoint kept in {parent})")) from error
