"""Nothing lost in the generator stage (`python -m gitune.sweep` in a subprocess with its own local Ray):

- kill -9 the driver and its whole process group (Ray included) while the generator stage trains, then
  `--resume`: the generator trial continues from its checkpoint in its own MLflow run (no step logged twice),
  the generator is stored in the cache once, one MLflow run per trial, none left RUNNING;
- every generator trial diverges (its loss becomes inf/NaN), with retries forever: the sweep fails in one line,
  caches nothing, and `--resume` neither retrains nor retries the diverged trials.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)
from test_faults import _alive, _descendants, _session

pytestmark = pytest.mark.slow  # in `make test`; `make test-fast` leaves it out

ITERATIONS, EVERY, EPOCHS = 120, 2, 2
KILL_AFTER = 4 * EVERY  # Tune saves its experiment state every `checkpoint.num_to_keep` (≤ 2) checkpoints
SPACE = """
name: {name}
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1}}
failure: {{max_failures: {max_failures}}}
generator:
  config: {{dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: {iterations},
           batch_size: 4, report_every: {every}, grid_every: 0, threads: 1, fid_images: 16, fid_draws: 2{extra}}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, n_max: 60, ratio: 5, val_per_class: 5,
         test_per_class: 5, nuisance: {{background: 150}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 0, milestones: [30], gamma: 0.1}}
  train: {{epochs: {epochs}, batch_size: 16, threads: 1}}
  eval: {{inv_interval: 0, extra_invariance: false, inv_images_per_class: 4, inv_transforms: 2}}
  git: {{prob: 0.3}}
space:
  train.seed: {{grid: [0, 1]}}
"""
# w_recon_x overflows float32: the generator's total loss is inf at its first iteration, NaN after.
NAN = {"iterations": 6, "every": 1, "max_failures": -1, "extra": ", w_recon_x: 1.0e39"}


def _command(tmp_path, name, iterations=ITERATIONS, every=EVERY, max_failures=2, extra=""):
    space = tmp_path / f"{name}.yaml"
    space.write_text(textwrap.dedent(SPACE.format(name=name, iterations=iterations, every=every, epochs=EPOCHS,
                                                  max_failures=max_failures, extra=extra)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return [sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
            "--storage", str(tmp_path / "rr")], uri


def _runs(client, name, stage=None):
    """(parent runs, trial runs of `stage`, or of both stages)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("gitune.role") == "sweep"],
            [r for r in runs if r.data.tags.get("gitune.role") == "trial"
             and (stage is None or r.data.tags.get("stage") == stage)])


def _cached(tmp_path) -> list[Path]:
    return sorted((tmp_path / "rr" / "generators").glob("*/generator.pt"))


def _checkpoints(tmp_path, name) -> list[Path]:
    """The generator trials' checkpoints, in <storage>/<name>/<run folder>/generator/<trial>/checkpoint_*."""
    return sorted((tmp_path / "rr" / name).glob("*/generator/*/checkpoint_*/state.pt"))


def _kill_session(proc) -> tuple[set[int], list[int]]:
    """kill -9 the sweep's process group (driver + Ray); (the driver's descendants, the processes that outlived
    the kill: none expected)."""
    tree: set[int] = set()
    try:
        tree = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
        return tree, [p for p in tree if _alive(p)] + sorted(_session(proc.pid) - tree)
    finally:
        for p in tree | _session(proc.pid):  # never leave this sweep's processes behind, even on a failure
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _iteration(state_file: Path) -> int:
    import torch

    try:
        return int(torch.load(state_file, map_location="cpu", weights_only=True)["iteration"])
    except Exception:  # noqa: BLE001 - a checkpoint still being written when the sweep was killed
        return 0


