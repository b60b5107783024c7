"""Speed work must not change results: the same seed gives the same metrics on CPU as the recorded run.

tests/golden/regression_metrics.json holds the final-epoch metrics of a real sweep (ERM and DRS × GIT off/on ×
oracle off/on, with a fixed random-weight generator) as run before any speed work. Regenerate it only for a
change that is meant to alter the numbers, with GITUNE_WRITE_GOLDEN=1, and say why in the commit.
"""

import json
import math
import os
import textwrap
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from gitune import sweep
from gitune.models.munit import MunitGenerator
from gitune.pretrain import export_generator

GOLDEN = Path(__file__).parent / "golden" / "regression_metrics.json"
KEYS = ("train/loss", "train/acc", "val/bal_acc", "val/loss", "val/acc_few", "inv/ekld_mean",
        "inv/consistency_mean", "inv/geed_mean", "inv/latent_geed_mean", "inv/rep_ratio", "inv/ekld_gen_mean",
        "test/bal_acc", "git/generated", "oracle/generated")
SPACE = """
name: regression
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: grid}}
resources: {{cpu: 1}}
generator: {{checkpoint: {checkpoint}}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, profile: exp, n_max: 80, ratio: 8,
         val_per_class: 8, test_per_class: 8, nuisance: {{rotation: 180}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [2], gamma: 0.1}}
  train: {{epochs: 3, batch_size: 32, threads: 1, seed: 5, deferred_epoch: 1}}
  git: {{start_epoch: 1}}
  eval: {{inv_interval: 1, inv_images_per_class: 4, inv_transforms: 3, batch_size: 64}}
space:
  train.rule: {{grid: [erm, drs]}}
  git.prob: {{grid: [0.0, 0.5]}}
  aug.oracle_prob: {{grid: [0.0, 0.25]}}
"""


def _generator(path: Path) -> None:
    torch.manual_seed(11)
    arch = {"dim": 4, "style_dim": 3, "n_downsample": 1, "n_res": 1, "mlp_dim": 8, "mlp_layers": 2}
    export_generator(str(path), MunitGenerator(1, **arch).state_dict(), arch, 1, 16)


@pytest.mark.timeout(600)
def test_same_seed_same_metrics_as_recorded(tmp_path, ray_session):
    _generator(tmp_path / "gen.pt")
    space = tmp_path / "regression.yaml"
    space.write_text(textwrap.dedent(SPACE.format(checkpoint=tmp_path / "gen.pt")))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert sweep.main(["--space", str(space), "--tracking-uri", uri, "--storage", str(tmp_path / "rr")]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("regression")
    got = {}
    for r in client.search_runs([exp.experiment_id], "tags.stage = 'classifier'"):
        p = r.data.params
        arm = f"rule={p['train.rule']} git={float(p['git.prob'])} oracle={float(p['aug.oracle_prob'])}"
        got[arm] = {k: r.data.metrics[k] for k in KEYS if k in r.data.metrics}
    assert len(got) == 8
    if os.environ.get("GITUNE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert sorted(got) == sorted(want)
    for arm, metrics in want.items():
        assert sorted(got[arm]) == sorted(metrics), arm
        for k, v in metrics.items():
            # Tight enough that any change of RNG order or arithmetic shows; loose enough for CPU ISA rounding.
            assert math.isclose(got[arm][k], v, rel_tol=1e-4, abs_tol=1e-6), (arm, k, got[arm][k], v)
