"""The generator stage of a sweep: find or pretrain the MUNIT generator that GIT trials use.

Order of preference: `generator.checkpoint` (a file, a folder holding generator.pt, or an MLflow
`runs:/<run_id>` URI); else the cache `<storage>/generators/<key>/generator.pt`, where key hashes the
data config and the generator block, so running the same sweep again reuses the generator; else
pretraining as Tune trial(s) of `trainables.generator`, whose best checkpoint (by `generator.metric`)
fills the cache (its fidelity metrics fid/* go into the cache's info.json and are printed again on reuse).
The result is a payload (architecture + CPU weights) that the sweep hands to every classifier trial
through the Ray object store.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from gitune import storage
from gitune.errors import UserError
from gitune.redact import redact, redact_any
# export_generator: tests/test_regression.py (kept untouched) imports it from here
from gitune.generator_file import GENERATOR_FILE, check_payload, export_generator, read_generator_file  # noqa: F401

CACHE_DIR = "generators"
GENERATOR_STAGE = "generator"  # the generator stage's Tune experiment: <run_dir>/generator
# Keys that change only how a run is watched, not the weights it produces: left out of the cache key.
_NOT_IN_KEY = ("report_every", "grid_every", "threads")
# Keys added after generators were first cached: in the key only when set away from their defaults, so
# that generators cached before them keep their keys.
_KEY_IF_SET = ("precision", "channels_last", "lr_scaling")


class StageFailed(Exception):
    """Every generator trial errored: the sweep cannot go on (exit 1, not a user error)."""


def resolve_reference(ref: str, tracking_uri: str, where: str) -> str:
    """A local path for `generator.checkpoint`: MLflow URIs (runs:/…, models:/…) are downloaded."""
    if ref.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        import mlflow

        if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
            raise UserError(f"{where}: {ref}: no MLflow store at {tracking_uri} to find that run in "
                            f"(pass --tracking-uri)")
        uri = ref
        if ref.startswith("models:/") and not os.environ.get("MLFLOW_REGISTRY_URI"):
            mlflow.set_registry_uri(tracking_uri)  # the Model Registry of the tracking store, not the cwd's
        if ref.startswith("runs:/") and len(ref.rstrip("/").split("/")) <= 2:
            uri = ref.rstrip("/") + f"/generator/{GENERATOR_FILE}"  # where the generator trainable logs it
        try:
            return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
        except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing run or file
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"{where}: {ref}: could not download it from MLflow ({first})") from None
    return str(Path(ref).expanduser().resolve())


def generator_key(data_cfg: dict[str, Any], block: dict[str, Any]) -> str:
    """Hash of everything that determines the pretrained weights: data config and generator block."""
    from gitune.config import GENERATOR_DEFAULTS

    gen_cfg = {k: v for k, v in block["config"].items() if k not in _NOT_IN_KEY
               and not (k in _KEY_IF_SET and v == GENERATOR_DEFAULTS[k])}
    spec = {"data": data_cfg, "generator": gen_cfg, "space": block["space"], "num_samples": block["num_samples"],
            "search": block["search"], "metric": block["metric"], "mode": block["mode"]}
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_path(root: str, key: str) -> str:
    return f"{root.rstrip('/')}/{CACHE_DIR}/{key}/{GENERATOR_FILE}"


def cached_file(root: str, key: str) -> str | None:
    """A local copy of the cached generator for `key`, or None when there is none."""
    from pyarrow import fs as pafs

    uri = cache_path(root, key)
    if not storage.is_file(uri):
        return None
    fs, path = storage.filesystem(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    local = Path(tempfile.mkdtemp(prefix="gitune-gen-")) / GENERATOR_FILE
    with fs.open_input_stream(path) as src, open(local, "wb") as dst:
        dst.write(src.read())
    return str(local)


def cached_info(root: str, key: str) -> dict[str, Any]:
    """The info.json stored beside a cached generator ({} when missing or unreadable)."""
    try:
        text = storage.read_text(f"{cache_path(root, key).rsplit('/', 1)[0]}/info.json")
        info = json.loads(text) if text is not None else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def fidelity_line(fidelity: dict[str, float], metric: str, mode: str) -> str:
    """The chosen generator's fidelity in one line, with T's reference values and the selection metric."""
    from gitune.metrics.generator_fidelity import fidelity_summary

    if not fidelity:
        return "fidelity: not recorded (a generator cached before gitune measured it)"
    return f"fidelity: {fidelity_summary(fidelity)}; chosen by {metric} ({mode})"


def store_in_cache(local_file: str, root: str, key: str, info: dict[str, Any]) -> str | None:
    """Copy the chosen generator into the cache and return its URI; None when another sweep stored one for
    this key first (that one is kept: it was trained for the same key). Written under a temporary name of its
    own, then moved, so a crash never leaves a half-written file that a later run would take for a finished
    generator, and two sweeps storing at once never write into each other's file. The generator goes first
    and only its writer writes info.json, so the two describe the same generator."""
    uri = cache_path(root, key)
    fs, path = storage.filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    tmp = storage.temp_name(path)
    with open(local_file, "rb") as src, fs.open_output_stream(tmp) as dst:
        dst.write(src.read())
    if not storage.publish_new(fs, tmp, path):
        return None
    info_json = json.dumps(redact_any(info), indent=2, sort_keys=True, default=str)
    storage.write_text(f"{uri.rsplit('/', 1)[0]}/info.json", info_json)
    return uri


def stage_spec(spec):
    """The generator stage as a SweepSpec of its own: FIFO (every generator runs to the end), the
    block's search, resources and small space, config = {data, generator}."""
    from gitune.spaces import SweepSpec

    block = spec.generator
    return SweepSpec(name=f"{spec.name}-generator", trainable="generator", metric=block["metric"],
                     mode=block["mode"], num_samples=block["num_samples"],
                     scheduler={"type": "fifo", "max_t": None, "grace_period": 1, "reduction_factor": 2},
                     search=dict(block["search"]), resources=dict(block["resources"]),
                     checkpoint={"num_to_keep": 2}, failure=dict(spec.failure),
                     config={"data": copy.deepcopy(spec.config["data"]), "generator": copy.deepcopy(block["config"])},
                     space=copy.deepcopy(block["space"]), source=spec.source)


