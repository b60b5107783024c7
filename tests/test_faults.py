"""Fault tolerance on a real sweep (`python -m gitune.sweep` in a subprocess with its own local Ray):

- kill -9 one trial's worker process mid-trial: `failure.max_failures` retries it from its last checkpoint,
  in the same MLflow run, and the sweep finishes;
- kill -9 the driver and its whole process group (Ray included) mid-sweep, then `--resume`: every trial
  continues from its checkpoint, the generator stage is not trained again, one MLflow run per trial, none left
  RUNNING. Prints the time from the resume command to the first new epoch and the epochs lost.
"""

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

pytestmark = pytest.mark.slow  # in `make test`; `make test-fast` leaves it out

EPOCHS = 10
SPACE = """
name: {name}
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1}}
failure: {{max_failures: 2}}
{generator}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, n_max: 300, ratio: 10, val_per_class: 10,
         test_per_class: 10, nuisance: {{rotation: 90}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [30], gamma: 0.1}}
  train: {{epochs: {epochs}, batch_size: 32, threads: 1}}
  eval: {{inv_interval: 5, inv_images_per_class: 4, inv_transforms: 2}}
  {git}
space:
  train.seed: {{grid: [0, 1]}}
"""
GENERATOR = """generator:
  config: {dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 4,
           batch_size: 4, report_every: 2, grid_every: 0, threads: 1}"""


def _command(tmp_path, name, generator=False, storage=None):
    space = tmp_path / f"{name}.yaml"
    space.write_text(textwrap.dedent(SPACE.format(name=name, epochs=EPOCHS, generator=GENERATOR if generator else "",
                                                  git="git: {prob: 0.3}" if generator else "")))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    return [sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
            "--storage", storage or str(tmp_path / "rr")], uri


def _runs(client, name):
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("gitune.role") == "sweep"],
            [r for r in runs if r.data.tags.get("gitune.role") == "trial" and r.data.tags.get("stage") == "classifier"])


