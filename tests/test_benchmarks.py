"""The benchmarks time what trials run: the recipe's trial built by build_trial with its own compute, steps
through train_one_epoch, and no process-wide switch (cuDNN autotuning) that trials do not set themselves."""

import argparse
import sys
from pathlib import Path

import torch

from gitune.data.profiles import class_counts
from gitune.spaces import load_spec
from gitune.training.compute import resolve_compute

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import common  # noqa: E402

CPU = torch.device("cpu")


def test_benchmark_trial_is_the_recipe_trial_with_its_compute(tmp_path):
    npz = common.write_lt_npz(tmp_path, n_max=60)
    t, spec = common.trial_for(npz, CPU, 1, ["model.arch=small_cnn"])
    recipe = load_spec(common.RECIPE)
    assert t.cfg["git"] == {**recipe.config["git"], "prob": 0.5}
    for key in ("epochs", "batch_size", "rule", "loss", "deferred_epoch"):
        assert t.cfg["train"][key] == recipe.config["train"][key], key
    assert t.cfg["optim"] == recipe.config["optim"] and t.cfg["eval"] == recipe.config["eval"]
    assert t.data.class_counts == class_counts("exp", 10, 60, 100.0)
    assert t.compute == resolve_compute(t.cfg["train"], CPU)
    assert t.gen_model is not None and len(t.mixers) == 1  # GIT with a reference-size generator
    assert sum(p.numel() for p in t.gen_model.parameters()) > 5_000_000

    full = t.loader
    out = common.Steps(t).run(t.cfg["git"]["start_epoch"], 1)  # one step of the GIT phase
    assert t.loader is full
    assert out["git/candidates"] == 64 and 0 < out["git/generated"] <= 64
    assert out["_seconds"] > 0 and torch.isfinite(torch.tensor(out["train/loss"]))
    assert common.warm_generator_shapes(t) == 0  # nothing to autotune on a CPU


def test_benchmark_setup_leaves_cudnn_autotuning_to_the_trial():
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        args = argparse.Namespace(device="cpu", threads=None, seed=0)
        common.setup(args)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
