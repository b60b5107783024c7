"""MLflow tracking: one experiment per sweep name, a parent run per invocation, a child run per trial.

Why not MLflowLoggerCallback: it logs scalars only, one call per metric, from the driver, and opens a
second run when a trial restarts. Here the trial logs its own batched metrics and figures against a
child run it finds again by its Tune trial id, so a restored trial continues the same run; a driver
callback only closes runs whose trial could not (ASHA stops, errors, Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from gitune.errors import UserError
from gitune.redact import redact
from gitune.trial_run import (MAX_PARAMS, PARENT, ROLE, TRIAL_ID, _client, child_runs,  # noqa: F401
                              find_trial_run, unreachable)

T = TypeVar("T")

SWEEP_PATH = "gitune.sweep_path"
STOPPED_EARLY, STOPPED_AT = "gitune.stopped_early", "gitune.stopped_at_epoch"


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to find its sweep in MLflow; small and picklable (sent via the object store)."""

    uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    space_keys: tuple[str, ...] = ()  # the spec's tuned keys (space), named in the trial runs' names
    generator_space_keys: tuple[str, ...] = ()  # ... and the generator block's (generator.lr, ...)



def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Retry MLflow calls that hit a busy SQLite file or a flaky server; trials must not die of it."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - MLflow wraps sqlite/http errors in several types
            if not unreachable(e) or i == attempts - 1:  # a busy SQLite file, a server that did not answer
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


def git_state(path: Path) -> dict[str, str]:
    """The branch and whether the work tree has changes, as tags ({} outside a git work tree)."""
    tags = {}
    try:
        out = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip() and out.stdout.strip() != "HEAD":
            tags["mlflow.source.git.branch"] = out.stdout.strip()
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            tags["gitune.git_dirty"] = "true" if out.stdout.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def source_tags() -> dict[str, str]:
    """mlflow.source.name / mlflow.source.type / mlflow.user, as MLflow's fluent mlflow.start_run sets them."""
    import getpass

    try:  # MLflow's own helpers (private: a later MLflow may move them)
        from mlflow.tracking.context.default_context import _get_main_file, _get_user

        main, user = _get_main_file(), _get_user()
    except Exception:  # noqa: BLE001
        main = sys.argv[0] if sys.argv and sys.argv[0] else None
        try:
            user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in this environment
            user = "unknown"
    return {"mlflow.source.name": main or "python", "mlflow.source.type": "LOCAL", "mlflow.user": user}