def reached_the_end(result) -> bool:
    """A generator trial that reported its last iteration ended, even where a restored stage lost Tune's `done`
    (the experiment state of a finished stage can hold the last result from before the trial returned), and a
    trial that diverged (it returned at once, gitune.trainables.diverged)."""
    from gitune.trainables.diverged import diverged

    if diverged(result):
        return True
    last = (result.metrics or {}).get("iteration")
    return last is not None and last >= ((result.config or {}).get("generator") or {}).get("iterations", float("inf"))


def pretrain(spec, run_dir: str, ctx, resume: bool,
             interrupted) -> tuple[str, str | None, dict[str, float]]:
    """Run the generator trials under Tune; returns (local generator.pt of the best trial, its MLflow run id,
    its last fid/* metrics)."""
    from ray import tune

    from gitune.stage import best_result, run_stage
    from gitune.trainables.diverged import REASON, diverged
    from gitune.trainables.generator import train_generator

    gspec = stage_spec(spec)
    columns = {"iteration": "iter", "loss/recon_x": "recon_x", "loss/gen_adv": "gen_adv", "loss/dis": "dis"}
    columns.setdefault(gspec.metric, gspec.metric.split("/", 1)[-1])
    results = run_stage(gspec, tune.with_parameters(train_generator, tracking=ctx, metric=gspec.metric),
                        f"{run_dir}/{GENERATOR_STAGE}",
                        ctx, resume, {**columns, "perf/img_per_s": "img/s"})
    if interrupted([r for r in results if not reached_the_end(r)]):
        raise KeyboardInterrupt
    best = best_result(results, gspec.metric, gspec.mode, need_checkpoint=True)
    if best is None:
        errors = [str(r.error).strip().splitlines()[-1] for r in results if r.error is not None]
        nans = [str(r.metrics.get(REASON)) for r in results if diverged(r)]
        if nans and not errors:
            raise StageFailed(f"generator stage: every trial diverged ({len(nans)}; {nans[-1]}): lower "
                              f"generator.config.lr (or generator.space) in a new run; a resumed one would "
                              f"diverge the same way")
        raise StageFailed(f"generator stage: no trial finished ({len(errors)} errored, {len(nans)} diverged"
                          + (f"; last error: {errors[-1]}" if errors else "") + ")")
    local = Path(tempfile.mkdtemp(prefix="gitune-gen-")) / GENERATOR_FILE
    with best.checkpoint.as_directory() as d:
        src = Path(d) / GENERATOR_FILE
        if not src.is_file():
            raise StageFailed(f"generator stage: the best trial's last checkpoint has no {GENERATOR_FILE}")
        local.write_bytes(src.read_bytes())
    found = _trial_run(ctx, best.metrics.get("trial_id", ""))
    fidelity = {k: float(v) for k, v in best.metrics.items() if k.startswith("fid/")}
    print(f"gitune: generator: chose trial {best.metrics.get('trial_id', '?')} of {len(results)} by {gspec.metric} "
          f"({gspec.mode}) = {best.metrics[gspec.metric]:.4g}; {fidelity_line(fidelity, gspec.metric, gspec.mode)}")
    return str(local), (found.info.run_id if found is not None else None), fidelity


