"""One validator for the `data` group: the Key declarations of gitune.config give the same answer through a space
file and through gitune.data.dataset.build_dataset, the check runs once per build, and the sources, models and
losses are found through gitune.registry (a new name is one registry entry)."""

import sys

import numpy as np
import pytest
import torch
import yaml

from gitune import config as C
from gitune import registry
from gitune.data import sources
from gitune.data.dataset import LongTailData, build_dataset
from gitune.data.raw import RawData
from gitune.errors import UserError
from gitune.spaces import load_spec


def _npz(tmp_path):
    """A valid 3-class npz: a build can only fail on the config."""
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, images=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), labels=np.arange(60) % 3)
    return str(path)


def _data(path, **kw):
    nuisance = {**C.DEFAULTS["data"]["nuisance"], **kw.pop("nuisance", {})}
    return {**C.DEFAULTS["data"], "name": "npz", "path": path, "val_per_class": 2, "test_per_class": 2,
            "nuisance": nuisance, **kw}


def _spec_error(tmp_path, data):
    """load_spec's error for a space file whose fixed config holds `data` ("" when it loads)."""
    text = {"name": "validator", "num_samples": 1,
            "config": {"data": data, "model": {"arch": "small_cnn"}, "train": {"epochs": 3},
                       "optim": {"warmup_epochs": 1, "milestones": [2]}},
            "space": {"optim.lr": {"loguniform": [0.01, 0.1]}}}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(text))
    try:
        load_spec(path)
    except UserError as err:
        return str(err)
    return ""


def _build_error(data):
    try:
        build_dataset(data)
    except UserError as err:
        return str(err)
    return ""


# Each of these was accepted by one of the old validators and refused by another.
DISAGREED = [
    ({"image_size": 8}, "data.image_size: expected an integer ≥ 16 and ≤ 512 (or null), got 8"),
    ({"image_size": 600}, "data.image_size: expected an integer ≥ 16 and ≤ 512 (or null), got 600"),
    ({"instance": -1}, "data.instance: expected an integer ≥ 0, got -1"),
    ({"seed": -3}, "data.seed: expected an integer ≥ 0, got -3"),
    ({"num_classes": 1001}, "data.num_classes: expected an integer ≥ 2 and ≤ 1000 (or null), got 1001"),
    ({"channels": True}, "data.channels: expected 1 or 3 (or null), got True"),
    ({"nuisance": {"translate": 20}}, "data.nuisance.translate: expected an integer ≥ 0 and ≤ 16, got 20"),
    ({"nuisance": {"background": 5.0}}, "data.nuisance.background: expected an integer ≥ 0 and ≤ 255, got 5.0"),
    ({"nuisance": {"rotation": None}}, "data.nuisance.rotation: expected a number ≥ 0.0 and ≤ 180.0, got None"),
]


@pytest.mark.parametrize("bad,message", DISAGREED, ids=[str(b) for b, _ in DISAGREED])
def test_bounds_that_disagreed_give_one_answer(tmp_path, bad, message):
    path = _npz(tmp_path)
    from_build = _build_error(_data(path, **bad))
    from_spec = _spec_error(tmp_path, {"name": "npz", "path": path, **bad})
    assert from_build == message
    assert from_spec.endswith(f"config.{message}") and "\n" not in from_spec


@pytest.mark.parametrize("good", [{"image_size": 16}, {"instance": 7}, {"nuisance": {"translate": 16}},
                                  {"channels": 3}])
def test_values_at_the_bounds_pass_both_ways(tmp_path, good):
    path = _npz(tmp_path)
    assert _spec_error(tmp_path, {"name": "npz", "path": path, **good}) == ""
    assert _build_error(_data(path, **good)) == ""


def _count_validations(monkeypatch):
    """Wrap validate_data_config in every gitune module that holds it; returns the call list."""
    calls = []
    original = sources.validate_data_config

    def counting(cfg):
        calls.append(cfg.get("name"))
        return original(cfg)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("gitune") and \
                getattr(module, "validate_data_config", None) is original:
            monkeypatch.setattr(module, "validate_data_config", counting)
    return calls