def _spec_facts(spec_yaml: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(description, tuned keys, generator's tuned keys) of a resolved spec as YAML."""
    import yaml

    try:
        tree = yaml.safe_load(spec_yaml) or {}
    except yaml.YAMLError:
        return "", (), ()
    gen = tree.get("generator") if isinstance(tree.get("generator"), dict) else {}
    return (str(tree.get("description") or ""), tuple(tree.get("space") or ()),
            tuple(gen.get("space") or ()))


def run_name(ctx: TrackingContext, trial_id: str, config: dict[str, Any], stage: str = "classifier") -> str:
    """A trial run's name: `<sweep>-<trial number>` and the tuned values by the last segment of their keys,
    e.g. `cifar_lt-00003 lr=0.1 loss=ldam` (`cifar_lt-gen-00000 lr=0.0001` for a generator trial)."""
    from gitune.config import get_dotted

    keys = ctx.generator_space_keys if stage == "generator" else ctx.space_keys
    short = trial_id.rsplit("_", 1)[-1]
    parts = [f"{ctx.experiment_name}-{'gen-' if stage == 'generator' else ''}{short}"]
    for key in keys:
        try:
            v = get_dotted(config, key)
        except (KeyError, TypeError):
            continue
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{key.rsplit('.', 1)[-1]}={text[:24]}")
    return redact(" ".join(parts))[:250]


def dataset_input(data_cfg: dict[str, Any], class_counts: list[int], image_shape, class_names=None) -> dict[str, Any]:
    """TrialRun.log_input's arguments for a trial's data: name = data name + long-tail profile and ratio, digest
    of the data config, source = the data path (or builtin:<name>), the class counts as profile."""
    import hashlib
    import json

    name = str(data_cfg.get("name"))
    if data_cfg.get("dataset"):
        name += f"-{data_cfg['dataset']}"
    if data_cfg.get("profile"):
        ratio = data_cfg.get("ratio")
        name += f"-{data_cfg['profile']}" + (f"-r{ratio:g}" if isinstance(ratio, (int, float)) else "")

    def plain(v):  # 4 and 4.0 (a YAML int, a typed float) are the same data config
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return int(v) if isinstance(v, float) and v.is_integer() else v

    digest = hashlib.sha256(json.dumps(plain(data_cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = data_cfg.get("path")
    source, source_type = (str(path), "local") if path else (f"builtin:{data_cfg.get('name')}", "builtin")
    shape = [int(x) for x in image_shape]
    schema = {"mlflow_tensorspec": {
        "features": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, *shape]}}]),
        "targets": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}])}}
    profile = {"num_classes": len(class_counts), "train_images": int(sum(class_counts)),
               "class_counts": [int(n) for n in class_counts]}
    if class_names is not None and len(class_names) <= 200:
        profile["class_names"] = [str(c) for c in class_names]
    return {"name": redact(name)[:500], "digest": digest, "source": redact(source), "source_type": source_type,
            "schema": json.dumps(schema), "profile": json.dumps(profile)}


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

    from gitune.trial_run import bound_http_calls

    bound_http_calls()  # here and, inherited or set again, in the trials
    description, space_keys, gen_keys = _spec_facts(spec_yaml)
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
            return TrackingContext(uri, exp_id, name, run_id, space_keys, gen_keys)
    tags = {ROLE: "sweep", SWEEP_PATH: redact(sweep_path), "gitune.space_file": redact(str(space_file)),
            "mlflow.runName": redact(Path(sweep_path).name)}
    commit = git_commit(space_file.resolve().parent)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags.update(git_state(space_file.resolve().parent))
    tags.update({k: redact(v) for k, v in source_tags().items()})
    if description.strip():
        tags["mlflow.note.content"] = redact(description)[:5000]  # the run page's description
    run = retry(lambda: client.create_run(exp_id, tags=tags))
    run_id = run.info.run_id
    items = [Param(k, redact(str(v))[:6000]) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS):
        retry(lambda: client.log_batch(run_id, params=items[i:i + MAX_PARAMS]))
    retry(lambda: client.log_text(run_id, redact(spec_yaml), "spec/resolved.yaml"))
    if space_file.is_file():
        retry(lambda: client.log_text(run_id, redact(space_file.read_text()), f"spec/{space_file.name}"))
    return TrackingContext(uri, exp_id, name, run_id, space_keys, gen_keys)


def register_generator(ctx: TrackingContext, run_id: str, name: str) -> str | None:
    """Register the generator a trial run logged (generator/generator.pt) as a new version of the registered
    model `name`; its `models:/NAME/VERSION` URI, which `generator.checkpoint` takes, or None (with a warning)
    when the store does not answer or refuses."""
    from mlflow.exceptions import MlflowException

    from gitune.trial_run import call, why

    client = _client(ctx.uri)
    try:
        try:
            call(lambda: client.create_registered_model(
                name, description=f"MUNIT generators pretrained by gitune sweep {ctx.experiment_name}"))
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = call(lambda: client.create_model_version(
            name, f"runs:/{run_id}/generator", run_id=run_id,
            tags={"gitune.sweep": ctx.experiment_name, "gitune.parent_run_id": ctx.parent_run_id}))
    except Exception as e:  # noqa: BLE001 - a registry that is away or refuses does not end the sweep
        print(f"gitune: warning: generator not registered as MLflow model {name!r}: {why(e)}", file=sys.stderr)
        return None
    return f"models:/{name}/{version.version}"


WAIT_ENV = "GITUNE_TRACKING_WAIT_S"  # how long the end of a sweep waits for an absent tracking server
WAIT_DEFAULT = 300.0
_parent_tags: dict[str, str] = {}  # parent-run tags to set when the store is back (driver state)


def tracking_wait() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, WAIT_DEFAULT)))
    except ValueError:
        raise UserError(f"{WAIT_ENV}={os.environ[WAIT_ENV]!r}: expected a number of seconds") from None


def set_parent_tags(ctx: TrackingContext, tags: dict[str, Any]) -> None:
    """Tags on the sweep's parent run; kept for end_sweep when the store does not answer now."""
    from mlflow.entities import RunTag

    from gitune.trial_run import call, unreachable

    _parent_tags.update({k: redact(str(v)) for k, v in tags.items()})
    pending = dict(_parent_tags)
    try:
        call(lambda: _client(ctx.uri).log_batch(ctx.parent_run_id, tags=[RunTag(k, v) for k, v in pending.items()]))
    except Exception as e:  # noqa: BLE001
        if not unreachable(e):
            raise
        return
    for k in pending:
        _parent_tags.pop(k, None)


