"""MLflow tracking: one experiment per sweep name, a parent run per invocation, a child run per trial.

Why not MLflowLoggerCallback: it logs scalars only, one call per metric, from the driver, and opens a
second run when a trial restarts. Here the trial logs its own batched metrics and figures against a
child run it finds again by its Tune trial id, so a restored trial continues the same run; a driver
callback only closes runs whose trial could not (ASHA stops, errors, Ctrl-C).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from gitune.errors import UserError
from gitune.redact import redact

T = TypeVar("T")

ROLE, TRIAL_ID, SWEEP_PATH = "gitune.role", "gitune.trial_id", "gitune.sweep_path"
STOPPED_EARLY, STOPPED_AT = "gitune.stopped_early", "gitune.stopped_at_epoch"
PARENT = "mlflow.parentRunId"
MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
MAX_PARAMS = 100  # ... and on params per call


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to find its sweep in MLflow; small and picklable (sent via the object store)."""

    uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Retry MLflow calls that hit a busy SQLite file or a flaky server; trials must not die of it."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - MLflow wraps sqlite/http errors in several types
            text = str(e).lower()
            transient = any(s in text for s in ("locked", "busy", "timed out", "connection", "503", "502"))
            if not transient or i == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def resolve_uri(uri: str | None) -> str:
    """MLflow's own default (sqlite:///mlflow.db in the working directory) unless given; paths made absolute
    so that trial workers, which run in other directories, write to the same store."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any trial starts, when a tracking server does not answer."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user's own server
                if resp.status != 200:
                    raise UserError(f"--tracking-uri {uri}: MLflow server answered {resp.status} on /health")
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise UserError(f"--tracking-uri {uri}: MLflow server not reachable ({reason})") from None
    elif uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise UserError(f"--tracking-uri {uri}: folder {db.parent} does not exist")


def git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _artifact_location(uri: str) -> str | None:
    """Keep a local store's artifacts next to its database (like `mlflow server` does), not in the cwd."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """Hold an exclusive lock on a SQLite store's file. MLflow creates the tables of a new store on first use,
    and two sweeps doing so at once fail ("table ... already exists"); this lets one do it while the other
    waits. flock on Linux is independent of SQLite's own (fcntl) locks. Other stores: no lock."""
    import fcntl

    path = uri[len("sqlite:///"):].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    if path in ("", ":memory:"):
        yield
        return
    with open(path, "ab") as db:  # an empty file is an empty SQLite database
        fcntl.flock(db, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(db, fcntl.LOCK_UN)


def _create_experiment(client, name: str, uri: str) -> str:
    """Create the experiment; when another sweep created it a moment ago (a tracking server, two drivers at
    once), take that one."""
    from mlflow.exceptions import MlflowException

    try:
        return retry(lambda: client.create_experiment(name, artifact_location=_artifact_location(uri)))
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    exp = retry(lambda: client.get_experiment_by_name(name))
    if exp is None:
        raise MlflowException(f"experiment {name!r} exists but cannot be found by name")
    return exp.experiment_id


def start_sweep(name: str, uri: str, sweep_path: str, spec_yaml: str, space_file: Path,
                params: dict[str, Any], resume: bool) -> TrackingContext:
    """Create (or on --resume, reopen) the experiment and this invocation's parent run, on the driver."""
    from mlflow.entities import Param

    with _first_use_lock(uri):  # a fresh SQLite store: one process creates its tables
        client = _client(uri)
        exp = retry(lambda: client.get_experiment_by_name(name))
        if exp is None:
            exp_id = _create_experiment(client, name, uri)
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                retry(lambda: client.restore_experiment(exp_id))
    if resume:
        # The path is compared here, not in the filter: it holds the user's sweep name, and a quote in it
        # would end the filter's string literal.
        runs = retry(lambda: client.search_runs([exp_id], f"tags.`{ROLE}` = 'sweep'",
                                                order_by=["attributes.start_time DESC"], max_results=10_000))
        runs = [r for r in runs if r.data.tags.get(SWEEP_PATH) == redact(sweep_path)]
        if runs:
            run_id = runs[0].info.run_id
            retry(lambda: client.update_run(run_id, status="RUNNING"))
            retry(lambda: client.set_tag(run_id, "gitune.resumed", "true"))
            return TrackingContext(uri, exp_id, name, run_id)
    tags = {ROLE: "sweep", SWEEP_PATH: redact(sweep_path), "gitune.space_file": redact(str(space_file)),
            "mlflow.runName": redact(Path(sweep_path).name)}
    commit = git_commit(space_file.resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run = retry(lambda: client.create_run(exp_id, tags=tags))
    run_id = run.info.run_id
    items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS):
        retry(lambda: client.log_batch(run_id, params=items[i:i + MAX_PARAMS]))
    retry(lambda: client.log_text(run_id, redact(spec_yaml), "spec/resolved.yaml"))
    if space_file.is_file():
        retry(lambda: client.log_text(run_id, redact(space_file.read_text()), f"spec/{space_file.name}"))
    return TrackingContext(uri, exp_id, name, run_id)


def end_sweep(ctx: TrackingContext, status: str, summary: dict[str, Any] | None = None) -> None:
    """Close the parent run, and any child run a dead trial left RUNNING (status KILLED)."""
    client = _client(ctx.uri)
    for run in child_runs(ctx, status="RUNNING"):
        retry(lambda: client.set_terminated(run.info.run_id, "KILLED"))
    if summary:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if isinstance(v, (int, float))]
        tags = [RunTag(k, redact(str(v))) for k, v in summary.items() if not isinstance(v, (int, float))]
        retry(lambda: client.log_batch(ctx.parent_run_id, metrics=metrics, tags=tags))
    retry(lambda: client.set_terminated(ctx.parent_run_id, status))