def test_validated_once_per_build(tmp_path, monkeypatch):
    calls = _count_validations(monkeypatch)
    build_dataset(_data(_npz(tmp_path)))
    assert calls == ["npz"]
    glyphs = {**C.DEFAULTS["data"], "n_max": 20, "num_classes": 3, "image_size": 16, "val_per_class": 2,
              "test_per_class": 2}
    build_dataset(glyphs)
    assert calls == ["npz", "glyphs"]


def test_cross_key_rules_still_hold(tmp_path):
    assert _build_error(_data(None)) == "data.path: required when data.name is npz (expected the path of an .npz file)"
    tv = {**C.DEFAULTS["data"], "name": "torchvision", "dataset": None}
    assert _build_error(tv).startswith("data.dataset: required when data.name is torchvision")


# ---------------------------------------------------------------------------------------------- registry


FAKE_CALLS = []


def fake_source(cfg):
    """A registered source for the test: 3 classes of flat grey 16×16 images, 30 per class."""
    FAKE_CALLS.append(cfg["name"])
    labels = torch.arange(90) % 3
    images = (labels * 80).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 16, 16).contiguous()
    return RawData(images, labels, None, None, 3, ["a", "b", "c"], False)


def fake_model(arch, num_classes, in_channels, cosine_head=False, cosine_scale=1.0):
    return torch.nn.Linear(in_channels, num_classes)


def fake_loss(class_counts, weight, **hp):
    return ("fake loss", list(class_counts), hp["la_tau"])


def test_every_registry_entry_resolves_to_a_callable():
    tables = {"source": registry.SOURCES, "source_check": registry.SOURCE_CHECKS, "model": registry.MODELS,
              "loss": registry.LOSS_FUNCTIONS}
    for kind, table in tables.items():
        for name in table:
            assert callable(registry.resolve(kind, name)), (kind, name)
    assert set(registry.SOURCE_CHECKS) <= set(registry.SOURCES)
    assert list(registry.DATASETS) == list(registry.SOURCES) == C.schema()["data.name"].json["enum"]


def test_a_new_source_is_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.SOURCES, "fake", f"{__name__}:fake_source")
    FAKE_CALLS.clear()
    C.check_value("data.name", "fake", "data.name")  # the config check reads the registry
    assert _spec_error(tmp_path, {"name": "fake"}) == ""
    cfg = {**C.DEFAULTS["data"], "name": "fake", "n_max": 20, "ratio": 4.0, "val_per_class": 2,
           "test_per_class": 2}
    sources.check_source(cfg)  # no preflight registered: nothing to check
    data = build_dataset(cfg)
    assert FAKE_CALLS == ["fake"]
    assert isinstance(data, LongTailData) and data.class_names == ["a", "b", "c"]
    assert data.class_counts == [20, 10, 5] and data.image_shape == (1, 16, 16)
    monkeypatch.delitem(registry.SOURCES, "fake")
    with pytest.raises(UserError, match=r"^data\.name: expected one of: glyphs, .*got 'fake'$"):
        build_dataset(cfg)


def test_models_and_losses_dispatch_through_the_registry(monkeypatch):
    from gitune.models import create_model
    from gitune.training.losses import build_loss

    monkeypatch.setitem(registry.MODELS, "fake_net", f"{__name__}:fake_model")
    monkeypatch.setitem(registry.MODELS, "small_cnn", f"{__name__}:fake_model")
    assert isinstance(create_model("fake_net", 4, 3), torch.nn.Linear)
    assert isinstance(create_model("small_cnn", 4, 3), torch.nn.Linear)
    monkeypatch.setitem(registry.LOSS_FUNCTIONS, "ce", f"{__name__}:fake_loss")
    assert build_loss("ce", [3, 1], la_tau=0.5) == ("fake loss", [3, 1], 0.5)