def end_sweep(ctx: TrackingContext, status: str, summary: dict[str, Any] | None = None,
              wait: float | None = None) -> bool:
    """Close the parent run, after the trial runs the sweep could not close while the store was away and any
    child run a dead trial left RUNNING (KILLED). Waits up to `wait` s (GITUNE_TRACKING_WAIT_S, default 300)
    for an absent store. Never raises (it runs in a `finally`, over whatever error ended the sweep): False,
    with a message, when the runs could not be closed."""
    from mlflow.entities import Metric, RunTag

    from gitune.trial_run import call, unreachable, why

    wait = tracking_wait() if wait is None else wait
    deadline = time.monotonic() + wait
    told = False
    client = _client(ctx.uri)
    while True:
        try:
            for trial_id, args in list(_unclosed.items()):
                close_trial(ctx, trial_id, *args)
                del _unclosed[trial_id]
            for run in child_runs(ctx, status="RUNNING"):
                call(lambda: client.set_terminated(run.info.run_id, "KILLED"))
            tags = [RunTag(k, v) for k, v in _parent_tags.items()]
            if summary:
                now = int(time.time() * 1000)
                tags += [RunTag(k, redact(str(v))) for k, v in summary.items() if not isinstance(v, (int, float))]
                metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if isinstance(v, (int, float))]
                call(lambda: client.log_batch(ctx.parent_run_id, metrics=metrics, tags=tags))
            elif tags:
                call(lambda: client.log_batch(ctx.parent_run_id, tags=tags))
            _parent_tags.clear()
            call(lambda: client.set_terminated(ctx.parent_run_id, status))
            return True
        except KeyboardInterrupt:
            print("gitune: stopped waiting for MLflow", file=sys.stderr)
            return _not_closed(ctx, "it was not waited for")
        except Exception as e:  # noqa: BLE001 - see the docstring
            if not unreachable(e):
                return _not_closed(ctx, f"closing them failed: {why(e)}")
            left = deadline - time.monotonic()
            if left <= 0:
                return _not_closed(ctx, f"it did not answer for {wait:.0f} s ({WAIT_ENV} sets how long)")
            if not told:
                told = True
                print(f"gitune: MLflow at {redact(ctx.uri)} does not answer; waiting up to {left:.0f} s to close "
                      f"the runs (Ctrl-C stops waiting)", file=sys.stderr)
            try:
                time.sleep(min(5.0, left))
            except KeyboardInterrupt:
                print("gitune: stopped waiting for MLflow", file=sys.stderr)
                return _not_closed(ctx, "it was not waited for")


def _not_closed(ctx: TrackingContext, why: str) -> bool:
    trials = f"{len(_unclosed)} trial run(s) and " if _unclosed else ""
    print(f"gitune: error: MLflow at {redact(ctx.uri)}: {trials}the parent run {ctx.parent_run_id} are not closed: "
          f"{why}; what the trials logged is kept in their checkpoints and sent by the same command with "
          f"--resume", file=sys.stderr)
    return False


def _error_file_text(trial) -> str:
    """The trial's error.txt on the driver: at callback time Tune's get_error() may not find it in storage yet."""
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text() if path else ""
    except OSError:
        return ""


def closing(last: dict[str, Any], config: dict[str, Any], error: str | None, scheduler: str,
            interrupted: bool = False) -> tuple[str, dict[str, str], str | None]:
    """How a trial's run is closed by the sweep: (status, tags, error reason), from its last result."""
    from gitune.trainables.diverged import REASON, diverged

    if error is not None:
        return "FAILED", {}, error
    if diverged(last):  # the trial closed its run itself, unless the store was away
        return "FAILED", {}, str(last.get(REASON))
    if interrupted:
        return "KILLED", {}, None
    epoch, epochs = last.get("epoch"), (config.get("train") or {}).get("epochs")
    if epoch is not None and epochs is not None and epoch < epochs:
        return "FINISHED", {STOPPED_EARLY: scheduler, STOPPED_AT: str(epoch)}, None
    return "FINISHED", {}, None


