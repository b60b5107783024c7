"""The invariance-vs-class-size sweep end to end on a transformed npz dataset generated here: instances ×
rules in one grid, per-class eKLD and the further invariance metrics in a real MLflow store."""

import csv
import io

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from gitune import sweep
from gitune.config import DEFAULTS
from gitune.data.augment import to_float
from gitune.data.dataset import build_dataset, target_counts
from gitune.data.synthetic import make_glyphs
from gitune.trainables.classifier import _invariance_subset


def write_base_npz(path, num_classes=8, per_class=130, test_per_class=10, size=16, seed=7):
    """An untransformed base dataset in the npz format (images N×H×W uint8, labels; a test split), from
    glyphs of another seed than the built-in ones. gitune makes the transformed long tail from it."""
    images, labels = make_glyphs(num_classes, [per_class] * num_classes, size, {}, seed, 1, stream=0)
    t_images, t_labels = make_glyphs(num_classes, [test_per_class] * num_classes, size, {}, seed, 1, stream=2)
    order = np.random.default_rng(seed).permutation(len(labels))  # source order need not be grouped
    np.savez(path, images=images[order, 0].numpy(), labels=labels[order].numpy(),
             test_images=t_images[:, 0].numpy(), test_labels=t_labels.numpy())
    return str(path)


OVERRIDES = ["data.n_max=120", "data.val_per_class=8", "data.image_size=16", "train.epochs=2",
             "optim.milestones=[1]", "train.batch_size=32", "eval.inv_interval=1",
             "eval.inv_images_per_class=4", "eval.inv_transforms=3", "eval.batch_size=64"]


@pytest.mark.timeout(600)
def test_instances_by_rules_sweep_on_a_transformed_npz(tmp_path, ray_session):
    path = write_base_npz(tmp_path / "base.npz")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["--space", "search_spaces/invariance_glyphs.yaml", "--tracking-uri", uri,
            "--storage", str(tmp_path / "rr"), "--set", "data.name=npz", "--set", f"data.path={path}"]
    for item in OVERRIDES:
        args += ["--set", item]
    assert sweep.main(args) == 0

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("invariance-glyphs")
    trials = client.search_runs([exp.experiment_id], "tags.stage = 'classifier'", max_results=100)
    assert len(trials) == 9 and {t.info.status for t in trials} == {"FINISHED"}
    pairs = {(int(t.data.params["data.instance"]), t.data.params["train.rule"]) for t in trials}
    assert pairs == {(i, r) for i in (0, 1, 2) for r in ("erm", "resample", "drs")}

    cfg = {**DEFAULTS["data"], "profile": "zipf", "alpha": 2.0, "n_min": 5}
    by_instance = {}
    for t in trials:
        instance = int(t.data.params["data.instance"])
        text = client.download_artifacts(t.info.run_id, "class_counts.csv", str(tmp_path / t.info.run_id))
        counts = [int(line.split(",")[2]) for line in open(text).read().splitlines()]
        assert counts == target_counts({**cfg, "instance": instance}, 8, 120)  # 120, 30, 13, 7, 5, …
        by_instance[instance] = counts
        m = t.data.metrics
        for c in range(8):  # every class measured, by every metric
            for name in ("ekld", "consistency", "geed", "latent_geed", "rep_ratio"):
                assert f"inv/{name}/c{c:03d}" in m, (name, c)
        for key in ("inv/ekld_many", "inv/ekld_few", "inv/ekld_size_spearman", "inv/geed_few",
                    "inv/latent_geed_mean", "inv/rep_ratio", "inv/rep_ratio_few"):
            assert np.isfinite(m[key]), key
        assert m["inv/rep_ratio"] > 0 and m["inv/geed_mean"] >= 0
        per_class = client.download_artifacts(t.info.run_id, "per_class.csv", str(tmp_path / t.info.run_id))
        rows = list(csv.DictReader(io.StringIO(open(per_class).read())))
        assert len(rows) == 8 and {"ekld", "geed", "latent_geed", "rep_ratio"} <= set(rows[0])
    # Three instances, three different class-to-size assignments of the same Zipf profile.
    assert len({tuple(c) for c in by_instance.values()}) == 3
    assert len({tuple(sorted(c)) for c in by_instance.values()}) == 1


def test_invariance_is_measured_on_the_untransformed_originals(tmp_path):
    path = write_base_npz(tmp_path / "base.npz", num_classes=4, per_class=30)
    cfg = {**DEFAULTS["data"], "name": "npz", "path": path, "profile": "zipf", "n_max": 20, "val_per_class": 6,
           "nuisance": {"rotation": 180}}
    data = build_dataset(cfg)
    subset = _invariance_subset(data, 3, torch.device("cpu"))
    first3 = torch.cat([torch.nonzero(data.clean_val.labels == c).flatten()[:3] for c in range(4)])
    assert torch.equal(subset.images, to_float(data.clean_val.images[first3]))
    assert not torch.equal(subset.images, to_float(data.val.images[first3]))
