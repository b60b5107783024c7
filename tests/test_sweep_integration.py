"""End to end: a real Tune sweep with ASHA (and one with Optuna) on tiny glyph data, tracked in a real
MLflow sqlite store; assertions read back what MLflow recorded."""

import textwrap

import pytest
from mlflow.tracking import MlflowClient

from gitune import sweep

TINY = """
name: {name}
metric: val/bal_acc
mode: max
num_samples: {num_samples}
scheduler: {{type: asha, max_t: 4, grace_period: 1, reduction_factor: 2}}
search: {search}
resources: {{cpu: 1}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, profile: exp, n_max: 150, ratio: 15,
         val_per_class: 12, test_per_class: 12, nuisance: {{rotation: 180}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [3], gamma: 0.1}}
  train: {{epochs: 4, batch_size: 64, threads: 1}}
  eval: {{inv_interval: 2, inv_images_per_class: 6, inv_transforms: 3, batch_size: 256}}
space:
{space}
"""


def run_sweep(tmp_path, name, space, search="{type: random, seed: 0}", num_samples=2, extra=()):
    f = tmp_path / f"{name}.yaml"
    f.write_text(textwrap.dedent(TINY.format(name=name, space=space, search=search, num_samples=num_samples)))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = sweep.main(["--space", str(f), "--tracking-uri", uri, "--storage", str(tmp_path / "rr"), *extra])
    return rc, MlflowClient(uri)


def runs_of(client, name):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("gitune.role") == "trial"]
    return parents, children


@pytest.mark.timeout(400)
def test_asha_sweep_logs_every_trial_to_mlflow(tmp_path, ray_session, capsys):
    # One trial at a time, a good LR then a hopeless one: ASHA must stop the hopeless trials at a rung.
    space = "  optim.lr: {grid: [0.05, 1.0e-6]}"
    rc, client = run_sweep(tmp_path, "asha", space, search="{type: random, seed: 0, max_concurrent: 1}",
                           num_samples=2)
    out = capsys.readouterr().out
    assert rc == 0
    assert "Best trial" in out and "optim.lr" in out and "val/acc_few" in out
    parents, children = runs_of(client, "asha")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    parent_id = parents[0].info.run_id
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    early = [c for c in children if c.data.tags.get("gitune.stopped_early") == "asha"]
    assert early, "ASHA stopped no trial"
    assert all(float(c.data.params["optim.lr"]) == 1e-6 for c in early)
    for c in children:
        rid = c.info.run_id
        hist = client.get_metric_history(rid, "val/class_acc/c000")
        stopped_at = int(c.data.tags.get("gitune.stopped_at_epoch", 4))
        assert [m.step for m in hist] == list(range(1, stopped_at + 1))
        for key in ("val/class_acc/c003", "val/acc_few", "val/acc_many", "val/bal_acc", "train/loss"):
            assert len(client.get_metric_history(rid, key)) == stopped_at, key
        ekld = client.get_metric_history(rid, "inv/ekld/c003")
        assert ekld and all(m.value >= 0 for m in ekld)
        assert "inv/ekld_size_spearman" in c.data.metrics and "inv/consistency/c000" in c.data.metrics
        arts = {a.path for a in client.list_artifacts(rid)} | {a.path for a in client.list_artifacts(rid, "plots")}
        assert {"per_class.csv", "plots/ekld_vs_class_size.png", "plots/class_acc_vs_class_size.png"} <= arts
        if "gitune.stopped_early" not in c.data.tags:
            assert "test/bal_acc" in c.data.metrics  # test evaluated once, at the end
    csv = client.download_artifacts(children[0].info.run_id, "per_class.csv", str(tmp_path))
    lines = open(csv).read().splitlines()
    assert lines[0].startswith("class,name,train_count,shot_group,val_acc,ekld,consistency")
    assert [ln.split(",")[2] for ln in lines[1:]] == ["150", "60", "24", "10"]


