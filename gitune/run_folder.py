"""A sweep's run folder under --storage: a name of its own, the resolved spec it was started with, and the check
that `--resume` continues the same sweep.

Two sweeps started in the same second must not share a folder (their Tune states and checkpoints would mix),
and a resume with a changed spec must not pass silently: Tune restores the trials with the values they started
with, so a changed key would be ignored, and a generator trained for the old spec could be cached under the
new spec's key. `spec.yaml` (the masked `describe(spec)`) is written once, when the run starts, and never
rewritten: it always says what the run's trials and generator were trained with.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from gitune import storage
from gitune.errors import UserError
from gitune.redact import redact

SPEC_FILE = "spec.yaml"
# Never compared: where the space file was read from says nothing about the sweep.
IGNORED = ("source",)
# Accepted by a bare `--resume --force`: they change no trial's result (Tune keeps num_samples and the
# trials' values from the interrupted run; resources and retries only change how trials are run).
HARMLESS = ("description", "num_samples", "resources", "generator.resources", "failure.max_failures",
            "checkpoint.num_to_keep")
SHOWN_CHANGES = 6  # changes named in the error line; the rest are counted
VALUE_CHARS = 40  # longer values are cut in the error line


class _Absent:
    """A key one of the two specs does not have."""

    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def new_run_dir(root: str, name: str) -> str:
    """Create `<root>/<name>/<YYYYmmdd-HHMMSS>-<6 hex>` and return it. Names sort by start time; the random
    suffix (and, on a local disk, an exclusive mkdir) keeps two sweeps started in the same second apart."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run_dir = f"{root}/{name}/{stamp}-{secrets.token_hex(3)}"
        if storage.make_new_dir(run_dir):
            return run_dir
    raise RuntimeError(f"no free run folder name under {redact(root)}/{name} after 100 tries")


def write_spec(run_dir: str, spec_yaml: str) -> None:
    """Store the resolved spec (masked: credentials stay out of the storage) in the run folder."""
    storage.write_text(f"{run_dir}/{SPEC_FILE}", redact(spec_yaml))


def read_spec(run_dir: str) -> str | None:
    """The spec a run was started with; None for a folder written before gitune stored it."""
    return storage.read_text(f"{run_dir}/{SPEC_FILE}")


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key → value; a distribution (`{grid: [...]}`) is one value, so a changed space entry is one key. An
    empty mapping has no keys: an entry removed from it shows as that entry gone."""
    from gitune.spaces import DISTRIBUTIONS

    if not isinstance(tree, dict) or (len(tree) == 1 and next(iter(tree)) in DISTRIBUTIONS):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def spec_changes(old_yaml: str, new_yaml: str) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every key whose value differs; a missing key's value is `_ABSENT`. A key
    missing on one side and null on the other is no change: keys added to gitune later default to null, and a
    run started before one existed must resume without --force."""
    from gitune.spaces import safe_load

    old, new = flat(safe_load(old_yaml) or {}), flat(safe_load(redact(new_yaml)) or {})
    keys = [k for k in {**old, **new} if k.split(".", 1)[0] not in IGNORED]
    pairs = [(k, old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in keys]
    return [(k, a, b) for k, a, b in pairs if a != b and not (a is _ABSENT and b is None or b is _ABSENT and a is None)]


def show(value: Any) -> str:
    """One short line for a value in the error message."""
    text = repr(value) if value is _ABSENT else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 1] + "…"


def matches(key: str, allowed: tuple[str, ...]) -> bool:
    """`key` is one of `allowed` or lies under one (`config.train` covers `config.train.epochs`)."""
    return any(key == a or key.startswith(a + ".") for a in allowed)


def forced_keys(force: str | None) -> tuple[str, ...]:
    """--force's keys: none without the flag; the harmless ones with it, plus any it names (a config key also
    as --set writes it: `train.epochs` for `config.train.epochs`)."""
    if force is None:
        return ()
    named = [k.strip() for k in force.split(",") if k.strip()]
    return HARMLESS + tuple(named) + tuple(f"config.{k}" for k in named)


def check_resume(run_dir: str, new_yaml: str, force: str | None) -> None:
    """Refuse (one line, exit 2) to resume `run_dir` with a spec that differs from the one it started with,
    except in keys --force accepts; accepted changes are printed, with what they do."""
    old = read_spec(run_dir)
    if old is None:
        print(f"gitune: --resume: {redact(run_dir)} holds no {SPEC_FILE} (started by an older gitune); "
              f"the spec cannot be compared with the one it started with")
        return
    changes = spec_changes(old, new_yaml)
    allowed = forced_keys(force)
    refused = [c for c in changes if not matches(c[0], allowed)]
    if refused:
        raise UserError(f"--resume: {run_dir}: the spec changed since this run started: {_listed(refused)}; "
                        f"resume with the same spec, start a new run without --resume, or accept the changes "
                        f"with {_force_hint(refused)} (restored trials keep the values they started with)")
    if changes:
        print(f"gitune: --resume --force: accepted changes: {_listed(changes)} (restored trials keep the values "
              f"they started with)")


def _listed(changes: list[tuple[str, Any, Any]]) -> str:
    shown = [f"{k}: {show(a)} → {show(b)}" for k, a, b in changes[:SHOWN_CHANGES]]
    more = len(changes) - SHOWN_CHANGES
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _force_hint(refused: list[tuple[str, Any, Any]]) -> str:
    keys = [k for k, _, _ in refused if not matches(k, HARMLESS)]
    return "--force" if not keys else f"--force {','.join(keys)}"