def child_runs(ctx: TrackingContext, status: str | None = None) -> list:
    client = _client(ctx.uri)
    filt = f"tags.`{PARENT}` = '{ctx.parent_run_id}'"
    if status:
        filt += f" and attributes.status = '{status}'"
    return retry(lambda: client.search_runs([ctx.experiment_id], filt, max_results=10_000))


def find_trial_run(ctx: TrackingContext, trial_id: str):
    client = _client(ctx.uri)
    runs = retry(lambda: client.search_runs(
        [ctx.experiment_id], f"tags.`{PARENT}` = '{ctx.parent_run_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
        max_results=1))
    return runs[0] if runs else None


class TrialRun:
    """A trial's child run. `open` finds the run of this trial id again after a restore: no duplicates."""

    def __init__(self, client, run_id: str, resumed: bool):
        self.client, self.run_id, self.resumed = client, run_id, resumed

    @classmethod
    def open(cls, ctx: TrackingContext, trial_id: str, trial_name: str, params: dict[str, Any],
             tags: dict[str, str] | None = None) -> "TrialRun":
        from mlflow.entities import Param

        client = _client(ctx.uri)
        found = find_trial_run(ctx, trial_id)
        if found is not None:
            run_id = found.info.run_id
            if found.info.status != "RUNNING":
                retry(lambda: client.update_run(run_id, status="RUNNING"))
            return cls(client, run_id, resumed=True)
        all_tags = {PARENT: ctx.parent_run_id, TRIAL_ID: trial_id, "mlflow.runName": trial_name,
                    ROLE: "trial", **{k: redact(str(v)) for k, v in (tags or {}).items()}}
        run = retry(lambda: client.create_run(ctx.experiment_id, tags=all_tags))
        self = cls(client, run.info.run_id, resumed=False)
        items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            retry(lambda: client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS]))
        return self

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(items), MAX_BATCH):
            retry(lambda: self.client.log_batch(self.run_id, metrics=items[i:i + MAX_BATCH]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()]))

    def log_figure(self, fig, path: str) -> None:
        retry(lambda: self.client.log_figure(self.run_id, fig, path))

    def log_text(self, text: str, path: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, path))

    def log_image(self, image, path: str) -> None:
        """An H×W or H×W×C uint8 array as a PNG artifact at `path`."""
        retry(lambda: self.client.log_image(self.run_id, image, artifact_file=path))

    def log_artifact(self, local_path: str, artifact_dir: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, local_path, artifact_dir))

    def finish(self, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(self.run_id, status))


def _error_file_text(trial) -> str:
    """The trial's error.txt on the driver: at callback time Tune's get_error() may not find it in storage yet."""
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text() if path else ""
    except OSError:
        return ""


def trial_status_callback(ctx: TrackingContext, scheduler: str):
    """A Tune callback on the driver that closes child runs the trial itself could not close."""
    from ray import tune

    class TrialRunCloser(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            run = find_trial_run(ctx, trial.trial_id)
            if run is None:
                return
            client = _client(ctx.uri)
            last = trial.last_result or {}
            epoch, epochs = last.get("epoch"), trial.config.get("train", {}).get("epochs")
            if last.get("gitune/diverged"):  # the trial closed its run FAILED itself; else do it here
                if run.info.status == "RUNNING":
                    retry(lambda: client.set_tag(run.info.run_id, "gitune.error", str(last.get("gitune/error"))))
                    retry(lambda: client.set_terminated(run.info.run_id, "FAILED"))
                return
            if epoch is not None and epochs is not None and epoch < epochs:
                retry(lambda: client.set_tag(run.info.run_id, STOPPED_EARLY, scheduler))
                retry(lambda: client.set_tag(run.info.run_id, STOPPED_AT, str(epoch)))
            if run.info.status == "RUNNING":
                retry(lambda: client.set_terminated(run.info.run_id, "FINISHED"))

        def on_trial_error(self, iteration, trials, trial, **info):
            run = find_trial_run(ctx, trial.trial_id)
            if run is None:
                return
            client = _client(ctx.uri)
            if "gitune.error" not in run.data.tags:  # the trial's own reason, when it could give one, wins
                lines = [ln for ln in str(trial.get_error() or _error_file_text(trial) or "trial errored").splitlines()
                         if ln.strip()]
                reason = redact(lines[-1] if lines else "")[:5000]
                retry(lambda: client.set_tag(run.info.run_id, "gitune.error", reason))
            retry(lambda: client.set_terminated(run.info.run_id, "FAILED"))

    return TrialRunCloser()
