"""A real `mlflow server` that goes away in the middle of a sweep (killed), then comes back (started again on the
same port and database): the trials keep training while it is away, and when it is back every metric point is
there exactly once (no step missing, none twice), one run per trial, every run closed. When it does not come
back in time, the sweep trains to the end, says so in one line with the --resume command, and that command
sends everything once the server is back."""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)
from test_tracking_server import free_port

pytestmark = pytest.mark.slow  # in `make test`; `make test-fast` leaves it out

EPOCHS = 30
SPACE = f"""
name: outage
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1}}
failure: {{max_failures: 0}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, n_max: 200, ratio: 10, val_per_class: 8,
         test_per_class: 8, nuisance: {{rotation: 90}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [40], gamma: 0.1}}
  train: {{epochs: {EPOCHS}, batch_size: 32, threads: 1}}
  eval: {{inv_interval: 10, inv_images_per_class: 4, inv_transforms: 2}}
space:
  train.seed: {{grid: [0, 1]}}
"""


class Server:
    """`mlflow server` on one port and database, that a test can kill and start again."""

    def __init__(self, tmp_path: Path):
        self.tmp, self.port, self.proc = tmp_path, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.tmp / "server.log", "a")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.tmp}/server.db",
             "--artifacts-destination", str(self.tmp / "server-artifacts")],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, start_new_session=True)
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, (self.tmp / "server.log").read_text()[-3000:]
            time.sleep(0.5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its workers: their own process group
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    s.start()
    yield s
    s.kill()


def _start_sweep(tmp_path, uri, env, wait_s: str, resume=False):
    space = tmp_path / "outage.yaml"
    space.write_text(textwrap.dedent(SPACE))
    cmd = [sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
           "--storage", str(tmp_path / "rr")] + (["--resume"] if resume else [])
    log = tmp_path / ("resume.log" if resume else "sweep.log")
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=tmp_path,
                            env={**env, "GITUNE_TRACKING_WAIT_S": wait_s}, start_new_session=True)
    return proc, log


def _epochs_in_storage(tmp_path) -> int:
    """Epochs the trials reported to Tune so far (their result.json lines in the storage), MLflow or not."""
    total = 0
    for path in glob.glob(str(tmp_path / "rr" / "outage" / "*" / "*" / "result.json")):
        total += sum(1 for line in open(path) if line.strip())
    return total


def _wait(pred, proc, log, timeout=240, what=""):
    deadline = time.time() + timeout
    while not pred():
        assert proc.poll() is None, f"sweep ended before {what}: " + Path(log).read_text()[-4000:]
        assert time.time() < deadline, f"timed out waiting for {what}: " + Path(log).read_text()[-4000:]
        time.sleep(0.3)


def _points_logged(uri) -> int:
    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id], "tags.`gitune.role` = 'trial'")
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return sum(len(client.get_metric_history(r.info.run_id, "val/bal_acc")) for r in runs)


def _check_complete(uri):
    """One run per trial, all closed, every epoch's points there once, the per-class files there."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("outage")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("gitune.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2 and len({c.data.tags["gitune.trial_id"] for c in children}) == 2
    for c in children:
        rid = c.info.run_id
        assert c.info.status == "FINISHED", c.data.tags
        for key in ("val/bal_acc", "train/loss", "epoch", "val/class_acc/c003"):
            steps = [m.step for m in client.get_metric_history(rid, key)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)  # none missing, none twice
        assert [m.step for m in client.get_metric_history(rid, "inv/ekld_mean")] == [10, 20, 30]
        arts = {a.path for a in client.list_artifacts(rid)} | {a.path for a in client.list_artifacts(rid, "plots")}
        assert {"per_class.csv", "class_counts.csv", "plots/ekld_vs_class_size.png"} <= arts
        assert c.data.params["train.epochs"] == str(EPOCHS)
    return children


@pytest.mark.timeout(600)
def test_server_away_mid_sweep_then_back_loses_and_doubles_nothing(tmp_path, server, sweep_env):
    proc, log = _start_sweep(tmp_path, server.uri, sweep_env, wait_s="300")
    try:
        _wait(lambda: _points_logged(server.uri) >= 2, proc, log, what="the first points")
        server.kill()
        away = _epochs_in_storage(tmp_path)
        # The trials go on training while the server is away.
        _wait(lambda: _epochs_in_storage(tmp_path) >= away + 6, proc, log, what="epochs while the server is away")
        trained_while_away = _epochs_in_storage(tmp_path) - away
        server.start()
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc == 0, out[-4000:]
    assert "does not answer" in out and "answers again" in out
    _check_complete(server.uri)
    print(f"\nepochs trained while the server was away: {trained_while_away}")


@pytest.mark.timeout(600)
def test_server_that_never_returns_one_line_then_resume_sends_everything(tmp_path, server, sweep_env):
    proc, log = _start_sweep(tmp_path, server.uri, sweep_env, wait_s="3")
    try:
        _wait(lambda: _points_logged(server.uri) >= 2, proc, log, what="the first points")
        server.kill()
        rc = proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc == 1, out[-4000:]
    # The driver ends with its own lines, not an uncaught exception (Ray's worker logs may hold tracebacks of
    # their own, e.g. a log line of a refused connection).
    last = [ln for ln in out.splitlines() if ln.strip()][-1]
    assert last.startswith("gitune: once MLflow answers, continue with:"), out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("gitune: error: MLflow at")]
    assert len(errors) == 1 and "are not closed" in errors[0] and "--resume" in errors[0], out[-3000:]
    assert any("continue with:" in ln and "--resume" in ln for ln in out.splitlines())
    # Training finished although nothing more reached MLflow: both trials ran every epoch.
    assert _epochs_in_storage(tmp_path) == 2 * EPOCHS

    server.start()
    again, log2 = _start_sweep(tmp_path, server.uri, sweep_env, wait_s="60", resume=True)
    try:
        rc = again.wait(timeout=300)
    finally:
        if again.poll() is None:
            os.killpg(again.pid, signal.SIGKILL)
    assert rc == 0, log2.read_text()[-4000:]
    _check_complete(server.uri)
    assert _epochs_in_storage(tmp_path) == 2 * EPOCHS  # nothing was trained again