def close_trial(ctx: TrackingContext, trial_id: str, checkpoint, status: str, tags: dict[str, str],
                error: str | None = None, found=None, wait: float = 0.0) -> bool:
    """Send what the trial's last checkpoint still held for MLflow (the epoch an ASHA stop cut off before the
    trial sent it, a crashed attempt's last points, a whole run the store was away for), set `tags` (and the
    error reason, unless the trial gave its own) and close the run with `status`. Nothing to do when the
    trial itself sent everything. `found`: the trial's run when the caller looked it up already. Raises when
    the store does not answer within `wait` s."""
    from gitune.trial_run import LOGGED_ALL, TrialRun

    found = found if found is not None else find_trial_run(ctx, trial_id)
    if found is not None and found.data.tags.get(LOGGED_ALL) == "true":
        return True
    if found is None and checkpoint is None:
        return True  # the trial made no run and kept nothing
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(checkpoint.as_directory()) if checkpoint is not None else None
        run = TrialRun.from_checkpoint(ctx, trial_id, folder)
    if found is not None:
        run.run_id, run.resumed = found.info.run_id, True
    run.tags.update(tags)
    if error and (found is None or "gitune.error" not in found.data.tags):
        lines = [ln for ln in error.splitlines() if ln.strip()]
        run.tags["gitune.error"] = redact(lines[-1] if lines else "trial errored")[:5000]
    if not run.finish(status, wait):
        raise ConnectionError(f"MLflow at {redact(ctx.uri)} does not answer")
    return True


# Trials whose runs the sweep could not close yet (the store was away): trial id -> close_trial's arguments.
# Driver state: tried again after each stage and, waiting for the store, by end_sweep.
_unclosed: dict[str, tuple] = {}
_warned: list[bool] = []


def _close_later(ctx: TrackingContext, trial_id: str, args: tuple, error: BaseException) -> None:
    from gitune.trial_run import unreachable, why

    if not unreachable(error):
        print(f"gitune: warning: could not close the MLflow run of trial {trial_id}: {why(error)}", file=sys.stderr)
        return
    _unclosed[trial_id] = args
    if not _warned:
        _warned.append(True)
        print(f"gitune: warning: MLflow at {redact(ctx.uri)} does not answer; the sweep goes on and closes the "
              f"trials' runs when it is back", file=sys.stderr)


def catch_up(ctx: TrackingContext, results, scheduler: str, interrupted, cut_label: str | None = None) -> None:
    """After a stage: every trial's run complete and closed, from the trials' last checkpoints, whatever the
    store missed while it was away (also the runs of trials that ended before a --resume). Trials cut off
    mid-way end KILLED, or with `cut_label` (the stage's time budget stopped them) FINISHED and tagged stopped
    early by it. Never raises: what cannot be sent now waits in `_unclosed` for end_sweep."""
    from gitune.trial_run import LOGGED_ALL

    todo = []
    for result in results:
        last = dict(result.metrics or {})
        trial_id = last.get("trial_id")
        if not trial_id:
            continue  # never reported: no checkpoint; end_sweep closes a run it left RUNNING
        error = str(result.error) if result.error is not None else None
        cut = interrupted(result)
        if cut and cut_label:
            status, tags, reason = "FINISHED", {STOPPED_EARLY: cut_label, STOPPED_AT: str(last.get("epoch"))}, None
        else:
            status, tags, reason = closing(last, result.config or {}, error, scheduler, cut)
        todo.append((trial_id, (result.checkpoint, status, tags, reason)))
    if not todo:
        return
    try:
        runs = {r.data.tags.get(TRIAL_ID): r for r in child_runs(ctx)}
    except Exception as e:  # noqa: BLE001 - the store is away: all of them later
        for trial_id, args in todo:
            _close_later(ctx, trial_id, args, e)
        return
    for trial_id, args in todo:
        run = runs.get(trial_id)
        if run is not None and run.data.tags.get(LOGGED_ALL) == "true":
            _unclosed.pop(trial_id, None)
            continue
        try:
            close_trial(ctx, trial_id, *args, found=run)
            _unclosed.pop(trial_id, None)
        except Exception as e:  # noqa: BLE001
            _close_later(ctx, trial_id, args, e)


def trial_status_callback(ctx: TrackingContext, scheduler: str):
    """A Tune callback on the driver that closes, as trials end, the child runs the trials could not close
    themselves (ASHA stops, errors). It never raises: a failed close is done again after the stage."""
    from ray import tune

    class TrialRunCloser(tune.Callback):
        def _close(self, trial, error: str | None) -> None:
            status, tags, reason = closing(trial.last_result or {}, trial.config, error, scheduler)
            args = (trial.checkpoint, status, tags, reason)
            try:
                close_trial(ctx, trial.trial_id, *args)
                _unclosed.pop(trial.trial_id, None)
            except Exception as e:  # noqa: BLE001 - an exception here would end the whole fit
                _close_later(ctx, trial.trial_id, args, e)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._close(trial, None)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._close(trial, str(trial.get_error() or _error_file_text(trial) or "trial errored"))

    return TrialRunCloser()