def _logged_iteration(client, name) -> int:
    """The last iteration the generator trial logged to MLflow (0: none yet)."""
    try:
        _, gens = _runs(client, name, "generator")
    except Exception:  # noqa: BLE001 - the store may still be being created
        return 0
    return int(max((g.data.metrics.get("iteration", 0) for g in gens), default=0))


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.timeout(500)
def test_kill_9_during_the_generator_stage_then_resume_continues_the_generator(tmp_path, sweep_env):
    name = "gen-kill"
    args, uri = _command(tmp_path, name)
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=sweep_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        client = MlflowClient(uri)
        deadline = time.time() + 240
        # Kill once the trial wrote checkpoints and logged iteration KILL_AFTER: Tune's state holds a checkpoint.
        while not (_checkpoints(tmp_path, name) and _logged_iteration(client, name) >= KILL_AFTER):
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
    finally:
        tree, survivors = _kill_session(proc)
    assert tree, "the driver started no Ray processes"
    assert not survivors, "Ray processes outlived the killed driver"
    on_disk = max(_iteration(c) for c in _checkpoints(tmp_path, name))  # the newest checkpoint written
    first = log.read_text()
    assert "pretraining it first" in first and "gitune: generator: trained" not in first, first[-4000:]
    assert not _cached(tmp_path), "a half-trained generator was cached"
    _, (gen,) = _runs(client, name, "generator")
    assert gen.info.status == "RUNNING"  # nobody could close it: kill -9
    at_kill = int(gen.data.metrics["iteration"])
    assert KILL_AFTER <= at_kill < ITERATIONS, at_kill
    print(f"\nkilled at iteration {at_kill} (newest checkpoint written: iteration {on_disk})")
    assert not _runs(client, name, "classifier")[1]

    t0 = time.time()
    out = subprocess.run(args + ["--resume"], cwd=tmp_path, env=sweep_env, capture_output=True, text=True,
                         timeout=400)
    resume_s = time.time() - t0
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "gitune: generator: trained; stored as" in text, text[-4000:]
    assert "Restarting experiment" not in text  # Tune did not give up on the saved state and start over
    (run_dir,) = (tmp_path / "rr" / name).iterdir()
    assert f"results and checkpoints in {run_dir}" in text  # the interrupted run, found again
    (cached,) = _cached(tmp_path)  # stored once, from the finished trial
    assert sorted(p.name for p in cached.parent.iterdir()) == ["generator.pt", "info.json"]  # no temporary left
    assert text.count("gitune: generator: trained; stored as") == 1

    parents, (gen,) = _runs(client, name, "generator")  # the same run, continued: no second generator run
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags.get("gitune.resumed") == "true"
    assert parents[0].data.tags["gitune.generator"] == "trained"
    assert parents[0].data.tags["gitune.generator_run_id"] == gen.info.run_id
    assert json.loads((cached.parent / "info.json").read_text())["mlflow_run_id"] == gen.info.run_id
    assert gen.info.status == "FINISHED" and gen.data.metrics["iteration"] == ITERATIONS
    resumed = client.get_metric_history(gen.info.run_id, "trial/resumed_at_iteration")
    assert len(resumed) == 1, "the generator trial restarted from scratch, not from its checkpoint"
    start = int(resumed[0].value)
    assert EVERY <= start <= on_disk and start % EVERY == 0, (start, at_kill, on_disk)
    print(f"resumed from iteration {start}")
    import torch

    assert json.loads(torch.load(cached, map_location="cpu", weights_only=False)["meta"])["iterations"] == ITERATIONS

    _, classifiers = _runs(client, name, "classifier")
    assert len(classifiers) == 2 and len({c.data.tags["gitune.trial_id"] for c in classifiers}) == 2
    assert all(c.info.status == "FINISHED" and c.data.metrics["epoch"] == EPOCHS for c in classifiers)
    assert all(c.data.params["generator/source"] == str(cached) for c in classifiers)
    exp = client.get_experiment_by_name(name)
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    print(f"resumed run {resume_s:.1f} s")
    # Every report logged once, none twice: the trial resumed from the newest checkpoint it wrote, not only from
    # an older one that Tune's experiment state (saved every `num_to_keep` checkpoints or 10 s) recorded.
    expected = list(range(EVERY, ITERATIONS + 1, EVERY))
    for key in ("loss/recon_x", "iteration", "fid/nuisance_ed"):
        steps = _steps(client, gen.info.run_id, key)
        twice = sorted({s for s in steps if steps.count(s) > 1})
        assert steps == expected, (f"{key}: steps logged twice: {twice}; killed at iteration {at_kill} with a "
                                   f"checkpoint of iteration {on_disk} written, resumed from {start}")


def _check_failed_in_one_line(out, client, name, tmp_path, reason):
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-4000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("gitune: generator stage:")]
    assert len(lines) == 1 and lines[0].startswith("gitune: generator stage: every trial diverged (1; "), text[-4000:]
    assert reason in lines[0]
    assert "Traceback" not in text, text[-4000:]
    assert not _cached(tmp_path), "a diverged generator was cached"
    parents, gens = _runs(client, name, "generator")
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert len(gens) == 1 and gens[0].info.status == "FAILED"
    assert gens[0].data.tags["gitune.error"].startswith(reason) and gens[0].data.tags["gitune.diverged"] == "true"
    assert not _runs(client, name, "classifier")[1]
    return gens[0]


@pytest.mark.timeout(400)
def test_every_generator_trial_diverged_fails_in_one_line_and_resume_does_not_retry(tmp_path, sweep_env):
    name = "gen-nan"
    args, uri = _command(tmp_path, name, **NAN)
    reason = "loss/gen_total became inf at iteration 1"
    client = MlflowClient(uri)
    t0 = time.time()
    out = subprocess.run(args, cwd=tmp_path, env=sweep_env, capture_output=True, text=True, timeout=300)
    first_s = time.time() - t0
    gen = _check_failed_in_one_line(out, client, name, tmp_path, reason)
    assert _steps(client, gen.info.run_id, "loss/recon_x") == []  # it ended at its first report, not retried
    assert "trial/resumed_at_iteration" not in gen.data.metrics
    assert not _checkpoints(tmp_path, name)

    t0 = time.time()
    again = subprocess.run(args + ["--resume"], cwd=tmp_path, env=sweep_env, capture_output=True, text=True,
                           timeout=300)
    resume_s = time.time() - t0
    text = again.stdout + again.stderr
    (run_dir,) = (tmp_path / "rr" / name).iterdir()
    assert f"results and checkpoints in {run_dir}" in text, text[-4000:]  # the failed run, found again
    again_gen = _check_failed_in_one_line(again, client, name, tmp_path, reason)
    assert again_gen.info.run_id == gen.info.run_id and again_gen.info.end_time == gen.info.end_time  # untouched
    assert "trial/resumed_at_iteration" not in again_gen.data.metrics
    assert not _checkpoints(tmp_path, name)
    print(f"\nall diverged: first run {first_s:.1f} s, resume {resume_s:.1f} s")
