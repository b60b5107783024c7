"""The ready-made cluster files parse, carry what `ray up` / KubeRay need, and launch a valid sweep command."""

import shlex
from pathlib import Path

import yaml

from gitune import sweep
from gitune.spaces import load_spec

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = "/home/ray/gitune"  # where both files put this repository on the nodes


def test_ray_up_cluster_file():
    cfg = yaml.safe_load((ROOT / "sweeps" / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in cfg, key
    assert cfg["provider"]["type"]
    assert cfg["head_node_type"] in cfg["available_node_types"]
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    assert workers and all(v["max_workers"] >= 1 for v in workers.values())
    assert any(o.startswith("--shm-size") for o in cfg["docker"]["run_options"])
    assert cfg["docker"]["image"].startswith("rayproject/ray:")
    assert cfg["file_mounts"] == {CHECKOUT: "."}
    assert any(c.startswith("pip install") and c.endswith(f"-e {CHECKOUT}") for c in cfg["setup_commands"])
    assert any("node_start.sh head" in c for c in cfg["head_start_ray_commands"])  # starts the MLflow server
    # Ray's own schema, after filling the provider defaults the way `ray up` does.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))


def test_kuberay_rayjob_file():
    job = next(yaml.safe_load_all((ROOT / "sweeps" / "rayjob.yaml").read_text()))
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "gitune.sweep"]
    args = sweep.parse_args(argv[3:])
    assert args.address == "auto" and args.storage.startswith("s3://")
    assert args.tracking_uri.startswith("http://")
    space = args.space.replace(CHECKOUT, str(ROOT))
    assert load_spec(space).name  # the space file the job names exists in this repository and is valid
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (worker_group,) = cluster["workerGroupSpecs"]
    worker = worker_group["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    for pod in (head, worker):
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert head["containers"][0]["image"] == worker["containers"][0]["image"]


# --- nothing let in: services bound to the private network, MLflow behind basic auth, secrets not in files ---

STUB = """#!/usr/bin/env bash
{{ printf '%s\\n' "$*"; env | grep -E '^(MLFLOW_|GITUNE_)' | sort; }} > "$STUB_LOG/{name}.$$"
"""
FAKE_BOTO3 = """
class _Client:
    def get_secret_value(self, SecretId):
        assert SecretId == "gitune/mlflow", SecretId
        return {"SecretString": '{"password": "pw-from-the-secret", "flask_secret_key": "flask-key-from-the-secret"}'}


def client(name):
    assert name == "secretsmanager"
    return _Client()
"""


def _run_node_start(tmp_path, *args):
    """sweeps/node_start.sh with `ray`, `mlflow` and `hostname` replaced by recorders and boto3 by a fake
    Secrets Manager: returns {command: [(argv line, env lines)]}."""
    import os
    import subprocess
    import sys
    import time

    bin_dir, log, home, fake = tmp_path / "bin", tmp_path / "log", tmp_path / "home", tmp_path / "fake"
    for d in (bin_dir, log, home, fake):
        d.mkdir()
    for name in ("ray", "mlflow"):
        (bin_dir / name).write_text(STUB.format(name=name))
    (bin_dir / "hostname").write_text("#!/usr/bin/env bash\necho 10.0.3.7 172.17.0.1\n")
    (bin_dir / "python").symlink_to(sys.executable)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (fake / "boto3.py").write_text(FAKE_BOTO3)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "STUB_LOG": str(log), "PYTHONPATH": str(fake),
           "GITUNE_ARTIFACTS": "s3://bucket/mlflow"}
    proc = subprocess.run(["bash", str(ROOT / "sweeps" / "node_start.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    deadline = time.time() + 10  # mlflow is started in the background
    while args[0] == "head" and not any(p.name.startswith("mlflow.") for p in log.iterdir()):
        assert time.time() < deadline
        time.sleep(0.1)
    time.sleep(0.2)
    calls: dict[str, list] = {}
    for p in sorted(log.iterdir(), key=os.path.getmtime):
        first, *envs = p.read_text().splitlines()
        calls.setdefault(p.name.split(".")[0], []).append((first, envs))
    return calls, home


def test_cluster_files_bind_no_public_interface():
    for name in ("cluster.yaml", "rayjob.yaml", "mlflow.yaml", "node_start.sh"):
        text = (ROOT / "sweeps" / name).read_text()
        assert "admin_password =" not in text and "password1234" not in text, name  # no credential in a file
    cluster = (ROOT / "sweeps" / "cluster.yaml").read_text()
    assert "0.0.0.0" not in cluster and "mlflow server" not in cluster  # node_start.sh starts it
    cfg = yaml.safe_load(cluster)
    assert cfg["head_start_ray_commands"] == [
        "GITUNE_ARTIFACTS=s3://BUCKET/gitune/mlflow bash /home/ray/gitune/sweeps/node_start.sh head"]
    assert cfg["worker_start_ray_commands"] == ["bash /home/ray/gitune/sweeps/node_start.sh worker $RAY_HEAD_IP"]
    docs = list(yaml.safe_load_all((ROOT / "sweeps" / "rayjob.yaml").read_text()))
    job, policy = docs
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/originated-from-cr-name": job["metadata"]["name"]}
    for pod in (head["template"]["spec"], job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]):
        assert {"secretRef": {"name": "gitune-mlflow"}} in pod["containers"][0]["envFrom"]
    deployment, service, mlflow_policy = yaml.safe_load_all((ROOT / "sweeps" / "mlflow.yaml").read_text())
    assert service["spec"]["type"] == "ClusterIP" and mlflow_policy["kind"] == "NetworkPolicy"
    assert "--app-name basic-auth" in deployment["spec"]["template"]["spec"]["containers"][0]["args"][0]


def test_node_start_head_binds_private_address_with_basic_auth(tmp_path):
    calls, home = _run_node_start(tmp_path, "head")
    ((mlflow_argv, mlflow_env),) = calls["mlflow"]
    argv = mlflow_argv.split()
    assert argv[argv.index("--host") + 1] == "10.0.3.7"  # the private address, not 0.0.0.0
    assert "--app-name basic-auth" in mlflow_argv and "pw-from-the-secret" not in mlflow_argv
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=pw-from-the-secret" in mlflow_env
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY=flask-key-from-the-secret" in mlflow_env
    ini = next(line for line in mlflow_env if line.startswith("MLFLOW_AUTH_CONFIG_PATH=")).split("=", 1)[1]
    assert (Path(ini).stat().st_mode & 0o077) == 0 and "pw-from-the-secret" not in Path(ini).read_text()
    assert "default_permission = NO_PERMISSIONS" in Path(ini).read_text()
    stop, start = calls["ray"]
    assert stop[0] == "stop" and start[0].startswith("start --head")
    assert "--dashboard-host=127.0.0.1" in start[0] and "--node-ip-address=10.0.3.7" in start[0]
    assert {"MLFLOW_TRACKING_URI=http://10.0.3.7:5000", "MLFLOW_TRACKING_USERNAME=gitune",
            "MLFLOW_TRACKING_PASSWORD=pw-from-the-secret"} <= set(start[1])


def test_node_start_worker_joins_with_the_credentials(tmp_path):
    calls, _ = _run_node_start(tmp_path, "worker", "10.0.3.7")
    assert "mlflow" not in calls
    stop, start = calls["ray"]
    assert start[0].startswith("start --address=10.0.3.7:6379")
    assert {"MLFLOW_TRACKING_URI=http://10.0.3.7:5000", "MLFLOW_TRACKING_PASSWORD=pw-from-the-secret"} <= set(start[1])
