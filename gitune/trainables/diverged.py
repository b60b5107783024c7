"""A trial whose loss became NaN or inf ends at once, FAILED, and is not retried.

Tune retries every trial error up to `failure.max_failures` (forever with -1), from the last checkpoint and
its RNG state: a diverged trial would diverge again, the same way, each time. So a diverged trial does not
raise: it reports one last result that says so (DIVERGED = 1, the sweep's metric NaN, so no scheduler,
searcher or `best_result` takes it for a good one), marks its MLflow run FAILED with the reason, and returns.
The sweep counts it with the errored trials.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

DIVERGED = "gitune/diverged"  # 1 in a trial's last result when its loss became NaN/inf
REASON = "gitune/error"  # ... and why

log = logging.getLogger(__name__)


def end_diverged(run, metric: str | None, reason: str, progress: dict[str, Any]) -> None:
    """Close `run` (a TrialRun, or None untracked) FAILED with `reason` and report the last result; the caller
    returns from the trainable right after. `progress` holds the trial's time keys (epoch / iteration)."""
    log.error("trial diverged: %s; it ends FAILED and is not retried (it would diverge again)", reason)
    if run is not None:
        run.set_tags({"gitune.error": reason, "gitune.diverged": "true"})
        run.finish("FAILED")
    result = {**progress, DIVERGED: 1, REASON: reason}
    if metric:
        result[metric] = float("nan")  # Tune requires the sweep's metric in every result
    tune.report(result)


def diverged(result) -> bool:
    """Whether a Tune Result (or a last-result dict) is that of a diverged trial."""
    metrics = result if isinstance(result, dict) else (result.metrics or {})
    return bool(metrics.get(DIVERGED))
