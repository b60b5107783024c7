"""A storage that fills up mid-sweep (a real, small tmpfs filled to the last byte): the checkpoint that cannot be
written ends its trial with a reason naming the epoch, the storage path and the error, in the trial's MLflow
run and in the sweep's output; the points of that epoch are not logged (no checkpoint covers them, so a retry
would log them again)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)

pytestmark = pytest.mark.slow  # in `make test`; `make test-fast` leaves it out

EPOCHS = 40
SPACE = f"""
name: full
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
resources: {{cpu: 1}}
failure: {{max_failures: 0}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, n_max: 200, ratio: 10, val_per_class: 8,
         test_per_class: 8}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [50], gamma: 0.1}}
  train: {{epochs: {EPOCHS}, batch_size: 32, threads: 1}}
  eval: {{inv_interval: 0}}
"""


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs: a real file system that runs out of space (mounting needs root, which these tests run as)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr}"
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(folder: Path) -> None:
    """Write zeros until the file system says ENOSPC (unbuffered: the last write is the one refused)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.timeout(400)
def test_checkpoint_write_on_a_full_disk_ends_the_trial_with_its_reason(tmp_path, small_disk, sweep_env):
    space = tmp_path / "full.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen([sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
                             "--storage", str(small_disk)], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            cwd=tmp_path, env=sweep_env, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list(small_disk.glob("full/*/*/checkpoint_000001/state.pt")):
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.time() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        _fill(small_disk)
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    out = log.read_text()
    assert rc == 1, out[-4000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("full")
    runs = client.search_runs([exp.experiment_id])
    (child,) = [r for r in runs if r.data.tags.get("gitune.role") == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    reason = child.data.tags["gitune.error"]
    assert child.info.status == "FAILED" and parent.info.status == "FAILED"
    assert "could not store the checkpoint of epoch" in reason and str(small_disk) in reason, reason
    assert "No space left on device" in reason, reason
    failed_epoch = int(reason.split("checkpoint of epoch ")[1].split()[0])
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/bal_acc")]
    assert steps == list(range(1, failed_epoch)), (failed_epoch, steps)  # the epochs with a checkpoint, once
    # Tune logs the trial's error (and its failed syncs) itself; the sweep ends with one line of its own, not
    # with Tune's traceback from reading back the error file it could not write (EOFError).
    assert "EOFError" not in out and out.rstrip().splitlines()[-1].startswith("gitune: error:"), out[-4000:]
    (line,) = [ln for ln in out.splitlines() if ln.startswith("gitune: error:")]
    assert "the storage stopped taking writes (No space left on device)" in line and "--resume" in line, line
