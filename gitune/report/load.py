"""MLflow side of `python -m gitune.report`: the store, the experiment, its parent (sweep) runs with the spec each
logged as `spec/resolved.yaml`, their classifier trial runs, and each trial's class sizes.

Nothing here decides or writes anything; bad input (unknown experiment or parent run, unreachable store) is a
UserError naming what was expected.
"""

from __future__ import annotations

import ast
import csv
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gitune.errors import UserError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # downloads: no progress bar on stderr

SPEC_ARTIFACT = "spec/resolved.yaml"  # written on the parent run by tracking.start_sweep
CLASS_RE = re.compile(r"^c\d+$")


@dataclass
class Trial:
    run_id: str
    trial_id: str
    parent_id: str
    status: str  # MLflow run status
    state: str  # finished | stopped early | errored | killed | running
    stopped_by: str  # scheduler that stopped it early ("" if none)
    stopped_at: int | None
    error: str
    params: dict[str, Any]
    raw_params: dict[str, str]
    metrics: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)  # class key -> training images

    @property
    def early(self) -> bool:
        return self.state == "stopped early"


@dataclass
class Sweep:
    uri: str
    experiment: str
    experiment_id: str
    parents: list  # mlflow Run objects, most recent first
    trials: list[Trial]  # every classifier trial of those parents
    metric: str
    mode: str
    search: str
    space: dict[str, dict]  # tuned key -> its distribution as the spec writes it, e.g. {"loguniform": [0.01, 0.2]}
    scheduler: dict[str, Any] = field(default_factory=dict)  # the spec's scheduler block (type, max_t, ...)
    spec_source: str = SPEC_ARTIFACT  # where metric, mode, search, scheduler and space came from

    def __post_init__(self):
        # A distribution given as text (a space.* param of a parent run without spec/resolved.yaml) is parsed
        self.space = {k: parse_distribution(v) if isinstance(v, str) else v for k, v in self.space.items()}


