"""Generator selection by fidelity: the default `generator.metric` follows the data, and through a real sweep
every generator report carries fid/* metrics and the stage keeps the trial with the best metric value."""

import json
import textwrap

import pytest
import torch
from mlflow.tracking import MlflowClient

from gitune import spaces, sweep
from gitune.trainables.generator import fidelity_indices

BASE = {"name": "t", "config": {"data": {"name": "glyphs", "num_classes": 3, "image_size": 16},
                                "model": {"arch": "small_cnn"}, "train": {"epochs": 2},
                                "optim": {"warmup_epochs": 0, "milestones": [1]}}}
FIDELITY = ("fid/style_effect", "fid/content", "fid/style_x_content", "fid/nuisance_ed", "fid/nuisance_ed_feat",
            "fid/style_effect_true", "fid/content_true")


def spec_with(generator, nuisance=None):
    raw = json.loads(json.dumps(BASE))
    if nuisance:
        raw["config"]["data"]["nuisance"] = nuisance
    raw["generator"] = generator
    return spaces.build_spec(raw, "space.yaml").generator


@pytest.mark.parametrize("generator, nuisance, expected", [
    ({}, {"background": 99}, ("fid/nuisance_ed", "min")),
    ({}, None, ("fid/style_x_content", "max")),
    ({"metric": "loss/recon_x"}, None, ("loss/recon_x", "min")),
    ({"metric": "fid/content"}, {"rotation": 90}, ("fid/content", "max")),
    ({"metric": "fid/nuisance_ed_feat"}, {"stroke": True}, ("fid/nuisance_ed_feat", "min")),
    ({"metric": "fid/style_effect", "mode": "min"}, None, ("fid/style_effect", "min")),
])
def test_the_default_metric_and_mode_follow_the_data_and_the_metric(generator, nuisance, expected):
    block = spec_with(generator, nuisance)
    assert (block["metric"], block["mode"]) == expected


def test_fidelity_images_are_balanced_over_classes_and_fixed():
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2, 1, 0, 2])
    idx = fidelity_indices(labels, 3, 7)
    assert idx.tolist() == [0, 4, 5, 1, 7, 6, 2]  # image 0 of every class, then image 1, then class 0's third
    assert torch.bincount(labels[idx]).tolist() == [3, 2, 2]
    assert fidelity_indices(labels, 3, 100).numel() == 10


def test_measuring_leaves_training_untouched():
    """Own RNG, eval mode only while measuring, no weight or buffer changes: resume stays exact."""
    from gitune.config import GENERATOR_DEFAULTS
    from gitune.metrics.generator_fidelity import nuisance_synthesizer
    from gitune.models.munit import build_munit
    from gitune.trainables.generator import arch_of, measure_generator

    gc = {**GENERATOR_DEFAULTS, "dim": 4, "style_dim": 4, "mlp_dim": 8, "n_res": 1, "fid_draws": 3, "seed": 2}
    torch.manual_seed(0)
    gen, _ = build_munit(arch_of(gc), 1, 16)
    x = torch.rand(6, 1, 16, 16)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    rng_state = torch.get_rng_state()
    first = measure_generator(gen, x, nuisance_synthesizer({"background": 90}), gc)
    assert gen.training and torch.equal(torch.get_rng_state(), rng_state)
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert measure_generator(gen, x, nuisance_synthesizer({"background": 90}), gc) == first  # same styles each time
    assert measure_generator(gen, x, nuisance_synthesizer({"background": 90}), {**gc, "seed": 3}) != first


SPACE = """
name: fidsel
metric: val/bal_acc
num_samples: 1
scheduler: {type: fifo}
search: {type: grid}
resources: {cpu: 1}
generator:
  config: {dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 4, batch_size: 4,
           report_every: 2, grid_every: 0, threads: 1, fid_images: 12, fid_draws: 3}
  space: {seed: {grid: [0, 1]}}
config:
  data: {name: glyphs, num_classes: 3, image_size: 16, profile: exp, n_max: 30, ratio: 3, val_per_class: 5,
         test_per_class: 4, nuisance: {background: 150}}
  model: {arch: small_cnn}
  optim: {lr: 0.05, warmup_epochs: 0, milestones: [1], gamma: 0.1}
  train: {epochs: 1, batch_size: 16, threads: 1}
  eval: {inv_interval: 0, extra_invariance: false, batch_size: 64}
"""


@pytest.mark.timeout(300)
def test_generator_runs_report_fidelity_and_the_best_trial_is_chosen(tmp_path, ray_session, capsys):
    space = tmp_path / "fidsel.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = sweep.main(["--space", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "rr")])
    out = capsys.readouterr().out
    assert rc == 0, out

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fidsel")
    gens = client.search_runs([exp.experiment_id], "tags.stage = 'generator'", max_results=10)
    assert len(gens) == 2 and all(r.info.status == "FINISHED" for r in gens)
    final = {}
    for r in gens:
        for key in FIDELITY:
            history = sorted(client.get_metric_history(r.info.run_id, key), key=lambda m: m.step)
            assert [m.step for m in history] == [2, 4], (key, history)
        final[r.info.run_id] = {k: r.data.metrics[k] for k in FIDELITY}
    values = [f["fid/nuisance_ed"] for f in final.values()]
    assert values[0] != values[1]  # two different generators: the choice means something
    best = min(final, key=lambda run_id: final[run_id]["fid/nuisance_ed"])

    parent = client.search_runs([exp.experiment_id], "tags.`gitune.role` = 'sweep'", max_results=1)[0]
    assert parent.data.tags["gitune.generator_run_id"] == best
    info = json.loads(next((tmp_path / "rr" / "generators").glob("*/info.json")).read_text())
    assert info["mlflow_run_id"] == best
    assert info["generator"]["metric"] == "fid/nuisance_ed" and info["generator"]["mode"] == "min"
    assert info["fidelity"] == pytest.approx(final[best])
    line = next(x for x in out.splitlines() if "chose trial" in x)
    assert f"fid/nuisance_ed={final[best]['fid/nuisance_ed']:.4g}" in line
    assert "(T: " in line and "chosen by fid/nuisance_ed (min)" in line
