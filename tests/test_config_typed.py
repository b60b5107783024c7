"""The typed trial config: frozen dataclasses generated from gitune.config.KEYS, what trainables read."""

import copy
import dataclasses
import pickle
import subprocess
import sys
from typing import Optional

import pytest

from gitune import config as C
from gitune.config import (DEFAULTS, GENERATOR_DEFAULTS, GENERATOR_GROUPS, GROUPS, KEYS, GeneratorTrialConfig,
                           TrialConfig, as_dict, typed_config, typed_generator_config)
from gitune.errors import UserError

TINY = {"data": {"name": "glyphs", "num_classes": 3, "image_size": 16, "n_max": 21, "ratio": 4,
                 "val_per_class": 4, "test_per_class": 4, "nuisance": {"rotation": 180}},
        "model": {"arch": "small_cnn"},
        "optim": {"warmup_epochs": 0, "milestones": [1], "gamma": 0.1},
        "train": {"epochs": 1, "batch_size": 7, "threads": 1},
        "eval": {"inv_interval": 1, "inv_images_per_class": 2, "inv_transforms": 2}}


def _read(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _generator_config() -> dict:
    return {"data": copy.deepcopy(DEFAULTS["data"]),
            "generator": C.merge_generator_config({"lr": 3e-4, "batch_size": 8, "lr_scaling": "linear"}, "test")}


def test_every_declared_key_is_a_field_with_its_default():
    c = typed_config(DEFAULTS)
    assert isinstance(c, TrialConfig)
    trial_keys = [k for k in KEYS if k.group in GROUPS]
    for k in trial_keys:
        assert _read(c, k.name) == k.default, k.name
    assert set(C.flatten(as_dict(c))) == {k.name for k in trial_keys}  # nothing more, nothing less
    g = typed_generator_config({})  # everything left out: the declared defaults
    assert isinstance(g, GeneratorTrialConfig)
    for k in KEYS:
        if k.group in GENERATOR_GROUPS:
            assert _read(g, k.name) == k.default, k.name


def test_field_types_follow_the_checks():
    def kind(dotted):
        block, name = dotted.rsplit(".", 1)
        return {f.name: f.type for f in dataclasses.fields(_read(C.config_class(GROUPS)(), block))}[name]

    assert kind("train.epochs") is int and kind("optim.lr") is float and kind("optim.nesterov") is bool
    assert kind("train.loss") is str and kind("data.name") is str
    assert kind("train.flip") == Optional[bool] and kind("data.path") == Optional[str]
    assert kind("train.deferred_epoch") == Optional[int] and kind("data.channels") == Optional[int]
    assert kind("optim.milestones") == list[int]
    assert kind("data.nuisance") is type(typed_config({}).data.nuisance)


def test_typed_config_is_frozen():
    c = typed_config(DEFAULTS)
    for target, name in ((c, "train"), (c.train, "epochs"), (c.data.nuisance, "rotation")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(target, name, 1)
    assert dataclasses.replace(c.train, epochs=3).epochs == 3 and c.train.epochs == 200


@pytest.mark.parametrize("cfg, dotted", [({"train": {"epoch": 3}}, "config.train.epoch"),
                                         ({"data": {"nuisance": {"rotate": 5}}}, "config.data.nuisance.rotate"),
                                         ({"trian": {"epochs": 3}}, "config.trian")])
def test_an_unknown_key_is_one_line_naming_it(cfg, dotted):
    with pytest.raises(UserError) as err:
        typed_config(cfg)
    assert str(err.value).startswith(f"{dotted}: unknown key") and "\n" not in str(err.value)


def test_a_generator_key_is_not_a_classifier_key():
    with pytest.raises(UserError, match=r"^config\.generator: unknown key"):
        typed_config(_generator_config())
    with pytest.raises(UserError, match=r"^run\.generator\.lrr: unknown key"):
        typed_generator_config({"generator": {"lrr": 1e-4}}, where="run")


def test_a_block_must_be_a_mapping():
    with pytest.raises(UserError, match=r"^config\.data\.nuisance: expected a mapping"):
        typed_config({"data": {"nuisance": 180}})


def test_values_keep_their_types():
    c = typed_config(C.merge_config(TINY, "test"))
    assert c.data.ratio == 4 and type(c.data.ratio) is int  # as given: no coercion to the annotated float
    assert c.optim.milestones == [1] and type(c.optim.milestones) is list
    assert c.train.flip is None and c.optim.nesterov is False and c.optim.gamma == 0.1
    assert c.model.arch == "small_cnn" and c.train.threads == 1


def test_a_nested_block_keeps_the_declared_defaults_of_the_keys_left_out():
    c = typed_config({"data": {"nuisance": {"rotation": 180}}})
    assert c.data.nuisance.rotation == 180
    assert (c.data.nuisance.background, c.data.nuisance.stroke, c.data.nuisance.translate) == (0, False, 0)
    assert as_dict(c.data.nuisance) == {**DEFAULTS["data"]["nuisance"], "rotation": 180}


def test_round_trip_to_the_plain_dict():
    assert as_dict(typed_config(DEFAULTS)) == DEFAULTS
    resolved = C.resolve_trial_config(C.merge_config(TINY, "test"))
    assert as_dict(typed_config(resolved)) == resolved
    gen = _generator_config()
    assert as_dict(typed_generator_config(gen)) == gen
    assert as_dict(typed_generator_config(gen).generator) == gen["generator"]


def test_objects_do_not_share_mutable_defaults():
    a, b = typed_config({}), typed_config({})
    a.optim.milestones.append(7)
    assert b.optim.milestones == [160, 180] and DEFAULTS["optim"]["milestones"] == [160, 180]
    as_dict(b)["optim"]["milestones"].append(9)
    assert b.optim.milestones == [160, 180]


def test_it_reads_like_its_dict_too():
    """Code still written against the dict shape (benchmarks/, resolve_compute) reads a typed config as is."""
    c = typed_config(DEFAULTS)
    assert c["train"]["epochs"] == c.train.epochs == 200
    assert c.train.get("threads") is None and c.eval == DEFAULTS["eval"] and c == DEFAULTS
    with pytest.raises(KeyError):
        c["train"]["epoch"]


def test_it_pickles_and_copies_as_ray_ships_arguments():
    c = typed_config(C.resolve_trial_config(C.merge_config(TINY, "test")))
    for again in (pickle.loads(pickle.dumps(c)), copy.deepcopy(c)):
        assert type(again) is TrialConfig and again == c and again.data.nuisance.rotation == 180
    block = pickle.loads(pickle.dumps(c.data.nuisance))
    assert type(block) is type(c.data.nuisance) and block == c.data.nuisance
    g = typed_generator_config(_generator_config())
    assert pickle.loads(pickle.dumps(g)) == g


def test_the_config_layer_stays_torch_free():
    code = "import sys, gitune.config as c; c.typed_config(c.DEFAULTS); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_build_trial_exposes_the_typed_resolved_config(one_thread):
    import torch

    from gitune.trainables.classifier import build_trial

    t = build_trial(C.merge_config(TINY, "test"), torch.device("cpu"))
    assert isinstance(t.cfg, TrialConfig)
    assert t.cfg.train.deferred_epoch == 1  # resolved before typing: the first milestone
    assert t.cfg.data.nuisance.rotation == 180 and t.cfg.model.arch == "small_cnn"
    assert t.loader.batch_size == t.cfg.train.batch_size == 7
    bad = C.merge_config(TINY, "test")
    bad["train"]["epoch"] = 2  # a typo the dict would carry silently
    with pytest.raises(UserError, match=r"^config\.train\.epoch: unknown key"):
        build_trial(bad, torch.device("cpu"))
