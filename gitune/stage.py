"""One Tune stage (the generator pretraining or the classifier sweep): start it, or continue an interrupted one,
and pick its best trial. Both stages go through here so that they resume, report and choose alike."""

from __future__ import annotations

import math
import numbers
import time
from typing import Any

from gitune.errors import UserError
from gitune.redact import redact


def scheduler(spec):
    """ASHA or FIFO, as the spec says (the generator stage is always FIFO: every generator runs to the end)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.scheduler
    if s["type"] == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="epoch", max_t=s["max_t"], grace_period=s["grace_period"],
                         reduction_factor=s["reduction_factor"])


def run_stage(spec, trainable, stage_dir: str, ctx, resume: bool, metric_columns: dict[str, str],
              sort_by_metric: bool = False):
    """Run `spec`'s trials of `trainable` (its parameters already bound) in `stage_dir` (storage/name) and
    return the ResultGrid. With `resume` and an experiment state saved there, the interrupted trials continue
    (errored ones too); otherwise a new experiment starts. `ctx` (None: not tracked) closes the trials'
    MLflow runs that the trials themselves could not."""
    from ray import tune

    from gitune.spaces import param_space, search_algorithm

    trainable = tune.with_resources(trainable, {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]})
    if resume and tune.Tuner.can_restore(stage_dir):
        check_experiment_state(stage_dir)  # Tune itself would log the error and start the stage over
        started = time.monotonic()
        return _closed(_fit(_restore(tune, trainable, stage_dir, param_space(spec)), stage_dir), ctx, spec, started)
    from gitune.tracking import trial_status_callback

    storage, name = stage_dir.rsplit("/", 1)
    reporter = tune.CLIReporter(metric_columns=metric_columns,
                                parameter_columns=[k.replace(".", "/") for k in spec.space],
                                max_report_frequency=15, sort_by_metric=sort_by_metric)
    run_config = tune.RunConfig(
        name=name, storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoint["num_to_keep"]),
        failure_config=tune.FailureConfig(max_failures=spec.failure["max_failures"]),
        callbacks=[trial_status_callback(ctx, spec.scheduler["type"])] if ctx is not None else [],
        progress_reporter=reporter, verbose=1)
    tune_config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
                                  scheduler=scheduler(spec), search_alg=search_algorithm(spec),
                                  time_budget_s=spec.time_budget_s)
    started = time.monotonic()
    return _closed(_fit(tune.Tuner(trainable, param_space=param_space(spec), run_config=run_config,
                                   tune_config=tune_config), stage_dir), ctx, spec, started)


def _closed(results, ctx, spec, started: float):
    """The stage's results, after every trial's MLflow run was made complete and closed from its last checkpoint
    where the trial could not do it (gitune.tracking.catch_up). `results.time_budget_hit`: the stage ran into
    `time_budget_s`, so trials cut off mid-way were stopped by the budget, not by Ctrl-C (nothing to resume)."""
    budget = getattr(spec, "time_budget_s", None)
    results.time_budget_hit = budget is not None and time.monotonic() - started >= budget
    if ctx is not None:
        from gitune.tracking import catch_up

        catch_up(ctx, results, spec.scheduler["type"], cut_off,
                 cut_label="time_budget" if results.time_budget_hit else None)
    return results


def cut_off(result) -> bool:
    """A trial Ctrl-C/SIGTERM stopped mid-way: no error, not diverged, and neither `done` nor its last epoch or
    iteration in its last result (a restored stage can lose `done`)."""
    from gitune.trainables.diverged import diverged

    last, config = result.metrics or {}, result.config or {}
    if result.error is not None or diverged(result) or last.get("done"):
        return False
    ends = {"epoch": (config.get("train") or {}).get("epochs"),
            "iteration": (config.get("generator") or {}).get("iterations")}
    return not any(last.get(k) is not None and v is not None and last[k] >= v for k, v in ends.items())


def _fit(tuner, stage_dir: str | None = None):
    """tuner.fit(), with the SIGINT handler put back afterwards: Tune installs its own for the fit and leaves
    it behind after a normal end, so a Ctrl-C (or SIGTERM, gitune.signals) between the generator stage and the
    classifier stage would only log "Stop signal received" instead of stopping the sweep."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _fit_on(tuner, stage_dir)
    previous = signal.getsignal(signal.SIGINT)
    try:
        return _fit_on(tuner, stage_dir)
    finally:
        signal.signal(signal.SIGINT, previous)


