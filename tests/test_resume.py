"""Interrupt a real sweep mid-trial (Ctrl-C on the CLI), resume it, and check that the trial continued from
its checkpoint at the right epoch, in the same MLflow run."""

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)

SPEC = """
name: resumable
num_samples: 1
scheduler: {type: fifo}
resources: {cpu: 1}
config:
  data: {name: glyphs, num_classes: 4, image_size: 16, n_max: 300, ratio: 10, val_per_class: 10,
         test_per_class: 10}
  model: {arch: small_cnn}
  optim: {lr: 0.05, warmup_epochs: 1, milestones: [30], gamma: 0.1}
  train: {epochs: 40, batch_size: 32, threads: 1}
  eval: {inv_interval: 10, inv_images_per_class: 4, inv_transforms: 2}
"""


def _child(client, exp_name):
    exp = client.get_experiment_by_name(exp_name)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("gitune.role") == "trial"]


@pytest.mark.timeout(500)
def test_interrupt_then_resume_continues_same_run_at_checkpoint_epoch(tmp_path, sweep_env):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPEC))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
            "--storage", str(tmp_path / "rr")]
    env = sweep_env
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = MlflowClient(uri)
    deadline = time.time() + 240
    epoch = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            runs = _child(client, "resumable")
        except Exception:  # the store may still be being created
            continue
        if runs:
            epoch = runs[0].data.metrics.get("epoch", 0)
            if epoch >= 3:
                break
    assert proc.poll() is None and epoch >= 3, open(tmp_path / "first.log").read()[-3000:]
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=180)
    first_log = open(tmp_path / "first.log").read()
    assert rc == 130, first_log[-3000:]
    assert "--resume" in first_log
    (run,) = _child(client, "resumable")
    assert run.info.status == "KILLED"
    stopped_epoch = int(run.data.metrics["epoch"])
    assert 3 <= stopped_epoch < 40

    out = subprocess.run(args + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    runs = _child(client, "resumable")
    assert len(runs) == 1, "a resumed trial must continue its own MLflow run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    resumed_at = client.get_metric_history(run.info.run_id, "trial/resumed_at_epoch")
    assert len(resumed_at) == 1
    resumed_epoch = int(resumed_at[0].value)
    # The checkpoint is written at the end of each reported epoch: at most the epoch in flight is lost. The trial
    # restores from the newest checkpoint in its folder, which can be one epoch past what MLflow showed at the
    # interrupt (the trial sends an epoch's points once Tune holds its checkpoint; the restored trial sends them).
    assert stopped_epoch - 1 <= resumed_epoch <= stopped_epoch + 1
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
    assert sorted(steps) == list(range(1, 41)), steps  # every epoch once: none lost, none twice
    assert steps.count(1) == 1, "the trial restarted from scratch"
    assert run.data.metrics["epoch"] == 40 and "test/bal_acc" in run.data.metrics
    parents = [r for r in client.search_runs([run.info.experiment_id]) if r.data.tags.get("gitune.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"

    # Same config and seed without the interruption: model, optimizer, LR schedule and RNG streams were
    # restored exactly, so every number after the resume point matches.
    ref = subprocess.run(args + ["--name", "reference"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=400)
    assert ref.returncode == 0, (ref.stdout + ref.stderr)[-3000:]
    (ref_run,) = _child(client, "reference")
    for key in ("train/loss", "val/bal_acc", "val/loss"):
        resumed = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        straight = {m.step: m.value for m in client.get_metric_history(ref_run.info.run_id, key)}
        assert [resumed[e] for e in range(resumed_epoch + 1, 41)] == [straight[e] for e in range(resumed_epoch + 1, 41)]
    assert run.data.metrics["test/bal_acc"] == ref_run.data.metrics["test/bal_acc"]