def parse_distribution(text: str) -> dict:
    """A space.* param of the parent run is str() of the spec's distribution mapping ({'grid': [0.0, 0.5]}):
    read it back exactly. Text that is not such a mapping (cut at MLflow's length limit) gives {}."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return {}
    return value if isinstance(value, dict) and len(value) == 1 else {}


def parse_value(text: str) -> Any:
    """MLflow params are str(python value): turn them back into None/bool/int/float, else keep the string."""
    if text in ("None", "null"):
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _state(run) -> tuple[str, str]:
    status, tags = run.info.status, run.data.tags
    if status == "FINISHED":
        stopped = tags.get("gitune.stopped_early", "")
        return ("stopped early" if stopped else "finished"), stopped
    return {"FAILED": "errored", "KILLED": "killed"}.get(status, status.lower()), ""


def _store_error(uri: str, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return UserError(f"--tracking-uri {uri}: cannot read the MLflow store ({first})")


def open_store(uri_arg: str | None):
    from gitune import tracking

    uri = tracking.resolve_uri(uri_arg)
    tracking.check_reachable(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise UserError(f"--tracking-uri {uri}: no MLflow database at {db} (run a sweep first, or pass the "
                            f"store the sweep used)")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
        if not folder.is_dir():
            raise UserError(f"--tracking-uri {uri}: folder {folder} does not exist")
    return uri, tracking._client(uri)


def load_sweep(client, uri: str, name: str, parent_id: str | None, pool_all: bool) -> Sweep:
    from gitune.tracking import PARENT, ROLE, retry

    try:
        exp = retry(lambda: client.get_experiment_by_name(name))
    except Exception as e:  # noqa: BLE001 - MLflow wraps sqlite/http errors in several types
        raise _store_error(uri, e) from None
    if exp is None or exp.lifecycle_stage == "deleted":
        known = [x.name for x in retry(lambda: client.search_experiments(max_results=200))]
        listed = ", ".join(known[:10]) + (f", … ({len(known)} in all)" if len(known) > 10 else "")
        raise UserError(f"experiment '{name}' not found in {uri}; expected a sweep name, known experiments: "
                        f"{listed or 'none'}")
    parents = retry(lambda: client.search_runs([exp.experiment_id], f"tags.`{ROLE}` = 'sweep'",
                                               order_by=["attributes.start_time DESC"], max_results=10_000))
    if not parents:
        raise UserError(f"experiment '{name}' has no parent sweep run (tag {ROLE}=sweep); expected an experiment "
                        f"written by python -m gitune.sweep")
    if parent_id:
        chosen = [p for p in parents if p.info.run_id == parent_id]
        if not chosen:
            ids = ", ".join(p.info.run_id for p in parents[:10])
            raise UserError(f"--parent {parent_id}: not a parent sweep run of experiment '{name}'; expected one "
                            f"of: {ids}")
    else:
        chosen = parents if pool_all else parents[:1]
    trials: list[Trial] = []
    for p in chosen:
        runs = retry(lambda: client.search_runs(
            [exp.experiment_id], f"tags.`{PARENT}` = '{p.info.run_id}' and tags.`{ROLE}` = 'trial'",
            order_by=["attributes.start_time ASC"], max_results=10_000))
        for r in runs:
            if r.data.tags.get("stage", "classifier") != "classifier":
                continue  # the generator stage's runs
            state, stopped_by = _state(r)
            at = r.data.tags.get("gitune.stopped_at_epoch")
            trials.append(Trial(
                run_id=r.info.run_id, trial_id=r.data.tags.get("gitune.trial_id", r.info.run_id[:8]),
                parent_id=p.info.run_id, status=r.info.status, state=state, stopped_by=stopped_by,
                stopped_at=int(at) if at and at.isdigit() else None, error=r.data.tags.get("gitune.error", ""),
                params={k: parse_value(v) for k, v in r.data.params.items()}, raw_params=dict(r.data.params),
                metrics=dict(r.data.metrics)))
    which = "any parent run" if len(chosen) > 1 else f"parent run {chosen[0].info.run_id}"
    if not trials:
        raise UserError(f"experiment '{name}': {which} has no classifier trial runs; expected a sweep whose "
                        f"trials started")
    specs = [load_spec(client, p.info.run_id) for p in chosen]
    space: dict[str, Any] = {}
    for p, spec in zip(chosen, specs):  # --all: a key tuned by several parents keeps the latest one's range
        if spec is not None:
            for k, dist in (spec.get("space") or {}).items():
                space.setdefault(k, dist)
        else:
            for k, v in p.data.params.items():
                if k.startswith("space."):
                    space.setdefault(k[len("space."):], v)
    spec, latest = specs[0], chosen[0].data.params
    if spec is not None:
        metric, mode = spec.get("metric", "val/bal_acc"), spec.get("mode", "max")
        search, scheduler = spec.get("search") or {}, spec.get("scheduler") or {}
        search = search.get("type", "") if isinstance(search, dict) else str(search)
        scheduler = dict(scheduler) if isinstance(scheduler, dict) else {"type": str(scheduler)}
    else:  # a parent run logged before the spec artifact existed, or written by hand (tests): its params
        metric, mode, search = latest.get("metric", "val/bal_acc"), latest.get("mode", "max"), latest.get("search", "")
        scheduler = {k[len("scheduler."):]: parse_value(v) for k, v in latest.items() if k.startswith("scheduler.")}
        scheduler.setdefault("type", latest.get("scheduler", "?"))
    return Sweep(uri=uri, experiment=name, experiment_id=exp.experiment_id, parents=chosen, trials=trials,
                 metric=metric, mode=mode, search=search, space=space, scheduler=scheduler,
                 spec_source=SPEC_ARTIFACT if spec is not None else "parent run params")


def load_spec(client, run_id: str) -> dict | None:
    """The resolved spec a parent run logged as spec/resolved.yaml (tracking.start_sweep), parsed; None when
    the run has no such artifact or it is not a YAML mapping."""
    import yaml

    from gitune.tracking import retry

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = retry(lambda: client.download_artifacts(run_id, SPEC_ARTIFACT, tmp))
            text = Path(path).read_text()
        except Exception:  # noqa: BLE001 - missing artifact: MlflowException or OSError by store
            return None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return spec if isinstance(spec, dict) else None


def load_class_counts(client, trials: Sequence[Trial]) -> list[str]:
    """Fill each trial's training class sizes from its class_counts.csv (per_class.csv as a fallback).
    Returns the trial ids that had neither."""
    from gitune.tracking import retry

    missing = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            counts = None
            for name in ("class_counts.csv", "per_class.csv"):
                try:
                    path = retry(lambda: client.download_artifacts(t.run_id, name, os.path.join(tmp, t.run_id)))
                except Exception:  # noqa: BLE001 - missing artifact: MlflowException or OSError by store
                    continue
                counts = _read_counts(Path(path).read_text(), header=name == "per_class.csv")
                if counts:
                    break
            if counts:
                t.counts = counts
            else:
                missing.append(t.trial_id)
    return missing


def _read_counts(text: str, header: bool) -> dict[str, int]:
    rows = list(csv.reader(io.StringIO(text)))
    out: dict[str, int] = {}
    if header:  # class,name,train_count,...
        for row in rows[1:]:
            if len(row) >= 3 and row[0].isdigit() and row[2].isdigit():
                out[f"c{int(row[0]):03d}"] = int(row[2])
    else:  # cNNN,<name>,<count>
        for row in rows:
            if len(row) >= 3 and CLASS_RE.match(row[0]) and row[-1].strip().isdigit():
                out[row[0]] = int(row[-1])
    return out