def _fit_on(tuner, stage_dir: str | None):
    """tuner.fit(); when it fails and the storage no longer takes writes (Tune then cannot even read back the
    error files it half wrote), one line saying so instead of Tune's traceback."""
    from gitune import storage

    try:
        return tuner.fit()
    except Exception:
        reason = storage.write_failure(stage_dir) if stage_dir else None
        if reason is None:
            raise
        raise storage.StorageFailed(f"error: {redact(stage_dir)}: the storage stopped taking writes ({reason}); "
                                    f"the trials' checkpoints up to then are kept") from None


def _restore(tune, trainable, stage_dir: str, space: dict[str, Any]):
    """Tune refuses a param_space whose keys differ from the saved one: one line for the user, not a trace."""
    try:
        return tune.Tuner.restore(stage_dir, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                  param_space=space)
    except ValueError as e:
        if "param_space" not in str(e):
            raise
        raise UserError(f"--resume: {stage_dir}: the resolved config keys differ from the interrupted run's "
                        f"(space file or gitune version changed); resume with the same ones, or start a "
                        f"new run without --resume") from None


# The files Tune reads when it restores an experiment (Ray 2.x), newest of each pattern, and how it reads them:
# tuner.pkl by Tuner.restore; the others in fit(), where Tune logs any error, then silently starts the stage
# over with new trials ("Restarting experiment").
TUNER_FILE = "tuner.pkl"
EXPERIMENT_STATE = "experiment_state-*.json"
SEARCH_STATES = ("basic-variant-state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl",
                 "callback-states-*.pkl")


def check_experiment_state(stage_dir: str) -> None:
    """Raise UserError (one line) unless Tune can read the experiment state it would restore from `stage_dir`
    (a local path or URI holding tuner.pkl): tuner.pkl, the newest experiment_state-*.json with each trial's
    state in it, and the newest search-algorithm and callback states. Reads only; starts nothing."""
    import fnmatch

    from pyarrow import fs as pafs

    from gitune import storage

    filesystem, path = storage.filesystem(stage_dir)
    names = [i.base_name for i in filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
             if i.type == pafs.FileType.File]
    state_files = fnmatch.filter(names, EXPERIMENT_STATE)
    if not state_files:
        _unreadable(stage_dir, f"no {EXPERIMENT_STATE} beside {TUNER_FILE}")
    checks = [(TUNER_FILE, _load_pickle), (max(state_files), _load_experiment_state)]
    checks += [(max(found), _load_pickle) for found in (fnmatch.filter(names, p) for p in SEARCH_STATES) if found]
    for name, load in checks:
        try:
            with filesystem.open_input_stream(f"{path}/{name}") as src:
                data = src.read()
            if not data:
                raise _Corrupt("empty file")
            load(data)
        except Exception as e:  # noqa: BLE001 - whatever the decoder raises: the file cannot be restored from
            _unreadable(f"{stage_dir}/{name}", _reason(e))


class _Corrupt(Exception):
    """A state file that decodes but is not what Tune wrote (its message is the whole reason)."""


def _load_pickle(data: bytes) -> None:
    import ray.cloudpickle as cloudpickle

    cloudpickle.loads(data)


def _load_experiment_state(data: bytes) -> None:
    """Decode the state as TuneController.resume does, and each trial's state and run metadata in it."""
    import json

    try:
        from ray.tune.utils.serialization import _loads_with_cloudpickle as loads
    except ImportError:  # another Ray version: the file is JSON all the same
        loads = json.loads
    state = loads(data)
    if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list) or "runner_data" not in state:
        raise _Corrupt("not a Tune experiment state")
    for i, entry in enumerate(state["trial_data"]):
        try:
            trial, metadata = entry
            if not isinstance(loads(trial), dict) or not isinstance(json.loads(metadata), dict):
                raise _Corrupt("not a dict")
        except Exception as e:  # noqa: BLE001
            raise _Corrupt(f"trial {i + 1} of {len(state['trial_data'])}: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    if isinstance(e, _Corrupt):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0][:120]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _unreadable(path: str, reason: str) -> None:
    raise UserError(f"--resume: {path}: Tune's experiment state is unreadable ({reason}); this run cannot be "
                    f"continued: start a new run without --resume (the folder is left as it is)")


def finite(value: Any) -> bool:
    """A real number that can be compared: NaN compares false both ways, so max() could hand it the win."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def best_result(results, metric: str, mode: str, need_checkpoint: bool = False):
    """The trial result with the best last `metric` ("max" or "min"), or None when no trial qualifies:
    errored or diverged trials, missing or non-finite values, and (with `need_checkpoint`) trials without a checkpoint
    never win."""
    from gitune.trainables.diverged import diverged

    ok = [r for r in results if r.error is None and not diverged(r) and finite((r.metrics or {}).get(metric))
          and (r.checkpoint is not None or not need_checkpoint)]
    if not ok:
        return None
    sign = 1 if mode == "max" else -1
    return max(ok, key=lambda r: sign * r.metrics[metric])
