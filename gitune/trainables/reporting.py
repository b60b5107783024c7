"""One Tune report with its checkpoint, written so that nothing is logged twice and a write that fails says so.

The trial's MLflow points for the step go into the checkpoint (gitune.trial_run) and are sent only after
`tune.report` returned, that is once Tune holds the checkpoint that covers them: a trial retried from that
checkpoint does not train, nor log, those steps again. A checkpoint that cannot be written (a full or read-only
disk, here or in the storage) ends the trial with a reason naming the step and the place.
"""

from __future__ import annotations

import tempfile
from typing import Any, Callable

from ray import tune

from gitune.redact import redact


class CheckpointWriteError(RuntimeError):
    """A trial's checkpoint could not be written: the trial ends with this as its reason."""


def report_step(metrics: dict[str, Any], write: Callable[[str], None], what: str, run=None) -> None:
    """tune.report(metrics) with a checkpoint folder that `write(folder)` fills and the queue of `run` (a
    TrialRun, or None), then send that queue. `what` names the step for errors ("epoch 3")."""
    with tempfile.TemporaryDirectory(prefix="gitune-checkpoint-") as folder:
        try:
            write(folder)
            if run is not None:
                run.save(folder)
        except OSError as e:
            raise CheckpointWriteError(f"could not write the checkpoint of {what} in {folder}: {e}") from None
        try:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        except OSError as e:  # pyarrow's IO errors are OSErrors too
            raise CheckpointWriteError(f"could not store the checkpoint of {what} in {redact(_storage())}: "
                                       f"{e}") from None
    if run is not None:
        run.flush()


def _storage() -> str:
    """The trial's folder in the sweep's storage (where Tune copies checkpoints), as far as Ray tells."""
    ctx = tune.get_context()
    try:
        return ctx.get_storage().trial_fs_path
    except Exception:  # noqa: BLE001 - a Ray without get_storage: the local trial folder
        return ctx.get_trial_dir()
