"""One Tune stage (the generator pretraining or the classifier sweep): start it, or continue an interrupted one,
and pick its best trial. Both stages go through here so that they resume, report and choose alike."""

from __future__ import annotations

import math
import numbers
from typing import Any

from gitune.errors import UserError


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
        return _fit(_restore(tune, trainable, stage_dir, param_space(spec)))
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
                                  scheduler=scheduler(spec), search_alg=search_algorithm(spec))
    return _fit(tune.Tuner(trainable, param_space=param_space(spec), run_config=run_config,
                           tune_config=tune_config))


def _fit(tuner):
    """tuner.fit(), with the SIGINT handler put back afterwards: Tune installs its own for the fit and leaves
    it behind after a normal end, so a Ctrl-C (or SIGTERM, gitune.signals) between the generator stage and the
    classifier stage would only log "Stop signal received" instead of stopping the sweep."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()
    previous = signal.getsignal(signal.SIGINT)
    try:
        return tuner.fit()
    finally:
        signal.signal(signal.SIGINT, previous)


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