@pytest.mark.timeout(400)
def test_optuna_search_runs_and_samples_distinct_configs(tmp_path, ray_session):
    space = "  optim.lr: {loguniform: [0.005, 0.2]}\n  train.loss: {choice: [ce, focal]}"
    rc, client = run_sweep(tmp_path, "opt", space, search="{type: optuna, seed: 1}", num_samples=3,
                           extra=["--set", "scheduler.type=fifo", "--set", "train.epochs=2",
                                  "--set", "scheduler.max_t=2"])
    assert rc == 0
    parents, children = runs_of(client, "opt")
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    lrs = {c.data.params["optim.lr"] for c in children}
    assert len(lrs) == 3 and all(0.005 <= float(v) <= 0.2 for v in lrs)
    assert parents[0].data.metrics["trials"] == 3


@pytest.mark.timeout(300)
def test_diverging_trial_ends_failed_with_reason(tmp_path, ray_session, capsys):
    """A NaN trial is not retried from its checkpoint (it would diverge again), even with retries forever:
    before, Tune retried it max_failures times, here without end."""
    # LDAM's logit scale overflows float32: the loss is NaN after the first epoch.
    space = "  train.seed: {choice: [0]}"
    rc, client = run_sweep(tmp_path, "nan", space, num_samples=1,
                           extra=["--set", "train.loss=ldam", "--set", "train.ldam_s=1.0e39",
                                  "--set", "failure.max_failures=-1"])
    assert rc == 1
    assert "1 errored" in capsys.readouterr().err
    parents, (child,) = runs_of(client, "nan")
    assert child.info.status == "FAILED" and parents[0].info.status == "FAILED"
    assert "train/loss became nan at epoch 1" in child.data.tags["gitune.error"]
    assert child.data.tags["gitune.diverged"] == "true"
    assert "trial/resumed_at_epoch" not in child.data.metrics  # one attempt, no retry from a checkpoint


@pytest.mark.timeout(300)
def test_natural_rgb_npz_with_resnet_ldam_drw(tmp_path, ray_session):
    """The CIFAR-style path: 3-channel custom data (natural: crop+flip, standard augmentation as the
    invariance T), a CIFAR ResNet with LDAM's cosine head and deferred re-weighting."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 80)
    colours = rng.integers(40, 255, (4, 3))
    images = (rng.integers(0, 60, (len(labels), 32, 32, 3)) + colours[labels][:, None, None, :] // 2).astype(np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez(path, images=images, labels=labels)
    spec = tmp_path / "rgb.yaml"
    spec.write_text(textwrap.dedent(f"""
        name: rgb
        num_samples: 1
        scheduler: {{type: fifo}}
        config:
          data: {{name: npz, path: {path}, profile: exp, n_max: 60, ratio: 10, val_per_class: 8, test_per_class: 8}}
          model: {{arch: resnet20}}
          optim: {{lr: 0.05, warmup_epochs: 1, milestones: [1]}}
          train: {{epochs: 2, batch_size: 32, loss: ldam, rule: drw, threads: 1}}
          eval: {{inv_interval: 1, inv_images_per_class: 4, inv_transforms: 2}}
        space:
          train.seed: {{choice: [3]}}
        """))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert sweep.main(["--space", str(spec), "--tracking-uri", uri, "--storage", str(tmp_path / "rr")]) == 0
    client = MlflowClient(uri)
    _, (child,) = runs_of(client, "rgb")
    assert child.info.status == "FINISHED"
    params, metrics = child.data.params, child.data.metrics
    assert params["model.arch"] == "resnet20" and params["data/num_classes"] == "4"
    assert int(params["data/train_images"]) == 60 + 27 + 12 + 6
    assert 0.0 <= metrics["test/bal_acc"] <= 1.0 and metrics["inv/ekld_mean"] >= 0.0
    # LDAM logits are s·cos (s = 30): the measured KL is on the trained distribution, not a flat one.
    assert metrics["val/loss"] > 0.0
