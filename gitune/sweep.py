"""`python -m gitune.sweep --space FILE`: run a sweep with Ray Tune (ASHA + random/grid/Optuna), tracked in MLflow.

Order matters: everything the user can get wrong (spec, overrides, data files, tracking server) is
checked before Ray starts or any MLflow run exists, so a mistake costs one line and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from gitune import run_folder
from gitune.config_doc import PrintSchema
from gitune.errors import CliParser, UserError, run_cli
from gitune.redact import redact
from gitune.spaces import SweepSpec, _values_or_bounds, describe, load_spec, missing_space

SUMMARY_KEYS = ("val/bal_acc", "val/acc", "val/acc_many", "val/acc_medium", "val/acc_few", "inv/ekld_many",
                "inv/ekld_few", "inv/ekld_size_spearman", "inv/ekld_gen_few", "test/bal_acc", "test/acc_few",
                "epoch")


EXAMPLES = """\
examples:
  python -m gitune.sweep --list                                   # the bundled search spaces
  python -m gitune.sweep --space search_spaces/demo.yaml          # built-in data, CPU, offline (~5 min)
  python -m gitune.sweep --space search_spaces/cifar_lt.yaml      # CIFAR-10-LT, the paper's recipe (GPU)
  python -m gitune.sweep --space search_spaces/cifar_lt.yaml --set data.name=cifar100   # CIFAR-100-LT
  python -m gitune.sweep --space search_spaces/cifar_lt.yaml --dry-run        # check and print the spec
  python -m gitune.sweep --space search_spaces/cifar_lt.yaml --set train.epochs=20 --num-samples 4
  python -m gitune.sweep --space search_spaces/cifar_lt.yaml --resume         # after Ctrl-C or a crash

Relative paths in the config (data.root, data.path) are taken from the directory the command runs in.
A mistake in the spec, the overrides or the data is reported in one line, exit status 2, before Ray starts.
"""


class ListSpaces(argparse.Action):
    """`--list`: print the bundled search spaces with their descriptions and exit 0 (no --space needed)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from gitune.spaces import space_listing

        sys.stdout.write(space_listing())
        parser.exit(0)


