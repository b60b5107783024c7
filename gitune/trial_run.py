"""A trial's MLflow child run, written through an outbox: what the trial logs waits in memory (and in each of
its checkpoints) until the tracking store has taken it. A tracking server that is away for a while then stalls
no training and loses no point, and a point sent twice is stored once.

Why that holds:
- Every point keeps the timestamp it was made with, and MLflow stores a metric point once per (key, step,
  timestamp, value): the same point sent again (a retry whose answer was lost, a checkpoint's outbox sent
  again after a restore) adds nothing.
- The trainables save the outbox into each checkpoint before sending it, and send only once Tune holds that
  checkpoint (`tune.report` returned): a retried trial sends its checkpoint's points again (harmless) and never
  logged the points of the epochs it trains again.
- The run is looked up by its Tune trial id before one is created, so a create whose answer was lost does not
  make a second run, and a run that was never created (the server was away from the start) is created later,
  by the trial or, from its last checkpoint, by the sweep (gitune.tracking.close_trial).
- Calls are bounded: MLflow's own HTTP retries are cut down (BOUNDED_HTTP) and a flush stops at the first
  connection failure, keeping everything for the next one.

The one exception: MLflow's own system-metrics monitor (system/*), started on the run once it exists, logs
from a thread of its own, straight to the store; it keeps sampling while the store is away (start_system_metrics).
Dataset inputs (log_input) go through the outbox like the rest.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from gitune.redact import redact

ROLE, TRIAL_ID = "gitune.role", "gitune.trial_id"  # tags: sweep or trial run; a trial run's Tune trial id
PARENT = "mlflow.parentRunId"
OUTBOX_FILE = "mlflow_outbox.json"  # in each checkpoint folder
OUTBOX_DIR = "mlflow_outbox"  # ... and the artifacts still to send, one file each
LOGGED_ALL = "gitune.logged_all"  # tag: everything the trial logged reached the store
MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call
MAX_PARAMS = 100  # ... and on params per call
# MLflow's defaults retry a refused connection 7 times with exponential backoff (minutes per call); a trial
# keeps its points instead, so one try and a short wait are enough. Users' own settings win.
BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
_AWAY = ("connection", "refused", "timed out", "timeout", "max retries", "temporarily unavailable",
         " 502", " 503", " 504", "bad gateway", "service unavailable", "gateway time")
_BUSY = ("database is locked", "busy")
# MLflow's system-metrics monitor (CPU, memory, disk, network; GPU with pynvml): seconds between samples, unless
# MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL says otherwise. GITUNE_SYSTEM_METRICS=0 turns it off.
SYSTEM_METRICS_INTERVAL = 10.0
SYSTEM_METRICS_ENV = "GITUNE_SYSTEM_METRICS"

log = logging.getLogger(__name__)


def bound_http_calls() -> None:
    for key, value in BOUNDED_HTTP.items():
        os.environ.setdefault(key, value)


def unreachable(error: BaseException) -> bool:
    """Whether an MLflow call failed because the store did not answer (or was busy), not because of what was
    sent: such a call is worth sending again later."""
    text = f"{type(error).__name__}: {error}".lower()
    return any(s in text for s in _AWAY + _BUSY)


def why(error: BaseException) -> str:
    """A short reason for an MLflow call that failed (MLflow's own messages repeat the whole URL)."""
    text = str(error).lower()
    for needle, reason in (("refused", "connection refused"), ("timed out", "timed out"), ("timeout", "timed out"),
                           ("database is locked", "database is locked"), ("name or service", "unknown host")):
        if needle in text:
            return reason
    return redact((str(error).strip().splitlines() or [type(error).__name__])[0][:160])


def call(fn, busy_tries: int = 6):
    """fn(), tried again briefly while a SQLite store is locked by another writer (many trials at once)."""
    delay = 0.1
    for i in range(busy_tries):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - MLflow wraps sqlite/http errors in several types
            busy = any(s in str(e).lower() for s in _BUSY)
            if not busy or i == busy_tries - 1:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 2.0)
    raise AssertionError("unreachable")


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def child_runs(ctx, status: str | None = None) -> list:
    """The trial runs of the sweep `ctx` (a gitune.tracking.TrackingContext), of one status if given."""
    filt = f"tags.`{PARENT}` = '{ctx.parent_run_id}'"
    if status:
        filt += f" and attributes.status = '{status}'"
    return call(lambda: _client(ctx.uri).search_runs([ctx.experiment_id], filt, max_results=10_000))