def _trial_run(ctx, trial_id: str):
    """The MLflow run of a generator trial, or None (untracked, or the store is away now)."""
    from gitune.tracking import find_trial_run
    from gitune.trial_run import unreachable

    if ctx is None:
        return None
    try:
        return find_trial_run(ctx, trial_id)
    except Exception as e:  # noqa: BLE001 - see unreachable()
        if not unreachable(e):
            raise
        return None


def restored_for_other_key(spec, run_dir: str, resume: bool) -> str | None:
    """Why the generator stage that --resume would restore from `run_dir` may not be the one `spec`'s cache key
    stands for, or None when it is (or nothing is restored). A restored stage was trained with the spec its run
    started with (spec.yaml, see gitune.run_folder), which `--resume --force` lets differ from this one."""
    from ray import tune

    from gitune import run_folder
    from gitune.spaces import describe

    if not resume or not tune.Tuner.can_restore(f"{run_dir}/{GENERATOR_STAGE}"):
        return None
    started = run_folder.read_spec(run_dir)
    if started is None:
        return f"the generator stage restored from {redact(run_dir)} has no recorded spec (an older run folder)"
    if _key_of_text(started) != _key_of_text(redact(describe(spec))):
        return (f"the generator stage restored from {redact(run_dir)} was trained with another data or "
                f"generator spec (resumed with --force)")
    return None


def _key_of_text(spec_yaml: str) -> str | None:
    """generator_key of a resolved spec as YAML (both sides of a comparison read back the same way)."""
    from gitune.spaces import safe_load

    tree = safe_load(spec_yaml) or {}
    block = tree.get("generator")
    if not isinstance(block, dict):
        return None
    return generator_key((tree.get("config") or {}).get("data"), block)


