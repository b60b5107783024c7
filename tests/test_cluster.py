"""Multi-node: a simulated 2-node Ray cluster (`ray.cluster_utils.Cluster`, head + one worker node, one CPU
each). The sweep joins it with `--address`; trials land on both nodes; every result reaches the storage and
MLflow; the generator payload reaches trials on both nodes through the object store; a local `--storage` on
the cluster is refused unless declared shared.

The cluster lives in a helper process and the sweeps run as `python -m gitune.sweep` subprocesses, so nothing
here touches the test session's own local Ray (conftest's `ray_session`)."""

import json
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient
from sweep_env import local_env, private_ray_tmpdir

pytestmark = pytest.mark.slow  # in `make test`; `make test-fast` leaves it out

# Runs in the helper process: start the cluster, print its address and node ids, keep it up until stdin closes.
CLUSTER = """
import json, sys
from ray.cluster_utils import Cluster

# Both nodes on the loopback address: the simulated cluster is reachable from this machine only.
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                        "node_ip_address": "127.0.0.1"})
cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
ids = [cluster.head_node.node_id] + [n.node_id for n in cluster.worker_nodes]
print(json.dumps({"address": cluster.address, "node_ids": ids}), flush=True)
try:
    sys.stdin.read()
finally:
    cluster.shutdown()
"""

SPACE = """
name: {name}
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1}}
generator:
  config: {{dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 4,
           batch_size: 4, report_every: 2, grid_every: 0, threads: 1}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, profile: exp, n_max: 60, ratio: 6,
         val_per_class: 8, test_per_class: 8, nuisance: {{rotation: 180}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 0, milestones: [2], gamma: 0.1}}
  train: {{epochs: 2, batch_size: 24, threads: 1}}
  git: {{prob: 0.5}}
  eval: {{inv_interval: 1, inv_images_per_class: 4, inv_transforms: 2, batch_size: 64}}
space:
  train.seed: {{grid: [0, 1, 2, 3]}}
"""


@pytest.fixture(scope="module")
def cluster():
    # A private Ray temp dir (short: it holds Unix sockets): Cluster writes its address to
    # <temp>/ray/ray_current_cluster, where any other process's plain ray.init() on this machine would find
    # and join it. Kept out of the shared /tmp/ray.
    temp = private_ray_tmpdir()
    # Ray on Linux would swap 127.0.0.1 for the machine's routable address, in the helper and in the sweeps
    # that join it, unless its cluster support is off (as gitune.sweep does for a local Ray of its own).
    env = local_env(temp, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, "the simulated cluster did not start"
        yield {**json.loads(line), "env": env}
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _sweep(tmp_path, cluster, name, *extra):
    space = tmp_path / f"{name}.yaml"
    space.write_text(textwrap.dedent(SPACE.format(name=name)))
    uri = f"sqlite:///{tmp_path}/{name}.db"
    args = [sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
            "--storage", str(tmp_path / f"rr-{name}"), "--address", cluster["address"], *extra]
    env = {**cluster["env"], "RAY_AIR_NEW_OUTPUT": "0", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    return out, uri


@pytest.mark.timeout(500)
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, cluster):
    assert len(cluster["node_ids"]) == 2

    # A node-local storage path on a 2-node cluster: refused, one line, before any MLflow run or result.
    t0 = time.time()
    out, uri = _sweep(tmp_path, cluster, "refused")
    assert out.returncode == 2, (out.stdout + out.stderr)[-3000:]
    err = [ln for ln in out.stderr.splitlines() if ln.startswith("gitune:")]
    assert err == [f"gitune: error: --storage {tmp_path}/rr-refused: a local path on a 2-node Ray cluster; use "
                   "s3://…, gs://… or a shared mount and pass --shared-storage"], out.stderr[-3000:]
    assert not (tmp_path / "refused.db").exists() and not (tmp_path / "rr-refused").exists()
    print(f"refusal took {time.time() - t0:.1f} s")

    # Declared shared (the simulated nodes do share this machine's disk): the sweep runs on both nodes.
    t0 = time.time()
    out, uri = _sweep(tmp_path, cluster, "spread", "--shared-storage")
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    print(f"2-node sweep took {time.time() - t0:.1f} s")
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("spread")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("gitune.role") == "trial" and r.data.tags.get("stage") == "classifier"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    nodes = {c.data.tags["gitune.node_id"] for c in children}
    assert nodes == set(cluster["node_ids"]), "trials did not land on both nodes"
    for c in children:
        assert c.data.metrics["epoch"] == 2 and "test/bal_acc" in c.data.metrics
        # The generator payload reached the trial (object store), on whichever node it ran: GIT mixed
        # generated images in, and the generator eKLD was measured.
        assert c.data.params["generator/key"] and c.data.params["git.prob"] == "0.5"
        assert "inv/ekld_gen_mean" in c.data.metrics
        arts = {a.path for a in client.list_artifacts(c.info.run_id)}
        assert "per_class.csv" in arts
    # Every trial's results and checkpoints reached the storage.
    (run_dir,) = [d for d in (tmp_path / "rr-spread" / "spread").iterdir() if d.is_dir()]
    trial_dirs = [d for d in run_dir.iterdir() if (d / "result.json").is_file()]
    assert len(trial_dirs) == 4
    for d in trial_dirs:
        results = [json.loads(ln) for ln in (d / "result.json").read_text().splitlines() if ln.strip()]
        assert [r["epoch"] for r in results] == [1, 2]
        assert sorted(p.name for p in d.glob("checkpoint_*")), d
    assert (run_dir / "generator").is_dir() and list((tmp_path / "rr-spread" / "generators").glob("*/generator.pt"))
