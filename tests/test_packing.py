"""Packing trials on a GPU: what bounds the number per GPU, the bundled files, and the memory probe's path."""

import os
from pathlib import Path

import pytest
import yaml

from gitune.errors import UserError
from gitune.packing import packing_line, trials_per_gpu
from gitune.spaces import load_spec

ROOT = Path(__file__).resolve().parents[1]
NODE_CPUS = 8  # the GPU nodes of sweeps/cluster.yaml (g5.2xlarge) and sweeps/rayjob.yaml (cpu: "8")

SPACE = """
name: packing
num_samples: 2
scheduler: {type: fifo}
config:
  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}
  model: {arch: small_cnn}
  train: {epochs: 3}
  optim: {warmup_epochs: 1, milestones: [2]}
"""


def test_trials_per_gpu_is_the_smaller_of_gpu_share_and_node_cpus():
    assert trials_per_gpu(0.25) == 4  # node unknown: the GPU share alone
    assert trials_per_gpu(0.25, cpu=4, node_cpus=8) == 2  # the case: CPUs bound it, not 1/gpu
    assert trials_per_gpu(0.25, cpu=2, node_cpus=8) == 4
    assert trials_per_gpu(0.125, cpu=1, node_cpus=16, node_gpus=2) == 8  # 16 CPUs shared by 2 GPUs
    assert trials_per_gpu(0.125, cpu=1, node_cpus=12, node_gpus=2) == 6
    assert trials_per_gpu(0.5, cpu=16, node_cpus=8) == 0  # a trial does not fit on the node at all


def test_packing_line_warns_when_the_cpus_bound_it():
    k, line = packing_line(0.25, 4, [(8.0, 1)])
    assert k == 2 and line.startswith("WARNING") and "resources.cpu ≤ 2" in line
    k, line = packing_line(0.25, 2, [(8.0, 1), (16.0, 1)])
    assert k == 4 and "WARNING" not in line
    k, line = packing_line(0.25, 4, [(16.0, 1), (8.0, 1)])  # the smallest GPU node decides
    assert k == 2
    k, line = packing_line(0.25, 4, [])
    assert k == 4 and "no GPU node" in line


def test_cluster_files_have_the_node_cpus_the_spaces_assume():
    cluster = yaml.safe_load((ROOT / "sweeps" / "cluster.yaml").read_text())
    assert cluster["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"] == "g5.2xlarge"  # 8 vCPUs
    job = next(yaml.safe_load_all((ROOT / "sweeps" / "rayjob.yaml").read_text()))
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert int(worker["resources"]["limits"]["cpu"]) == NODE_CPUS


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")) + sorted(
    p for p in (ROOT / "sweeps").glob("*.yaml") if p.name not in ("cluster.yaml", "rayjob.yaml", "mlflow.yaml")),
    ids=lambda p: p.name)
def test_bundled_gpu_spaces_pack_what_their_gpu_share_says(path):
    spec = load_spec(path)
    gpu, cpu = spec.resources["gpu"], spec.resources["cpu"]
    if 0 < gpu < 1:
        assert trials_per_gpu(gpu, cpu, NODE_CPUS) == trials_per_gpu(gpu), (gpu, cpu)
    if spec.generator is not None and spec.generator["resources"]["gpu"]:
        assert spec.generator["resources"]["cpu"] <= NODE_CPUS


@pytest.mark.parametrize("block", ["resources: {cpu: 1, gpu: 2}\n",
                                   "generator:\n  resources: {cpu: 1, gpu: 2}\n"])
def test_more_than_one_gpu_per_trial_is_refused(tmp_path, block):
    f = tmp_path / "space.yaml"
    f.write_text(SPACE + block)
    with pytest.raises(UserError, match=r"resources\.gpu.*one device.*got 2"):
        load_spec(f)
    f.write_text(SPACE + block.replace("gpu: 2", "gpu: 1"))
    assert load_spec(f)


def _tiny_trial():
    from gitune.config import merge_config
    from gitune.models.munit import MunitGenerator

    cfg = merge_config({"data": {"name": "glyphs", "num_classes": 3, "image_size": 16, "n_max": 20,
                                 "val_per_class": 4, "test_per_class": 4},
                        "model": {"arch": "small_cnn"}, "train": {"batch_size": 8, "threads": 1},
                        "git": {"prob": 0.5, "start_epoch": 50, "class_threshold": 15},
                        "eval": {"inv_images_per_class": 2, "inv_transforms": 3, "batch_size": 16}}, "test")
    arch = {"dim": 4, "style_dim": 2, "n_downsample": 1, "n_res": 1, "mlp_dim": 4, "mlp_layers": 2}
    payload = {"arch": arch, "in_channels": 1, "image_size": 16,
               "state_dict": MunitGenerator(1, **arch).state_dict()}
    return cfg, payload


def test_memory_probe_builds_the_trial_and_steps_in_a_ray_task(ray_session):
    """On CPU the probe's whole path runs (a Ray task with the trial's resources, build_trial, one GIT
    step with every candidate generated even where the trial starts GIT later or keeps few classes, one
    measurement) and reports 0 GPU bytes."""
    from gitune.config import DEFAULTS
    from gitune.packing import probe_in_ray

    cfg, payload = _tiny_trial()
    out = probe_in_ray(cfg, payload, {"cpu": 1, "gpu": 0})
    assert out["pid"] != os.getpid()  # a worker process, not the driver
    assert out["trained"] == 8 and out["generated"] == 4  # one batch of 8, round(0.5 · 8) generated
    assert out["peak_bytes"] == 0 and out["total_bytes"] == 0
    assert cfg["git"]["start_epoch"] == 50 and DEFAULTS["git"]["prob"] == 0.0  # inputs untouched