def prepare_generator(spec, root: str, run_dir: str, ctx, resume: bool, image_shape, interrupted,
                      given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The payload for classifier trials: the given checkpoint, the cached generator, or a new one."""
    from gitune import tracking

    where = f"{spec.source}: generator"
    key = generator_key(spec.config["data"], spec.generator)
    if given is not None:
        payload, how = given, "given"
    else:
        local = cached_file(root, key)
        if local is not None:
            payload, how = read_generator_file(local, f"{where} cache"), "cached"
            info = cached_info(root, key)
            print(f"gitune: generator: reusing {redact(cache_path(root, key))} (key {key}); "
                  f"{fidelity_line(info.get('fidelity') or {}, spec.generator['metric'], spec.generator['mode'])}")
        else:
            print(f"gitune: generator: no cached generator for key {key}; pretraining it first")
            not_for_key = restored_for_other_key(spec, run_dir, resume)
            local, run_id, fidelity = pretrain(spec, run_dir, ctx, resume, interrupted)
            info = {"key": key, "data": spec.config["data"], "generator": spec.generator, "mlflow_run_id": run_id,
                    "sweep": spec.name, "run_dir": run_dir, "fidelity": fidelity}
            uri = None if not_for_key else store_in_cache(local, root, key, info)
            payload, how = read_generator_file(local, where), "trained"
            payload["source"] = uri or f"{run_dir}/{GENERATOR_STAGE}"
            payload["meta"]["mlflow_run_id"] = run_id
            model = _register(spec, ctx, run_id)
            if model:
                payload["meta"]["mlflow_model"] = model
            if not_for_key:
                print(f"gitune: generator: trained; not stored in the cache under key {key}: {not_for_key}")
            elif uri is None:
                print(f"gitune: generator: trained; another sweep stored a generator under key {key} meanwhile, "
                      f"which is kept (this sweep uses its own)")
            else:
                print(f"gitune: generator: trained; stored as {redact(uri)}")
    check_payload(payload, image_shape, where)
    payload["key"] = key if how != "given" else f"given:{payload['source']}"
    if ctx is not None:
        client_tags = {"gitune.generator": how, "gitune.generator_key": payload["key"],
                       "gitune.generator_source": payload["source"]}
        run_id = payload.get("meta", {}).get("mlflow_run_id")
        if run_id:
            client_tags["gitune.generator_run_id"] = run_id
        if how == "trained" and payload["meta"].get("mlflow_model"):
            client_tags["gitune.generator_model"] = payload["meta"]["mlflow_model"]
        tracking.set_parent_tags(ctx, client_tags)
    sys.stdout.flush()
    return payload


def _register(spec, ctx, run_id: str | None) -> str | None:
    """The trained generator as a version of the registered model `generator.register_as` (default
    `<name>-generator`; '' turns it off): its models:/ URI, printed, or None."""
    from gitune import tracking

    name = spec.generator.get("register_as")
    name = f"{spec.name}-generator" if name is None else name.strip()
    if ctx is None or not run_id or not name:
        return None
    model = tracking.register_generator(ctx, run_id, name)
    if model:
        print(f"gitune: generator: registered as {model} (generator.checkpoint: {model} reuses it)")
    return model


def check_resumable(spec, root: str, run_dir: str) -> None:
    """Before --resume changes anything (MLflow runs, Ray): the experiment state of each stage that will be
    restored from `run_dir` is readable. The generator stage is restored only when its generator is neither
    given nor cached (prepare_generator)."""
    from ray import tune

    from gitune.stage import check_experiment_state

    stages = [run_dir]
    if spec.generator is not None and not spec.generator["checkpoint"] and not storage.is_file(
            cache_path(root, generator_key(spec.config["data"], spec.generator))):
        stages.append(f"{run_dir}/{GENERATOR_STAGE}")
    for stage_dir in stages:
        if tune.Tuner.can_restore(stage_dir):
            check_experiment_state(stage_dir)


def load_given(spec, tracking_uri: str) -> dict[str, Any] | None:
    """Read `generator.checkpoint` before anything starts, so a bad file costs one line and exit 2."""
    ref = spec.generator["checkpoint"] if spec.generator else None
    if not ref:
        return None
    where = f"{spec.source}: generator.checkpoint"
    return read_generator_file(resolve_reference(ref, tracking_uri, where), where)