def _wait_for(client, name, proc, log, pred, timeout=240):
    """Poll MLflow until pred(children) holds; returns the children."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, Path(log).read_text()[-4000:]
        try:
            _, children = _runs(client, name)
        except Exception:  # noqa: BLE001 - the store may still be being created
            children = []
        if children and pred(children):
            return children
        time.sleep(0.3)
    raise AssertionError("timed out: " + Path(log).read_text()[-4000:])


def _descendants(root: int) -> set[int]:
    """Every live process below `root` (from /proc), to check that none outlives a killed driver."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def _session(sid: int) -> set[int]:
    """Live processes of session `sid` (the sweep was started with start_new_session: sid = its pid)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _check_one_run_per_trial_none_running(client, name, trials=2, once=True):
    """One MLflow run per trial, none RUNNING, the parent FINISHED; every epoch logged, and (`once`) only once.
    A trial that falls back to an older checkpoint (the newest corrupt) trains, and logs, epochs again."""
    parents, children = _runs(client, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials, [c.data.tags.get("gitune.trial_id") for c in children]
    assert len({c.data.tags["gitune.trial_id"] for c in children}) == trials
    exp = client.get_experiment_by_name(name)
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    for c in children:
        assert c.info.status == "FINISHED" and c.data.metrics["epoch"] == EPOCHS
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "epoch")]
        assert sorted(steps if once else set(steps)) == list(range(1, EPOCHS + 1)), steps  # none lost (or twice)
    return parents[0], children


@pytest.mark.timeout(400)
def test_kill_9_trial_worker_retries_from_checkpoint(tmp_path, sweep_env):
    args, uri = _command(tmp_path, "worker-kill")
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=sweep_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        client = MlflowClient(uri)
        def mid_trial(c):
            return c.info.status == "RUNNING" and 2 <= c.data.metrics.get("epoch", 0) <= EPOCHS - 3

        children = _wait_for(client, "worker-kill", proc, log, lambda cs: any(mid_trial(c) for c in cs))
        victim = next(c for c in children if mid_trial(c))
        pid = int(victim.data.tags["gitune.pid"])
        assert pid in _descendants(proc.pid)  # really one of this sweep's Ray workers
        os.kill(pid, signal.SIGKILL)
        killed_at = int(client.get_run(victim.info.run_id).data.metrics["epoch"])
        rc = proc.wait(timeout=300)
        text = log.read_text()
        assert rc == 0, text[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert killed_at < EPOCHS, "the trial ended before the kill"
    _, children = _check_one_run_per_trial_none_running(client, "worker-kill")
    run = next(c for c in children if c.info.run_id == victim.info.run_id)
    assert int(run.data.tags["gitune.pid"]) != pid  # the retry ran in a new worker process
    resumed = client.get_metric_history(run.info.run_id, "trial/resumed_at_epoch")
    assert len(resumed) == 1 and 1 <= resumed[0].value <= killed_at, "retried from scratch, not its checkpoint"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch")].count(1) == 1
    other = next(c for c in children if c.info.run_id != victim.info.run_id)
    assert not client.get_metric_history(other.info.run_id, "trial/resumed_at_epoch")  # untouched
    print(f"worker kill at epoch {killed_at}; retried from checkpoint epoch {int(resumed[0].value)}")


@pytest.mark.timeout(500)
def test_kill_9_driver_and_process_group_then_resume(tmp_path, sweep_env):
    # Storage given as a URI (file://, read through pyarrow like s3:// or gs://): --resume finds the run there.
    args, uri = _command(tmp_path, "driver-kill", generator=True, storage=f"file://{tmp_path}/rr")
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=sweep_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    client = MlflowClient(uri)
    tree: set[int] = set()
    try:
        # Both classifier trials are past epoch 2 (so the generator stage is done): kill everything at once.
        _wait_for(client, "driver-kill", proc, log,
                  lambda cs: len(cs) == 2 and all(c.data.metrics.get("epoch", 0) >= 2 for c in cs))
        tree = _descendants(proc.pid)
        assert tree, "the driver started no Ray processes"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
        survivors = [p for p in tree if _alive(p)] + sorted(_session(proc.pid) - tree)
    finally:
        for p in tree | _session(proc.pid):  # never leave this sweep's processes behind, even on a failure
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not survivors, "Ray processes outlived the killed driver"
    first = log.read_text()
    assert "gitune: generator: trained" in first
    _, children = _runs(client, "driver-kill")
    at_kill = {c.data.tags["gitune.trial_id"]: int(c.data.metrics["epoch"]) for c in children}
    assert all(2 <= e < EPOCHS for e in at_kill.values()), at_kill
    assert {c.info.status for c in children} == {"RUNNING"}  # nobody could close them: kill -9

    t0 = time.time()
    out = subprocess.run(args + ["--resume"], cwd=tmp_path, env=sweep_env, capture_output=True, text=True, timeout=400)
    resume_s = time.time() - t0
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    # The generator stage is not trained again: its cached weights are reused.
    assert "gitune: generator: reusing" in text and "pretraining it first" not in text
    (run_dir,) = (tmp_path / "rr" / "driver-kill").iterdir()
    assert f"results and checkpoints in file://{run_dir}" in text  # the interrupted run, found again
    exp = client.get_experiment_by_name("driver-kill")
    gen_runs = client.search_runs([exp.experiment_id], "tags.stage = 'generator'")
    assert len(gen_runs) == 1 and gen_runs[0].info.status == "FINISHED"
    parent, children = _check_one_run_per_trial_none_running(client, "driver-kill")
    assert parent.data.tags.get("gitune.resumed") == "true"
    first_new, lost = [], {}
    for c in children:
        rid, tid = c.info.run_id, c.data.tags["gitune.trial_id"]
        resumed = client.get_metric_history(rid, "trial/resumed_at_epoch")
        assert len(resumed) == 1, "every trial had a checkpoint: none may restart from scratch"
        start = int(resumed[0].value)
        # A trial sends an epoch's points once Tune holds its checkpoint: MLflow can be one epoch behind the
        # newest checkpoint at the kill, and the restored trial sends that epoch from it.
        assert 1 <= start <= at_kill[tid] + 1
        lost[tid] = max(0, at_kill[tid] - start)
        assert [m.step for m in client.get_metric_history(rid, "epoch")].count(1) == 1
        new = [m.timestamp for m in client.get_metric_history(rid, "epoch") if m.step == start + 1]
        first_new.append(max(new) / 1000.0)
    to_first_epoch = min(first_new) - t0
    assert 0 < to_first_epoch < resume_s
    print(f"\ndriver kill: epochs at kill {sorted(at_kill.values())}, epochs lost per trial {sorted(lost.values())}; "
          f"resume to first new epoch {to_first_epoch:.1f} s, whole resumed run {resume_s:.1f} s")
