"""Space-file parsing: defaults, overrides, distributions → Ray Tune objects, and the resolved spec."""

import textwrap

import pytest
import yaml

from gitune import spaces
from gitune.errors import UserError

BASE = """
name: t
metric: val/bal_acc
num_samples: 3
scheduler: {type: asha, max_t: 10, grace_period: 2, reduction_factor: 3}
config:
  data: {name: glyphs, n_max: 100}
  model: {arch: small_cnn}
  train: {epochs: 10}
space:
  optim.lr: {loguniform: [0.01, 0.2]}
  train.loss: {choice: [ce, focal]}
  train.seed: {grid: [0, 1]}
  optim.momentum: {uniform: [0.5, 0.95]}
  train.batch_size: {quniform: [32, 128, 32]}
  data.instance: {randint: [0, 5]}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_filled_and_space_parsed(tmp_path):
    spec = spaces.load_spec(write(tmp_path, BASE))
    assert spec.config["optim"]["milestones"] == [160, 180]  # default kept
    assert spec.config["model"]["arch"] == "small_cnn"  # file wins
    assert spec.space["optim.lr"] == {"loguniform": [0.01, 0.2]}
    assert spec.search == {"type": "random", "seed": 0, "max_concurrent": None,
                           "points_to_evaluate": None}


def test_param_space_builds_tune_domains(tmp_path):
    from ray.tune.search.sample import Categorical, Float, Integer

    spec = spaces.load_spec(write(tmp_path, BASE))
    ps = spaces.param_space(spec)
    assert isinstance(ps["optim"]["lr"], Float)
    assert isinstance(ps["train"]["loss"], Categorical)
    assert ps["train"]["seed"] == {"grid_search": [0, 1]}
    assert isinstance(ps["train"]["batch_size"], Integer)  # an int key with quniform → qrandint
    assert isinstance(ps["data"]["instance"], Integer)
    assert ps["model"]["arch"] == "small_cnn"  # fixed values pass through
    samples = [ps["optim"]["lr"].sample() for _ in range(200)]
    assert min(samples) >= 0.01 and max(samples) <= 0.2


def test_grid_search_type_turns_choices_into_grids(tmp_path):
    p = write(tmp_path, BASE.replace("num_samples: 3", "num_samples: 1\nsearch: {type: grid}")
              .split("  optim.lr:")[0] + "  train.loss: {choice: [ce, focal]}\n")
    spec = spaces.load_spec(p)
    assert spaces.param_space(spec)["train"]["loss"] == {"grid_search": ["ce", "focal"]}


def test_set_overrides_config_and_spec_and_pins_tuned_keys(tmp_path):
    spec = spaces.load_spec(write(tmp_path, BASE),
                            ["train.epochs=12", "scheduler.max_t=12", "optim.lr=0.03", "mode=max"],
                            num_samples=7, name="renamed")
    assert spec.config["train"]["epochs"] == 12
    assert spec.scheduler["max_t"] == 12
    assert spec.config["optim"]["lr"] == 0.03 and "optim.lr" not in spec.space
    assert spec.num_samples == 7 and spec.name == "renamed"


def test_shorter_runs_shrink_asha_rungs(tmp_path):
    spec = spaces.load_spec(write(tmp_path, BASE), ["train.epochs=6"])
    assert spec.scheduler["max_t"] == 6 and spec.scheduler["grace_period"] == 2
    spec = spaces.load_spec(write(tmp_path, BASE), ["train.epochs=1", "optim.warmup_epochs=0"])
    assert spec.scheduler["max_t"] == 1 and spec.scheduler["grace_period"] == 1


def test_max_t_defaults_to_epochs(tmp_path):
    text = BASE.replace("scheduler: {type: asha, max_t: 10, grace_period: 2, reduction_factor: 3}",
                        "scheduler: {type: asha}")
    assert spaces.load_spec(write(tmp_path, text)).scheduler["max_t"] == 10


def test_describe_round_trips_through_yaml(tmp_path):
    spec = spaces.load_spec(write(tmp_path, BASE))
    back = yaml.safe_load(spaces.describe(spec))
    assert back["config"] == spec.config and back["space"] == spec.space


def test_optuna_search_is_tpe_with_seed(tmp_path):
    from ray.tune.search.optuna import OptunaSearch

    text = BASE.replace("num_samples: 3", "num_samples: 3\nsearch: {type: optuna, seed: 3}") \
        .replace("  train.seed: {grid: [0, 1]}\n", "")
    alg = spaces.search_algorithm(spaces.load_spec(write(tmp_path, text)))
    assert isinstance(alg, OptunaSearch)


def test_bundled_spaces_validate():
    from pathlib import Path

    names = sorted(p.stem for p in Path("search_spaces").glob("*.yaml")) + \
        [f"../sweeps/{p.stem}" for p in Path("sweeps").glob("*_git.yaml")]
    assert {"demo", "git_demo", "invariance_glyphs", "invariance_kmnist", "gtsrb_lt", "git_oracle_glyphs"} <= set(names)
    for name in names:
        spec = spaces.load_spec(f"search_spaces/{name}.yaml")
        assert spec.space, name
    demo = spaces.load_spec("search_spaces/demo.yaml")
    assert demo.num_samples >= 8 and demo.scheduler["type"] == "asha"
    assert demo.config["data"]["name"] == "glyphs"


@pytest.mark.parametrize("key,dist,needle", [
    ("train.loss", {"uniform": [0, 1]}, "not numeric"),
    ("optim.lr", {"uniform": [0.2, 0.1]}, "low < high"),
    ("optim.lr", {"loguniform": [0.0, 0.1]}, "> 0"),
    ("train.epochs", {"uniform": [1, 5]}, "integers"),
    ("optim.lr", {"choice": [0.1, -1.0]}, "-1.0"),
])
def test_distribution_errors(tmp_path, key, dist, needle):
    raw = yaml.safe_load(BASE)
    raw["space"] = {key: dist}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as e:
        spaces.load_spec(p)
    assert needle in str(e.value) and key in str(e.value) and str(p) in str(e.value)


def test_dry_run_prints_resolved_spec_without_starting_ray(capsys, monkeypatch):
    import ray

    from gitune import sweep

    def no_init(*args, **kwargs):  # other tests may hold a session Ray: assert on the call, not the state
        raise AssertionError("--dry-run started Ray")

    monkeypatch.setattr(ray, "init", no_init)
    assert sweep.main(["--space", "search_spaces/cifar10_lt.yaml", "--dry-run", "--set", "train.epochs=180"]) == 0
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed["config"]["data"]["name"] == "cifar10" and printed["config"]["train"]["epochs"] == 180
    assert printed["space"]["optim.lr"] == {"loguniform": [0.02, 0.2]}
    assert printed["generator"]["config"]["iterations"] == 140000


def test_exponent_floats_without_dot_or_sign_are_numbers(tmp_path):
    text = BASE.replace("model: {arch: small_cnn}", "model: {arch: small_cnn}\n  optim: {weight_decay: 5e-4}")
    spec = spaces.load_spec(write(tmp_path, text), ["train.ldam_s=1e2"])
    assert spec.config["optim"]["weight_decay"] == 5e-4 and spec.config["train"]["ldam_s"] == 100.0


def test_set_works_when_the_file_has_an_empty_config_block(tmp_path):
    text = "name: t\nconfig:\nspace:\n  optim.lr: {uniform: [0.01, 0.1]}\n"
    spec = spaces.load_spec(write(tmp_path, text), ["train.epochs=7", "optim.warmup_epochs=1"])
    assert spec.config["train"]["epochs"] == 7 and spec.scheduler["max_t"] == 7
