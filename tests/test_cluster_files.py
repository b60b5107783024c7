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
    assert any("mlflow server" in c for c in cfg["head_start_ray_commands"])
    # Ray's own schema, after filling the provider defaults the way `ray up` does.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(cfg))


def test_kuberay_rayjob_file():
    job = yaml.safe_load((ROOT / "sweeps" / "rayjob.yaml").read_text())
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
