"""MLflow to the full, read back through MlflowClient: readable trial run names, MLflow's system metrics per trial
run, the parent run's note and source tags, dataset lineage (log_inputs) on every trial run, and the trained
generator registered in the Model Registry and taken again by a second sweep through `models:/NAME/VERSION`.
The fast tests check the pieces without Ray; the slow one runs two tiny real sweeps on a local SQLite store."""

import json
import os
import socket
import textwrap
import time

import pytest
from mlflow.tracking import MlflowClient

from gitune.tracking import TrackingContext, dataset_input, run_name
from gitune.trial_run import TrialRun

SPACE = """
name: {name}
description: "Does GIT help the tail? A tiny check."
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: grid, seed: 0}}
resources: {{cpu: 1}}
generator:
  {generator}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, n_max: 40, ratio: 4, val_per_class: 6,
         test_per_class: 6, nuisance: {{rotation: 90}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 0, milestones: [30], gamma: 0.1}}
  train: {{epochs: 2, batch_size: 32, threads: 1}}
  eval: {{inv_interval: 2, inv_images_per_class: 2, inv_transforms: 2}}
  git: {{prob: 0.3}}
space:
  optim.lr: {{grid: [0.05, 0.1]}}
"""
TRAIN_GENERATOR = """config: {dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 4,
           batch_size: 4, report_every: 2, grid_every: 0, threads: 1}"""
SYSTEM = ("system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
          "system/system_memory_usage_percentage")


def _ctx(uri, name="feat", keys=("optim.lr", "train.loss")):
    client = MlflowClient(uri)
    exp = client.create_experiment(name)
    parent = client.create_run(exp, tags={"gitune.role": "sweep"}).info.run_id
    return TrackingContext(uri, exp, name, parent, tuple(keys), ("generator.lr",))


def test_run_names_are_the_sweep_the_trial_number_and_the_tuned_values():
    ctx = TrackingContext("u", "1", "cifar_lt", "p", ("optim.lr", "train.loss", "git.prob"), ("generator.lr",))
    cfg = {"optim": {"lr": 0.1}, "train": {"loss": "ldam"}, "git": {"prob": 0.123456}}
    assert run_name(ctx, "a1b2c_00003", cfg) == "cifar_lt-00003 lr=0.1 loss=ldam prob=0.1235"
    assert run_name(ctx, "a1b2c_00000", {"generator": {"lr": 1e-4}}, "generator") == "cifar_lt-gen-00000 lr=0.0001"
    assert run_name(TrackingContext("u", "1", "s", "p"), "x_00001", cfg) == "s-00001"  # nothing tuned


def test_dataset_input_names_the_data_and_profiles_its_classes():
    d = dataset_input({"name": "glyphs", "profile": "exp", "ratio": 10.0, "path": None}, [30, 10, 3], (1, 16, 16),
                      ["a", "b", "c"])
    assert d["name"] == "glyphs-exp-r10" and d["source"] == "builtin:glyphs" and d["source_type"] == "builtin"
    assert json.loads(d["profile"])["class_counts"] == [30, 10, 3]
    assert "mlflow_tensorspec" in json.loads(d["schema"])
    again = dataset_input({"ratio": 10, "profile": "exp", "name": "glyphs", "path": None}, [30, 10, 3], (1, 16, 16))
    assert again["digest"] == d["digest"] and len(d["digest"]) == 16
    other = dataset_input({"name": "npz", "path": "/data/x.npz", "profile": "step", "ratio": 5}, [5, 1], (3, 8, 8))
    assert other["source"] == "/data/x.npz" and other["source_type"] == "local" and other["digest"] != d["digest"]


def test_inputs_go_through_the_outbox_and_system_metrics_reach_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    uri = f"sqlite:///{tmp_path}/m.db"
    ctx = _ctx(uri)
    run = TrialRun.open(ctx, "abc_00001", "feat-00001", {"a": 1})
    d = dataset_input({"name": "glyphs", "profile": "exp", "ratio": 4.0}, [4, 2], (1, 16, 16))
    run.log_input(**d)
    run.save(str(tmp_path))  # a checkpoint's outbox holds the input ...
    assert json.loads((tmp_path / "mlflow_outbox.json").read_text())["inputs"][0]["name"] == "glyphs-exp-r4"
    assert run.flush()
    again = TrialRun.open(ctx, "abc_00001", "feat-00001", {"a": 1})  # ... sent again after a restore: kept once
    assert again.load(str(tmp_path)) and again.inputs
    assert again.flush() and not again.inputs
    time.sleep(0.7)
    assert again.finish("FINISHED") and run.finish("FINISHED")
    got = MlflowClient(uri).get_run(run.run_id)
    (inp,) = got.inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest, inp.dataset.source) == (d["name"], d["digest"], "builtin:glyphs")
    assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "training"
    assert set(SYSTEM) <= set(got.data.metrics), sorted(got.data.metrics)
    steps = [m.step for m in MlflowClient(uri).get_metric_history(run.run_id, SYSTEM[0])]
    assert len(steps) >= 2, steps  # sampled every 0.2 s, and once more at the end