def find_trial_run(ctx, trial_id: str):
    """The run of Tune trial `trial_id` in the sweep `ctx`, or None."""
    runs = call(lambda: _client(ctx.uri).search_runs(
        [ctx.experiment_id], f"tags.`{PARENT}` = '{ctx.parent_run_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
        max_results=1))
    return runs[0] if runs else None


class TrialRun:
    """The child run of one Tune trial; `open` (or a checkpoint's outbox) names it by trial id.

    log_* and set_tags only queue; `flush` sends what is queued. A trainable saves the queue into its checkpoint
    (`save`) and flushes once Tune holds that checkpoint; `load` takes a checkpoint's queue back."""

    def __init__(self, ctx, trial_id: str, trial_name: str, params: dict[str, Any] | None = None,
                 tags: dict[str, Any] | None = None):
        self.ctx, self.client = ctx, _client(ctx.uri)
        self.trial_id, self.trial_name = trial_id, trial_name
        self.params = {k: redact(str(v))[:6000] for k, v in (params or {}).items()}
        self.run_id: str | None = None
        self.resumed: bool | None = None  # known once the run is found or created
        self.metrics: list[list] = []  # [key, value, timestamp ms, step], oldest first
        self.tags: dict[str, str] = {k: redact(str(v)) for k, v in (tags or {}).items()}
        self.artifacts: dict[str, bytes] = {}  # artifact path -> content; the latest wins
        self.inputs: list[dict[str, Any]] = []  # dataset lineage (log_input), sent with MlflowClient.log_inputs
        self.status: str | None = None
        self.away_since: float | None = None
        self.system_metrics = False  # open() sets it: the monitor starts once the run exists
        self.monitor = None

    @classmethod
    def open(cls, ctx, trial_id: str, trial_name: str, params: dict[str, Any],
             tags: dict[str, Any] | None = None, checkpoint=None) -> "TrialRun":
        """The run of this trial id (found again after a restore: no duplicate), with `tags` set on it and what
        the trial's `checkpoint` (a Tune checkpoint it restores from, or None) still held to send. Does not wait
        for an absent server."""
        bound_http_calls()
        run = cls(ctx, trial_id, trial_name, params, tags)
        run.system_metrics = os.environ.get(SYSTEM_METRICS_ENV, "1").strip().lower() not in ("0", "false", "no", "")
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                run.load(folder)
        run.flush()
        return run

    # -- queueing -------------------------------------------------------------------------------------------

    def log_metrics(self, metrics: dict[str, Any], step: int) -> None:
        now = int(time.time() * 1000)
        self.metrics += [[k, float(v), now, int(step)] for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update({k: redact(str(v)) for k, v in tags.items()})

    def log_text(self, text: str, path: str) -> None:
        self._artifact(path, text.encode())

    def log_figure(self, fig, path: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png")
        self._artifact(path, buf.getvalue())

    def log_image(self, image, path: str) -> None:
        """An H×W or H×W×C uint8 array as a PNG artifact at `path`."""
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        self._artifact(path, buf.getvalue())

    def log_artifact(self, local_path: str, artifact_dir: str | None = None) -> None:
        name = Path(local_path).name
        self._artifact(f"{artifact_dir.rstrip('/')}/{name}" if artifact_dir else name, Path(local_path).read_bytes())

    def log_input(self, name: str, digest: str, source: str, source_type: str, schema: str = "",
                  profile: str = "", context: str = "training") -> None:
        """Dataset lineage: an mlflow.entities.Dataset as the run's input (the run page's "Datasets used")."""
        self.inputs.append({"name": name, "digest": digest, "source": source, "source_type": source_type,
                            "schema": schema, "profile": profile, "context": context})

    def finish(self, status: str = "FINISHED", wait: float = 10.0) -> bool:
        """Close the run once everything queued is sent; waits up to `wait` s for an absent server (then the
        sweep sends it from the last checkpoint). True when it is closed."""
        self.stop_system_metrics()
        self.tags[LOGGED_ALL] = "true"
        self.status = status
        return self.flush(wait)

    def _artifact(self, path: str, content: bytes) -> None:
        self.artifacts[path] = content

    def pending(self) -> int:
        return (len(self.metrics) + len(self.tags) + len(self.artifacts) + len(self.inputs)
                + (self.status is not None))

    # -- sending --------------------------------------------------------------------------------------------

    def flush(self, wait: float = 0.0) -> bool:
        """Send what is queued; True when nothing is left. While the store does not answer, tries again until
        `wait` seconds have passed, then keeps the rest for the next flush. Other errors are raised."""
        deadline = time.monotonic() + wait
        while True:
            try:
                self._send()
            except Exception as e:  # noqa: BLE001 - see unreachable()
                if not unreachable(e):
                    raise
                if self.away_since is None:
                    self.away_since = time.monotonic()
                    log.warning("MLflow at %s does not answer (%s): the trial goes on and keeps what it logs "
                                "(%d items now) to send when it is back", redact(self.ctx.uri), why(e),
                                self.pending())
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(5.0, left))
                continue
            if self.away_since is not None:
                log.warning("MLflow at %s answers again after %.0f s: what the trial kept is sent",
                            redact(self.ctx.uri), time.monotonic() - self.away_since)
                self.away_since = None
            return True

    def _send(self) -> None:
        from mlflow.entities import Metric, RunTag

        if self.run_id is None:
            self._find_or_create()
        if self.system_metrics and self.monitor is None and self.status is None:
            self.start_system_metrics()
        if self.inputs:
            self._send_inputs()
        if self.tags:
            tags = dict(self.tags)
            call(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()]))
            for k, v in tags.items():
                if self.tags.get(k) == v:
                    del self.tags[k]
        while self.metrics:
            chunk = self.metrics[:MAX_BATCH]
            call(lambda: self.client.log_batch(self.run_id, metrics=[Metric(*m) for m in chunk]))
            del self.metrics[:len(chunk)]
        for path, content in list(self.artifacts.items()):
            self._upload(path, content)
            if self.artifacts.get(path) is content:
                del self.artifacts[path]
        if self.status is not None:
            status = self.status
            call(lambda: self.client.set_terminated(self.run_id, status))
            self.status = None

    def _find_or_create(self) -> None:
        from mlflow.entities import Param

        found = find_trial_run(self.ctx, self.trial_id)
        if found is not None:
            self.run_id, self.resumed = found.info.run_id, True
            if found.info.status != "RUNNING" and self.status is None:
                call(lambda: self.client.update_run(self.run_id, status="RUNNING"))
            have = found.data.params
        else:
            tags = {PARENT: self.ctx.parent_run_id, TRIAL_ID: self.trial_id, "mlflow.runName": self.trial_name,
                    ROLE: "trial"}
            run = call(lambda: self.client.create_run(self.ctx.experiment_id, tags=tags))
            self.run_id, self.resumed, have = run.info.run_id, False, {}
        # Params are written once; a run created by an attempt that died before its params gets them now.
        items = [Param(k, v) for k, v in self.params.items() if k not in have]
        for i in range(0, len(items), MAX_PARAMS):
            call(lambda: self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS]))

    def _send_inputs(self) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = list(self.inputs)
        datasets = [DatasetInput(Dataset(d["name"], d["digest"], d["source_type"], d["source"], d["schema"] or None,
                                         d["profile"] or None), [InputTag("mlflow.data.context", d["context"])])
                    for d in inputs]
        # The store keeps a (name, digest) dataset once per experiment and an input once per run: sent again
        # (a checkpoint's outbox after a restore) it adds nothing.
        call(lambda: self.client.log_inputs(self.run_id, datasets=datasets))
        del self.inputs[:len(inputs)]

    # -- system metrics -------------------------------------------------------------------------------------

    def start_system_metrics(self) -> None:
        """MLflow's own system-metrics monitor on this run (a daemon thread logging system/* straight to the
        store, the one thing that bypasses the outbox). It never stops the trial: a monitor that cannot start
        is left out, and one that meets an absent store keeps sampling and sends when the store is back."""
        _stop_monitor_of_this_process()
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not 2 INFO lines per trial
        try:
            monitor = _SystemMetrics(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL,
                                     resume_logging=bool(self.resumed), tracking_uri=self.ctx.uri)
            monitor.start()
        except Exception as e:  # noqa: BLE001 - psutil missing, an odd platform, the store away
            log.warning("MLflow system metrics left out of this trial's run: %s", why(e))
            self.system_metrics = False
            return
        self.monitor = monitor
        _running_monitor[:] = [monitor]

    def stop_system_metrics(self) -> None:
        """Stop the monitor, with a last sample sent when the store answers (a short trial still gets one);
        waits at most a few seconds for its thread."""
        monitor, self.monitor, self.system_metrics = self.monitor, None, False
        if monitor is not None:
            monitor.stop(send_last=self.away_since is None)
            if _running_monitor and _running_monitor[0] is monitor:
                _running_monitor.clear()

    def _upload(self, path: str, content: bytes) -> None:
        folder, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="gitune-artifact-") as d:
            local = Path(d) / name
            local.write_bytes(content)
            call(lambda: self.client.log_artifact(self.run_id, str(local), folder or None))

    # -- checkpoints ----------------------------------------------------------------------------------------

    def save(self, folder: str) -> None:
        """Write the queue (and what names the run) into a checkpoint folder."""
        names = {}
        if self.artifacts:
            os.makedirs(os.path.join(folder, OUTBOX_DIR), exist_ok=True)
        for i, (path, content) in enumerate(self.artifacts.items()):
            names[path] = f"{i:05d}"
            with open(os.path.join(folder, OUTBOX_DIR, names[path]), "wb") as f:
                f.write(content)
        state = {"trial_id": self.trial_id, "trial_name": self.trial_name, "run_id": self.run_id,
                 "params": self.params, "metrics": self.metrics, "tags": self.tags, "artifacts": names,
                 "inputs": self.inputs}
        with open(os.path.join(folder, OUTBOX_FILE), "w") as f:
            json.dump(state, f)

    def load(self, folder: str) -> bool:
        """Put a checkpoint's queue in front of this one's (its points are older); False when it has none."""
        path = os.path.join(folder, OUTBOX_FILE)
        try:
            with open(path) as f:
                state = json.load(f)
            artifacts = {p: Path(folder, OUTBOX_DIR, name).read_bytes() for p, name in state["artifacts"].items()}
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s): what it held for MLflow is not sent", path, e)
            return False
        self.metrics = [list(m) for m in state["metrics"]] + self.metrics
        self.tags = {**state["tags"], **self.tags}
        self.artifacts = {**artifacts, **self.artifacts}
        self.inputs = [dict(d) for d in state.get("inputs") or []] + self.inputs
        self.params = {**state["params"], **self.params}
        self.trial_name = self.trial_name or state.get("trial_name", "")
        return True

    @classmethod
    def from_checkpoint(cls, ctx, trial_id: str, folder: str | None) -> "TrialRun":
        """The run of `trial_id` with what its checkpoint in `folder` (None: no checkpoint) still held to send;
        nothing is sent yet."""
        run = cls(ctx, trial_id, "")
        if folder is not None:
            run.load(folder)
        run.trial_name = run.trial_name or trial_id
        return run