def parse_args(argv: list[str] | None, prog: str = "python -m gitune.sweep") -> argparse.Namespace:
    from gitune import version_string

    p = CliParser(prog=prog, description="Run a sweep of a search-space file with Ray Tune (ASHA + random, grid "
                  "or Optuna search), every trial tracked in MLflow.", epilog=EXAMPLES,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", required=True, metavar="FILE",
                   help="search-space YAML file (see search_spaces/ and --list)")
    p.add_argument("--list", action=ListSpaces, help="list the bundled search spaces with their descriptions and exit")
    p.add_argument("--version", action="version", version=version_string())
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec or config key, e.g. --set train.epochs=5 --set scheduler.max_t=5; tune a "
                        "key with --set 'space.train.seed={grid: [0, 1, 2]}' (null removes it from the space)")
    p.add_argument("--num-samples", type=int, metavar="N", help="number of trials (overrides num_samples)")
    p.add_argument("--name", metavar="NAME", help="sweep / MLflow experiment name (overrides name)")
    p.add_argument("--storage", metavar="PATH", help="where Tune keeps results and checkpoints: a local folder "
                   "(default ./ray_results), s3://… or gs://… (shared storage is needed on a multi-node cluster)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: MLflow's default, "
                   "sqlite:///mlflow.db in the working directory; http://host:5000 for a server)")
    p.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join (auto, ray://host:10001); default: start a local one")
    p.add_argument("--shared-storage", action="store_true",
                   help="declare that the local --storage path is a shared mount (NFS) seen by every node of a "
                        "multi-node cluster")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted run of this sweep (the "
                   "newest one started with the same resolved spec; a changed spec is refused, see --force)")
    p.add_argument("--force", nargs="?", const="", metavar="KEY[,KEY...]",
                   help="with --resume: accept changes to the spec since the run started, in the harmless keys "
                        f"({', '.join(run_folder.HARMLESS)}) and in the keys given (a key covers the keys under it, "
                        "e.g. config.train; config keys also as --set writes them, train.epochs); restored trials "
                        "keep the values they started with")
    p.add_argument("--dry-run", action="store_true", help="print the resolved spec and exit")
    p.add_argument("--schema", action=PrintSchema,
                   help="print the JSON Schema of a search-space file (docs/space.schema.json) and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m gitune.sweep") -> int:
    return run_cli(run, parse_args(argv, prog))


def storage_root(arg: str | None) -> str:
    if arg and "://" in arg:
        return arg.rstrip("/")
    return str(Path(arg or "ray_results").expanduser().resolve())


def absolutize_paths(cfg: dict[str, Any]) -> None:
    """Trials run in their own directories: data paths are taken relative to where the user ran the sweep."""
    data = cfg["data"]
    for key in ("root", "path"):
        if isinstance(data.get(key), str) and "://" not in data[key]:
            data[key] = str(Path(data[key]).expanduser().resolve())


def check_data_paths(spec: SweepSpec) -> None:
    """--dry-run's data check: every data.path the trials can get (the fixed one, each choice/grid value) exists
    and is of the kind data.name reads (an .npz file, an image folder). Nothing is opened or downloaded: the
    contents are checked by preflight_data when the sweep starts."""
    from itertools import product

    from gitune.config import get_dotted

    def values(key: str) -> list[Any]:
        if key not in spec.space:
            return [get_dotted(spec.config, key)]
        return list(next(iter(spec.space[key].values())))  # strings: only choice/grid pass validation

    for name, path in product(values("data.name"), values("data.path")):
        if name not in ("npz", "imagefolder") or not isinstance(path, str) or "://" in path:
            continue
        full = Path(path).expanduser().resolve()
        where = f"{spec.source}: {'space' if 'data.path' in spec.space else 'config'}.data.path: {full}"
        if name == "npz" and not full.is_file():
            raise UserError(f"{where}: {'not a file' if full.exists() else 'file not found'} "
                            f"(data.name npz reads an .npz file)")
        if name == "imagefolder" and not full.is_dir():
            raise UserError(f"{where}: {'not a folder' if full.exists() else 'folder not found'} "
                            f"(data.name imagefolder reads path/<class>/<images>)")


def driver_dataset(data_cfg: dict[str, Any], built: dict[str, Any]):
    """The dataset of `data_cfg`, built on the driver at most once per distinct config (memo `built`, which
    the preflight checks of one run share): building can decode every image or render every glyph."""
    import json

    from gitune.data.dataset import build_dataset

    key = json.dumps(data_cfg, sort_keys=True, default=str)
    if key not in built:
        built[key] = build_dataset(data_cfg)
    return built[key]


def preflight_data(spec: SweepSpec, built: dict[str, Any] | None = None) -> None:
    """Open the data sources every trial will read (cheap checks), so bad files fail here, not in trials."""
    from gitune.config import set_dotted
    from gitune.data.sources import check_source, load_source

    variants = [spec.config]
    for key in ("data.name", "data.path", "data.root", "data.dataset", "data.subset"):
        if key in spec.space:
            values = next(iter(spec.space[key].values()))
            for v in values:
                cfg = {**spec.config, "data": dict(spec.config["data"])}
                set_dotted(cfg, key, v)
                absolutize_paths(cfg)
                variants.append(cfg)
    built = {} if built is None else built
    for cfg in variants:
        check_source(cfg["data"])
        # Building decodes every image (an unreadable file fails here, not in each trial) and checks that
        # nuisance_rank names a class (known once built); a rank the space replaces is not checked.
        imagefolder = cfg["data"]["name"] == "imagefolder"
        if "data.nuisance_rank" not in spec.space and (imagefolder or cfg["data"].get("nuisance_rank") is not None):
            driver_dataset(cfg["data"], built)
        elif imagefolder:
            load_source(cfg["data"])


def preflight_layer(spec: SweepSpec) -> None:
    """eval.latent_layer names a module of every architecture the sweep can sample (checked on a tiny
    model: module names do not depend on the class or channel count)."""
    from gitune.models import create_model
    from gitune.trainables.classifier import check_layer

    if not spec.config["eval"]["extra_invariance"] or "eval.latent_layer" in spec.space:
        return
    archs = next(iter(spec.space["model.arch"].values())) if "model.arch" in spec.space else \
        [spec.config["model"]["arch"]]
    for arch in archs:
        check_layer(create_model(arch, 2, 1), spec.config["eval"]["latent_layer"])


def latest_run_dir(root: str, name: str, spec_yaml: str | None = None) -> str | None:
    """The newest run folder of this sweep that Tune saved an experiment state in (either stage). With
    `spec_yaml`, the newest such folder started with that same spec comes first: two sweeps of one name with
    different overrides each resume their own run. Folder names sort by start time (run_folder.new_run_dir)."""
    from ray import tune

    from gitune import storage
    from gitune.pretrain import GENERATOR_STAGE

    base = f"{root}/{name}"
    runs = [f"{base}/{run}" for run in sorted(storage.subfolders(base), reverse=True)
            if any(tune.Tuner.can_restore(d) for d in (f"{base}/{run}", f"{base}/{run}/{GENERATOR_STAGE}"))]
    if spec_yaml is not None:
        for run_dir in runs:
            started = run_folder.read_spec(run_dir)
            if started is not None and not run_folder.spec_changes(started, spec_yaml):
                return run_dir
    return runs[0] if runs else None


def asha_rungs(spec: SweepSpec) -> list[int]:
    """Epochs at which ASHA may stop a trial: invariance is also measured there, so every trial's
    per-class plots reflect the epoch it ended at."""
    s = spec.scheduler
    if s["type"] != "asha":
        return []
    rungs, t = [], float(s["grace_period"])
    while t < s["max_t"]:
        rungs.append(int(round(t)))
        t *= s["reduction_factor"]
    return rungs


def run(args: argparse.Namespace) -> int:
    if args.force is not None and not args.resume:
        raise UserError("--force: only with --resume (it accepts changes to the spec of the run resumed)")
    if not Path(args.space).is_file():  # one line with the closest bundled files (gitune.spaces.missing_space)
        raise UserError(f"--space {missing_space(args.space)}")
    spec = load_spec(args.space, args.overrides, args.num_samples, args.name)
    if args.dry_run:
        check_data_paths(spec)
        print(redact(describe(spec)), end="")
        print(f"# valid: {len(spec.space)} tuned key(s), {spec.num_samples} sample(s); data paths exist, their "
              f"contents are checked when the sweep starts")
        return 0
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError(f"--num-samples: expected an integer ≥ 1, got {args.num_samples}")
    absolutize_paths(spec.config)
    from gitune.storage import check_writable

    check_writable(storage_root(args.storage))  # cheap, so first: before data is built, Ray or MLflow start
    uri, image_shape, given = preflight(spec, args.tracking_uri)
    root = storage_root(args.storage)
    spec_yaml = describe(spec)
    run_dir = None
    if args.resume:
        run_dir = latest_run_dir(root, spec.name, spec_yaml)
        if run_dir is None:
            raise UserError(f"--resume: no interrupted run of sweep '{spec.name}' under {root}/{spec.name}")
        run_folder.check_resume(run_dir, spec_yaml, args.force)
        from gitune.pretrain import check_resumable

        check_resumable(spec, root, run_dir)  # a corrupt Tune state: one line, before Ray or MLflow start
    with _ray(args):
        check_shared_storage(args, root)
        if run_dir is None:  # made only now: a refused --address or storage leaves no folder behind
            run_dir = run_folder.new_run_dir(root, spec.name)
            run_folder.write_spec(run_dir, spec_yaml)
        return _run_in_ray(args, spec, uri, root, run_dir, image_shape, given)


def preflight(spec: SweepSpec,
              tracking_uri: str | None) -> tuple[str, tuple[int, ...] | None, dict[str, Any] | None]:
    """The checks of the data, model, tracking store and generator, in that order; returns (tracking URI, image
    shape, given generator). The driver builds each data config's dataset at most once, here, and lets it go
    before the sweep starts."""
    from gitune import pretrain, tracking
    from gitune.generator_file import check_payload

    built: dict[str, Any] = {}
    preflight_data(spec, built)
    preflight_layer(spec)
    uri = tracking.resolve_uri(tracking_uri)
    tracking.check_reachable(uri)
    image_shape = preflight_git(spec, built)
    given = pretrain.load_given(spec, uri)
    if given is not None:
        check_payload(given, image_shape, f"{spec.source}: generator.checkpoint")
    return uri, image_shape, given


def check_shared_storage(args: argparse.Namespace, root: str) -> None:
    """A node-local --storage on a cluster of several nodes would scatter checkpoints over the nodes'
    disks: refused (before any MLflow run exists) unless the user declares the path shared."""
    import ray

    if ("://" in root and not root.startswith("file://")) or args.shared_storage:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        raise UserError(f"--storage {root}: a local path on a {len(nodes)}-node Ray cluster; use s3://…, gs://… "
                        f"or a shared mount and pass --shared-storage")


def _run_in_ray(args: argparse.Namespace, spec: SweepSpec, uri: str, root: str, run_dir: str,
                image_shape: tuple[int, ...] | None, given: dict[str, Any] | None) -> int:
    from gitune import pretrain, storage, tracking
    from gitune.packing import check_packing
    from gitune.signals import exit_status

    ctx = tracking.start_sweep(spec.name, uri, run_dir, describe(spec), Path(args.space),
                               _sweep_params(spec), args.resume)
    print(f"gitune: sweep '{spec.name}': results and checkpoints in {redact(run_dir)}")
    print(f"gitune: MLflow experiment '{spec.name}' (id {ctx.experiment_id}), parent run {ctx.parent_run_id}, "
          f"tracking URI {redact(uri)}")
    if uri.startswith("sqlite:///"):
        print(f"gitune: watch it with: mlflow ui --backend-store-uri {redact(uri)}")
    status = "FAILED"
    summary: dict[str, Any] = {}
    try:
        generator = None
        if spec.generator is not None:
            generator = pretrain.prepare_generator(spec, root, run_dir, ctx, args.resume, image_shape,
                                                   interrupted, given)
        check_packing(spec, generator)
        results = _fit(spec, ctx, run_dir, args.resume, generator)
        if interrupted(results):
            if not getattr(results, "time_budget_hit", False):
                raise KeyboardInterrupt
            from gitune.stage import cut_off

            print(f"gitune: time_budget_s ({spec.time_budget_s:g} s) reached: {sum(map(cut_off, results))} "
                  f"trial(s) stopped before their last epoch (tag gitune.stopped_early=time_budget)")
        summary = _print_best(spec, results)
        _print_comparison(spec, results)
        if "best/trial_id" not in summary:
            return 1  # every trial errored: the sweep failed (parent run FAILED)
        status = "FINISHED"
    except pretrain.StageFailed as e:
        print(f"gitune: {e}", file=sys.stderr)
        return 1
    except storage.StorageFailed as e:
        print(f"gitune: {e}; once it does, continue with: {redact(_resume_command(args))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"gitune: interrupted; continue with: {redact(_resume_command(args))}", file=sys.stderr)
        return exit_status()  # 130 after Ctrl-C, 143 after SIGTERM
    finally:
        closed = tracking.end_sweep(ctx, status, summary)
        if not closed and status != "KILLED":  # a KILLED sweep printed its resume command already
            print(f"gitune: once MLflow answers, continue with: {redact(_resume_command(args))}", file=sys.stderr)
    return 0 if closed else 1


def interrupted(results) -> bool:
    """Tune handles Ctrl-C (and SIGTERM, which gitune.signals turns into it) itself: it saves the experiment
    state and returns normally, with the trials it cut off marked TERMINATED in memory. Trials that really
    ended (finished, or stopped by ASHA) carry `done` in their last result, or reached their last epoch (a
    restored finished experiment can lose `done`); errored ones carry an error (gitune.stage.cut_off)."""
    from gitune.stage import cut_off

    return any(cut_off(r) for r in results)


def _resume_command(args: argparse.Namespace) -> str:
    import shlex  # values such as --set space.train.seed='{grid: [0, 1]}' must survive the shell

    parts = ["python -m gitune.sweep --space", shlex.quote(str(args.space))]
    parts += [f"--set {shlex.quote(o)}" for o in args.overrides]
    for flag in ("num_samples", "name", "storage", "tracking_uri", "address"):
        if getattr(args, flag) is not None:
            parts.append(f"--{flag.replace('_', '-')} {shlex.quote(str(getattr(args, flag)))}")
    if getattr(args, "shared_storage", False):
        parts.append("--shared-storage")
    parts.append("--resume")
    if getattr(args, "force", None) is not None:  # a resumed run whose spec changed needs it every time
        parts.append("--force" + (f" {shlex.quote(args.force)}" if args.force else ""))
    return " ".join(parts)


def _sweep_params(spec: SweepSpec) -> dict[str, Any]:
    params: dict[str, Any] = {"metric": spec.metric, "mode": spec.mode, "num_samples": spec.num_samples,
                              "search": spec.search["type"], "scheduler": spec.scheduler["type"],
                              "trainable": spec.trainable}
    for k, v in spec.scheduler.items():
        params[f"scheduler.{k}"] = v
    for k, dist in spec.space.items():
        params[f"space.{k}"] = dist
    return params


@contextlib.contextmanager
def _ray(args: argparse.Namespace):
    """One Ray session for both stages (started here unless the caller already has one)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table: chosen columns, not 300 metrics
    # Checkpointing every epoch forces frequent experiment snapshots; they are cheap at this size.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    from gitune.signals import sigterm_as_sigint

    if args.address:
        check_address(args.address)
    started_ray = False
    if not ray.is_initialized():
        target = _ray_target(args)
        try:
            with _loopback_only(target.get("_node_ip_address") == "127.0.0.1"):
                ray.init(**target, include_dashboard=False, log_to_driver=True)
        except (ValueError, ConnectionError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"--address {args.address}: cannot join a Ray cluster ({first})") from None
        started_ray = True
    try:
        with sigterm_as_sigint():  # after ray.init: it sets a SIGTERM handler of its own
            yield
    finally:
        if started_ray:
            ray.shutdown()


def _ray_target(args: argparse.Namespace) -> dict[str, Any]:
    """ray.init's address arguments. Without --address (and no RAY_ADDRESS, which a Ray job sets) a new local
    Ray on 127.0.0.1: a single-machine sweep joins no other instance and advertises no network address; Ray
    puts its files under RAY_TMPDIR (or TMPDIR, else /tmp)."""
    if args.address == "local" or (not args.address and not os.environ.get("RAY_ADDRESS")):
        return {"address": "local", "_node_ip_address": "127.0.0.1"}
    return {"address": args.address}


@contextlib.contextmanager
def _loopback_only(on: bool):
    """On Linux, ray.init swaps a node address of 127.0.0.1 for the machine's routable one unless Ray's cluster
    support is off (ray._private.services.resolve_ip_for_localhost); kept at 127.0.0.1, Ray's servers listen on
    the loopback only. Off, while ray.init runs, for this process (ray may be imported already: the constant)
    and for the processes it starts (the variable; the raylet hands it on to the workers it starts later)."""
    if not on:
        yield
        return
    from ray._private import ray_constants

    name = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    env, const = os.environ.get(name), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[name] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = const
        if env is None:
            del os.environ[name]
        else:
            os.environ[name] = env


def check_address(address: str) -> None:
    """`auto`, `local`, `host:port` (the GCS of a running cluster) or `ray://host:port` (Ray Client); a
    host:port that nobody answers on is refused at once (Ray itself would wait for minutes)."""
    import socket

    if address in ("auto", "local"):
        return
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in hostport:
        raise UserError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answers at {host}:{port} "
                        f"({e.strerror or e})") from None


def preflight_git(spec: SweepSpec, built: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """With a generator, build the dataset once on the driver: its image shape must match the generator's,
    and `git.class_threshold` must leave some class to augment. Returns the image shape (C, H, W)."""
    if spec.generator is None:
        return None
    from gitune.models.munit import munit_check
    from gitune.trainables.generator import arch_of
    from gitune.training.git import keep_probabilities

    data = driver_dataset(spec.config["data"], {} if built is None else built)
    if not spec.generator["checkpoint"]:
        sizes = [spec.generator["config"]]
        for key, dist in spec.generator["space"].items():
            for v in _values_or_bounds(dist, key):  # what the distribution samples, not its raw [low, high, q]
                if key.split(".", 1)[1] in arch_of(spec.generator["config"]):
                    sizes.append({**spec.generator["config"], key.split(".", 1)[1]: v})
        for gc in sizes:
            error = munit_check(arch_of(gc), data.image_shape[-1])
            if error:
                raise UserError(f"{spec.source}: {error}")
    thresholds = ([spec.config["git"]["class_threshold"]] if "git.class_threshold" not in spec.space
                  else _values_or_bounds(spec.space["git.class_threshold"], "git.class_threshold"))
    for thr in thresholds:
        if thr is not None:
            try:
                keep_probabilities(data.class_counts, thr)
            except UserError as e:
                raise UserError(f"{spec.source}: {e}") from None
    return tuple(data.image_shape)


def _fit(spec: SweepSpec, ctx, run_dir: str, resume: bool, generator: dict[str, Any] | None = None):
    """The classifier stage: every trial gets the generator payload and measures invariance at ASHA's rungs."""
    from ray import tune

    from gitune.stage import run_stage
    from gitune.trainables.classifier import train_classifier

    trainable = tune.with_parameters(train_classifier, tracking=ctx, invariance_epochs=asha_rungs(spec),
                                     generator=generator, metric=spec.metric)
    columns = {"epoch": "epoch", spec.metric: spec.metric, "val/acc_few": "few", "val/acc_many": "many",
               "train/loss": "loss"}
    return run_stage(spec, trainable, run_dir, ctx, resume, columns, sort_by_metric=True)


def _print_best(spec: SweepSpec, results) -> dict[str, Any]:
    """The best trial by its last reported metric, with its tuned config and tail metrics."""
    from gitune.stage import best_result
    from gitune.trainables.diverged import diverged

    errors = len(results.errors) + sum(diverged(r) for r in results)  # diverged trials end FAILED, unretried
    total = len(results)
    best = best_result(results, spec.metric, spec.mode)
    if best is None:
        print(f"gitune: no trial reported {spec.metric} ({errors} of {total} errored)", file=sys.stderr)
        return {"trials": total, "errored": errors}
    m = best.metrics
    tuned = {}
    from gitune.config import get_dotted

    for key in spec.space:
        tuned[key] = get_dotted(best.config, key)
    print(f"\ngitune: {total} trials, {errors} errored. Best trial {m.get('trial_id')} by {spec.metric} "
          f"({spec.mode}):")
    for k, v in tuned.items():
        print(f"  {k} = {v}")
    summary: dict[str, Any] = {"best/trial_id": m.get("trial_id"), "trials": total, "errored": errors}
    for k in SUMMARY_KEYS:
        if k in m and m[k] is not None:
            print(f"  {k:24s} {m[k]:.4f}" if isinstance(m[k], float) else f"  {k:24s} {m[k]}")
            summary[f"best/{k}"] = m[k]
    for k, v in tuned.items():
        summary[f"best.{k}"] = v
    return summary


def _print_comparison(spec: SweepSpec, results) -> None:
    """Arms pooled over seeds/instances against the git.prob=0 (or aug.oracle_prob=0) arm, when the space
    has replicates: the answer a GIT-vs-baseline sweep is run for."""
    from gitune.comparison import Result, comparison_lines
    from gitune.config import get_dotted
    from gitune.trainables.diverged import diverged

    finished = [Result({k: get_dotted(r.config, k) for k in spec.space}, dict(r.metrics or {}))
                for r in results if r.error is None and not diverged(r)]
    lines = comparison_lines(list(spec.space), finished)
    if lines:
        print("\n" + "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
