"""The generator file format, in one place: what the generator stage writes (`generator.pt`), how a file is
read and checked, and the payload dict that travels from the sweep to every classifier trial.

A file is a torch.save'd dict {"format": FORMAT, "arch": {GENERATOR_ARCH_KEYS}, "in_channels",
"image_size", "state_dict" (CPU tensors), "meta" (a JSON string)}. Reading it gives the payload
{"arch", "in_channels", "image_size", "state_dict", "source", "meta" (a dict)}; the sweep adds "key".

pretrain.py (the stage), trainables/generator.py (writes the file) and training/git.py (uses the network)
import from here; this module imports none of them, only the network class (models/munit.py).
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gitune.errors import UserError

GENERATOR_FILE = "generator.pt"
FORMAT = "gitune.generator/1"
GENERATOR_ARCH_KEYS = ("dim", "style_dim", "n_downsample", "n_res", "mlp_dim", "mlp_layers")


def export_generator(path: str, state_dict: dict[str, torch.Tensor], arch: dict[str, Any], in_channels: int,
                     image_size: int, meta: dict[str, Any] | None = None) -> None:
    """The portable generator file: weights plus what is needed to rebuild the network."""
    torch.save({"format": FORMAT, "arch": dict(arch), "in_channels": int(in_channels),
                "image_size": int(image_size), "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
                "meta": json.dumps(meta or {}, sort_keys=True, default=str)}, path)


def build_generator(payload: dict[str, Any]):
    """The MunitGenerator a payload (or a file's dict) describes, with its weights, on the CPU."""
    from gitune.models.munit import MunitGenerator

    net = MunitGenerator(payload["in_channels"], **{k: payload["arch"][k] for k in GENERATOR_ARCH_KEYS})
    net.load_state_dict(payload["state_dict"])
    return net


def read_generator_file(path: str | Path, where: str) -> dict[str, Any]:
    """Load and check a generator file into a payload; any problem is a one-line UserError naming `where`
    and the path."""
    p = Path(path)
    if p.is_dir():
        p = p / GENERATOR_FILE
    if not p.is_file():
        raise UserError(f"{where}: {p}: no such file (expected a {GENERATOR_FILE} written by gitune's generator "
                        f"stage, a folder holding one, or runs:/<run_id>)")
    bad_entry = _corrupted_entry(p)
    if bad_entry:
        raise UserError(f"{where}: {p}: not a readable generator checkpoint (corrupted: checksum mismatch in "
                        f"{bad_entry})")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise UserError(f"{where}: {p}: not a readable generator checkpoint ({_first_line(e)})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise UserError(f"{where}: {p}: not a gitune generator file (expected format {FORMAT}; a Tune "
                        f"checkpoint's state.pt is not one, use the generator.pt next to it)")
    arch = obj.get("arch")
    if not isinstance(arch, dict) or any(k not in arch for k in GENERATOR_ARCH_KEYS):
        raise UserError(f"{where}: {p}: the file lacks the generator architecture ({', '.join(GENERATOR_ARCH_KEYS)})")
    try:
        build_generator(obj)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: {p}: the weights do not match the architecture the file declares "
                        f"({_first_line(e)})") from None
    return {"arch": {k: arch[k] for k in GENERATOR_ARCH_KEYS}, "in_channels": obj["in_channels"],
            "image_size": obj["image_size"], "state_dict": obj["state_dict"], "source": str(p),
            "meta": json.loads(obj.get("meta") or "{}")}


def check_payload(payload: dict[str, Any], image_shape: Sequence[int], where: str = "generator") -> None:
    """A generator only fits images of the shape it was trained on."""
    channels, size = int(image_shape[0]), int(image_shape[-1])
    if payload["in_channels"] != channels or payload["image_size"] != size:
        raise UserError(f"{where}: {payload.get('source', '')}: the generator was trained on "
                        f"{payload['in_channels']}-channel {payload['image_size']} px images, but the data has "
                        f"{channels}-channel {size} px images")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _corrupted_entry(p: Path) -> str | None:
    """torch.load does not check the zip's CRCs: flipped bytes inside the weights would load as garbage."""
    try:
        if not zipfile.is_zipfile(p):
            return None  # truncated or not a zip: torch.load reports it
        with zipfile.ZipFile(p) as z:
            return z.testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None
