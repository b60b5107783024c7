"""A real `mlflow server` on 127.0.0.1: every trial's metrics and artifacts reach it from the Ray worker
processes over HTTP, and so does the reason of a trial whose loss became NaN (it ends FAILED, the sweep goes
on); a server that does not answer fails the sweep at once, before Ray starts, naming the URI."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from gitune import sweep

pytestmark = pytest.mark.slow  # in `make test`; `make test-fast` leaves it out

SPACE = """
name: served
metric: val/bal_acc
num_samples: 1
scheduler: {type: fifo}
search: {type: random, seed: 0}
resources: {cpu: 1}
config:
  data: {name: glyphs, num_classes: 4, image_size: 16, profile: exp, n_max: 60, ratio: 6, val_per_class: 8,
         test_per_class: 8, nuisance: {rotation: 180}}
  model: {arch: small_cnn}
  optim: {lr: 0.05, warmup_epochs: 0, milestones: [2], gamma: 0.1}
  train: {epochs: 2, batch_size: 24, threads: 1, ldam_s: 1.0e39}
  eval: {inv_interval: 1, inv_images_per_class: 4, inv_transforms: 2, batch_size: 64}
space:
  train.loss: {grid: [ce, focal, ldam]}   # LDAM's logit scale 1e39 overflows: its loss is NaN at epoch 1
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    art = tmp_path / "server-artifacts"
    log = open(tmp_path / "server.log", "w")
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                             "--artifacts-destination", str(art)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield uri, art
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers: their own process group
        proc.wait()
        log.close()


@pytest.mark.timeout(400)
def test_trials_log_metrics_and_artifacts_to_a_tracking_server(tmp_path, mlflow_server, ray_session):
    uri, art = mlflow_server
    space = tmp_path / "served.yaml"
    space.write_text(textwrap.dedent(SPACE))
    rc = sweep.main(["--space", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "rr")])
    assert rc == 0
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("served")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("gitune.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parents[0].info.run_id, "spec")} >= {"spec/resolved.yaml"}
    assert len(children) == 3  # one run per trial, also for the diverging one that Tune retried
    # The diverging trial ends FAILED with its reason, logged from the worker; the sweep goes on.
    (failed,) = [c for c in children if c.data.params["train.loss"] == "ldam"]
    assert failed.info.status == "FAILED"
    assert "train/loss became nan at epoch 1" in failed.data.tags["gitune.error"]
    assert parents[0].data.metrics["errored"] == 1 and parents[0].data.metrics["trials"] == 3
    children = [c for c in children if c is not failed]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.params["train.loss"] for c in children} == {"ce", "focal"}
    for c in children:
        rid = c.info.run_id
        assert c.info.artifact_uri.startswith("mlflow-artifacts:"), c.info.artifact_uri  # served, not local
        assert [m.step for m in client.get_metric_history(rid, "val/bal_acc")] == [1, 2]
        assert [m.step for m in client.get_metric_history(rid, "inv/ekld/c003")] == [1, 2]
        assert "test/bal_acc" in c.data.metrics
        arts = {a.path for a in client.list_artifacts(rid)} | {a.path for a in client.list_artifacts(rid, "plots")}
        assert {"per_class.csv", "class_counts.csv", "plots/ekld_vs_class_size.png",
                "plots/class_acc_vs_class_size.png"} <= arts
        csv = Path(client.download_artifacts(rid, "per_class.csv", str(tmp_path)))
        assert csv.read_text().splitlines()[0].startswith("class,name,train_count")
        # The bytes sit in the server's artifact store.
        assert list(art.rglob(f"{rid}/artifacts/plots/ekld_vs_class_size.png")), rid


def test_unreachable_server_fails_before_ray_starts(tmp_path):
    space = tmp_path / "served.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
                          "--storage", str(tmp_path / "rr")], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    elapsed = time.time() - t0
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gitune: error: --tracking-uri {uri}: MLflow server not "
                                                   "reachable"), out.stderr
    assert "Ray" not in out.stdout + out.stderr  # Ray never started
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served.yaml"]  # no store, no results
    assert elapsed < 60