_running_monitor: list = []  # the system-metrics monitor of the trial running in this process, if any


def _stop_monitor_of_this_process() -> None:
    """A reused Ray actor starts another trial in the same process: the last trial's monitor stops first."""
    if _running_monitor:
        _running_monitor.pop().stop(send_last=False)


def _system_metrics_class():
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class SystemMetrics(SystemMetricsMonitor):
        """mlflow.system_metrics' monitor, made to outlast an absent store: its own loop ends at the first
        failed call (no more samples for the rest of the trial); this one keeps sampling, keeps what it could
        not send (BatchMetricsLogger keeps unsent points) and ends when the run is no longer RUNNING or at
        stop()."""

        def monitor(self):
            from mlflow.tracking.client import MlflowClient

            while not self._shutdown_event.is_set():
                for _ in range(self.samples_before_logging):
                    self.collect_metrics()
                    if self._shutdown_event.wait(self.sampling_interval):
                        return
                try:
                    status = MlflowClient(self._tracking_uri).get_run(self._run_id).info.status
                except Exception:  # noqa: BLE001 - the store is away: keep the samples, try later
                    continue
                if status != "RUNNING":
                    return
                try:
                    self.publish_metrics(self.aggregate_metrics())
                except Exception as e:  # noqa: BLE001
                    log.debug("system metrics not sent now: %s", why(e))

        def stop(self, send_last: bool = True, join_s: float = 5.0) -> None:
            self._shutdown_event.set()
            thread, self._process = self._process, None
            if thread is not None:
                thread.join(join_s)
                if thread.is_alive():  # stuck in a call to an absent store: it is a daemon, leave it
                    return
            if not send_last:
                return
            try:
                self.collect_metrics()
                self.publish_metrics(self.aggregate_metrics())
                self.mlflow_logger.flush()
            except Exception as e:  # noqa: BLE001
                log.debug("last system metrics not sent: %s", why(e))

    return SystemMetrics


def _SystemMetrics(*args, **kwargs):  # noqa: N802 - the class, made on first use (mlflow imported lazily)
    global _SYSTEM_METRICS_CLASS
    if _SYSTEM_METRICS_CLASS is None:
        _SYSTEM_METRICS_CLASS = _system_metrics_class()
    return _SYSTEM_METRICS_CLASS(*args, **kwargs)


_SYSTEM_METRICS_CLASS = None