def test_an_absent_server_neither_crashes_nor_stalls_a_trial(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    ctx = TrackingContext(f"http://127.0.0.1:{port}", "1", "feat", "p", ("optim.lr",))
    t0 = time.monotonic()
    run = TrialRun.open(ctx, "abc_00002", "feat-00002", {"a": 1})
    run.log_input(**dataset_input({"name": "glyphs"}, [3, 1], (1, 8, 8)))
    run.log_metrics({"val/acc": 0.5}, step=1)
    assert not run.finish("FINISHED", wait=0) and run.monitor is None
    assert run.inputs and run.metrics  # kept for the sweep to send from the checkpoint
    assert time.monotonic() - t0 < 30


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_sweep_records_names_system_metrics_lineage_and_a_registered_generator(tmp_path, monkeypatch,
                                                                                   ray_session):
    from gitune import sweep

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)

    def run_sweep(name, generator):
        space = tmp_path / f"{name}.yaml"
        space.write_text(textwrap.dedent(SPACE.format(name=name, generator=generator)))
        t0 = time.monotonic()
        rc = sweep.main(["--space", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "rr")])
        print(f"sweep {name}: {time.monotonic() - t0:.0f} s")
        assert rc == 0
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], max_results=100)
        (parent,) = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
        return parent, [r for r in runs if r.data.tags.get("gitune.role") == "trial"]

    parent, trials = run_sweep("feat", TRAIN_GENERATOR)
    tags = parent.data.tags
    print("parent tags:", {k: v for k, v in sorted(tags.items()) if not k.startswith("mlflow.log")})
    print("trial runs:", sorted(r.info.run_name for r in trials))
    print("system metrics:", sorted(k for k in trials[0].data.metrics if k.startswith("system/")))
    assert tags["mlflow.note.content"] == "Does GIT help the tail? A tiny check."
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"] and tags["mlflow.user"]
    assert tags["mlflow.runName"] == parent.info.run_name  # the run folder, as before
    assert tags["gitune.generator"] == "trained"
    assert tags["gitune.generator_model"] == "models:/feat-generator/1"
    gen = [r for r in trials if r.data.tags["stage"] == "generator"]
    cls = [r for r in trials if r.data.tags["stage"] == "classifier"]
    assert [r.info.run_name for r in gen] == ["feat-gen-00000"]
    assert sorted(r.info.run_name for r in cls) == ["feat-00000 lr=0.05", "feat-00001 lr=0.1"]
    digests = set()
    for r in trials:
        assert r.info.status == "FINISHED"
        assert set(SYSTEM) <= set(r.data.metrics), (r.info.run_name, sorted(r.data.metrics))
        (inp,) = client.get_run(r.info.run_id).inputs.dataset_inputs
        digests.add(inp.dataset.digest)
        assert inp.dataset.name == "glyphs-exp-r4" and inp.dataset.source == "builtin:glyphs"
        assert json.loads(inp.dataset.profile)["class_counts"][0] == 40
    assert len(digests) == 1  # the generator and the classifiers trained on the same data
    version = client.get_model_version("feat-generator", "1")
    assert version.run_id == gen[0].info.run_id and version.source == f"runs:/{gen[0].info.run_id}/generator"
    assert tags["gitune.generator_run_id"] == gen[0].info.run_id

    # The registered generator, taken by a second sweep through its models:/ URI: no generator stage.
    parent2, trials2 = run_sweep("feat_reuse", "checkpoint: models:/feat-generator/1")
    assert parent2.data.tags["gitune.generator"] == "given"
    assert "gitune.generator_model" not in parent2.data.tags
    assert {r.data.tags["stage"] for r in trials2} == {"classifier"} and len(trials2) == 2
    assert {r.info.status for r in trials2} == {"FINISHED"}
    assert all(r.data.params["generator/key"].startswith("given:") for r in trials2)
    assert str(client.get_registered_model("feat-generator").latest_versions[0].version) == "1"  # nothing new
    assert os.path.isdir(tmp_path / "rr")
