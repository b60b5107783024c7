"""Accuracy by class / shot group, and the invariance metrics (eKLD, consistency, Spearman)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gitune.metrics import (class_key, classification_metrics, kl_divergence, measure_invariance,
                            per_class_accuracy, per_class_means, shot_groups, spearman)

# ---------------------------------------------------------------- accuracy


def test_shot_group_boundaries():
    assert shot_groups([500, 50, 5]) == {"many": [0], "medium": [1], "few": [2]}
    assert shot_groups([101, 100, 20, 19]) == {"many": [0], "medium": [1, 2], "few": [3]}
    assert shot_groups([200, 300]) == {"many": [0, 1], "medium": [], "few": []}


def test_per_class_accuracy_with_absent_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 1])
    acc = per_class_accuracy(preds, labels, num_classes=4)
    assert acc.dtype.is_floating_point
    torch.testing.assert_close(acc[:3], torch.tensor([0.75, 0.5, 0.5]))
    assert math.isnan(acc[3].item())


def test_classification_metrics_hand_example():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 1])
    m = classification_metrics(preds, labels, [500, 50, 5], prefix="val")
    assert m["val/acc"] == pytest.approx(5 / 8)
    assert m["val/bal_acc"] == pytest.approx((0.75 + 0.5 + 0.5) / 3)
    assert m["val/acc_many"] == pytest.approx(0.75)
    assert m["val/acc_medium"] == pytest.approx(0.5)
    assert m["val/acc_few"] == pytest.approx(0.5)
    assert m["val/class_acc/c000"] == pytest.approx(0.75)
    assert m["val/class_acc/c002"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in m.values())


def test_classification_metrics_empty_group_and_absent_class_omitted():
    labels = torch.tensor([0, 0, 1])
    preds = torch.tensor([0, 1, 1])
    m = classification_metrics(preds, labels, [500, 400, 30], prefix="test")
    assert "test/acc_few" not in m
    assert "test/acc_medium" not in m  # class 2 is medium but has no test samples
    assert "test/class_acc/c002" not in m
    assert m["test/acc_many"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["test/bal_acc"] == pytest.approx(0.75)


def test_class_key():
    assert class_key(7) == "c007" and class_key(123) == "c123"


# ---------------------------------------------------------------- KL, Spearman, per-class means


def test_kl_divergence_values():
    log_p = torch.log(torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    log_q = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]]))
    kl = kl_divergence(log_p, log_q)
    expected0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    torch.testing.assert_close(kl, torch.tensor([expected0, math.log(2.0)]))
    assert kl_divergence(log_q, log_q).abs().max() == 0


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, -7]) == pytest.approx(-1.0)
    # ties: x ranks [1, 2.5, 2.5, 4], y ranks [1, 2, 3, 4] -> 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(-0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(spearman([1], [2]))


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=30).astype(float)  # many ties
    y = rng.integers(0, 4, size=30).astype(float)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_per_class_means():
    out = per_class_means(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 2, 2]), 3)
    torch.testing.assert_close(out[[0, 2]], torch.tensor([1.5, 3.5]))
    assert math.isnan(out[1].item())


# ---------------------------------------------------------------- measure_invariance


def _linear_model(seed=0, dim=4, classes=3, dropout=0.0):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dim, classes))
    model = nn.Sequential(*layers)
    with torch.no_grad():
        model[-1].weight.mul_(5.0)
    return model


def _images(n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 2, 2, generator=g)


def _preprocess(x):
    return (x - 0.5) / 0.25


def _manual_ekld(model, images, labels, f, num_classes):
    """Per-class eKLD and consistency for a deterministic transform f, computed image by image in numpy."""
    per_image_kl, per_image_agree = [], []
    with torch.no_grad():
        for x in images:
            p = torch.softmax(model(_preprocess(x[None])), -1)[0].double().numpy()
            q = torch.softmax(model(_preprocess(f(x[None]))), -1)[0].double().numpy()
            per_image_kl.append(float(np.sum(p * np.log(p / q))))
            per_image_agree.append(float(p.argmax() == q.argmax()))
    labels = labels.tolist()
    ekld = {c: np.mean([k for k, y in zip(per_image_kl, labels) if y == c]) for c in set(labels)}
    cons = {c: np.mean([a for a, y in zip(per_image_agree, labels) if y == c]) for c in set(labels)}
    return ekld, cons


def test_identity_transform_gives_zero_ekld_and_full_consistency():
    model = _linear_model(dropout=0.5)  # dropout: only eval mode makes repeated passes agree
    model.train()
    images, labels = _images(6), torch.tensor([0, 0, 1, 1, 2, 2])
    out = measure_invariance(model, images, labels, lambda x: x.clone(), _preprocess, n_transforms=3,
                             num_classes=3, class_counts=[500, 50, 5], batch_size=4)
    assert model.training  # mode restored
    for c in range(3):
        assert out[f"inv/ekld/{class_key(c)}"] == pytest.approx(0.0, abs=1e-6)
        assert out[f"inv/consistency/{class_key(c)}"] == 1.0
    assert out["inv/ekld_mean"] == pytest.approx(0.0, abs=1e-6)
    assert out["inv/consistency_mean"] == 1.0
    model.eval()
    measure_invariance(model, images, labels, lambda x: x, _preprocess, 2, 3, [500, 50, 5])
    assert not model.training


class _Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_constant_model_is_invariant_to_any_transform():
    gen = torch.Generator().manual_seed(0)
    out = measure_invariance(_Constant(), _images(6), torch.tensor([0, 1, 2, 0, 1, 2]),
                             lambda x: torch.rand(x.shape, generator=gen), _preprocess, n_transforms=5,
                             num_classes=3, class_counts=[500, 50, 5], batch_size=7)
    assert out["inv/ekld_mean"] == pytest.approx(0.0, abs=1e-7)
    assert out["inv/consistency_mean"] == 1.0


def test_hand_computed_ekld_linear_model_negation():
    model = _linear_model(seed=3)
    images, labels = _images(5, seed=2), torch.tensor([0, 0, 1, 2, 2])
    negate = lambda x: 1.0 - x  # noqa: E731 - flips the sign of the preprocessed input
    counts = [500, 50, 5]
    out = measure_invariance(model, images, labels, negate, _preprocess, n_transforms=3, num_classes=3,
                             class_counts=counts, batch_size=4)
    ekld, cons = _manual_ekld(model, images, labels, negate, 3)
    assert max(ekld.values()) > 0.1  # the test is not trivial
    for c in range(3):
        assert out[f"inv/ekld/{class_key(c)}"] == pytest.approx(ekld[c], rel=1e-4)
        assert out[f"inv/consistency/{class_key(c)}"] == pytest.approx(cons[c])
    assert out["inv/ekld_many"] == pytest.approx(ekld[0], rel=1e-4)
    assert out["inv/ekld_medium"] == pytest.approx(ekld[1], rel=1e-4)
    assert out["inv/ekld_few"] == pytest.approx(ekld[2], rel=1e-4)
    assert out["inv/consistency_few"] == pytest.approx(cons[2])
    assert out["inv/ekld_mean"] == pytest.approx(np.mean(list(ekld.values())), rel=1e-4)
    assert out["inv/ekld_size_spearman"] == pytest.approx(spearman(counts, [ekld[c] for c in range(3)]))


def test_each_transformed_image_is_paired_with_its_own_original():
    # Images with very different predictions and an image-dependent transform that is nearly the identity
    # for every image: correct pairing gives a tiny eKLD; comparing x' with another image's x gives a large one.
    model = _linear_model(seed=4)
    images = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)])
    images[:, :, 0, 0] = 1.0 - images[:, :, 0, 0]
    labels = torch.zeros(5, dtype=torch.long)
    shrink = lambda x: 0.5 + 0.9 * (x - 0.5)  # noqa: E731 - depends on x itself
    out = measure_invariance(model, images, labels, shrink, _preprocess, n_transforms=4, num_classes=3,
                             class_counts=[500, 50, 5], batch_size=3)
    ekld, _ = _manual_ekld(model, images, labels, shrink, 3)
    assert out["inv/ekld/c000"] == pytest.approx(ekld[0], rel=1e-3)
    assert out["inv/ekld/c000"] < 0.05
    with torch.no_grad():  # what mixing images would give: KL between different images' predictions
        logp = torch.log_softmax(model(_preprocess(images)), -1)
        mixed = kl_divergence(logp, logp.roll(1, 0)).mean().item()
    assert mixed > 20 * out["inv/ekld/c000"]
    assert set(k for k in out if "/ekld/" in k) == {"inv/ekld/c000"}  # classes without images left out
    assert math.isnan(out["inv/ekld_size_spearman"])  # one class: undefined


def test_invariance_prefix_and_random_transform_consistency_range():
    model = _linear_model(seed=5)
    gen = torch.Generator().manual_seed(1)
    noisy = lambda x: (x + 0.3 * torch.randn(x.shape, generator=gen)).clamp(0, 1)  # noqa: E731
    out = measure_invariance(model, _images(8, seed=6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]), noisy,
                             _preprocess, n_transforms=6, num_classes=3, class_counts=[500, 50, 5],
                             batch_size=16, prefix="inv_true")
    assert all(k.startswith("inv_true/") for k in out)
    assert 0.0 <= out["inv_true/consistency_mean"] <= 1.0
    assert out["inv_true/ekld_mean"] > 0


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_metrics_on_device(device):
    from gitune.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_channels=3).to(device)
    images = torch.rand(6, 3, 16, 16, device=device)
    labels = torch.tensor([0, 1, 2, 0, 1, 2], device=device)
    out = measure_invariance(model, images, labels, lambda x: x.flip(-1), lambda x: (x - 0.5) / 0.25, 2, 3,
                             [500, 50, 5], batch_size=5)
    assert out["inv/ekld_mean"] >= 0 and 0 <= out["inv/consistency_mean"] <= 1
    m = classification_metrics(model(images).argmax(1), labels, [500, 50, 5], prefix="val")
    assert 0.0 <= m["val/acc"] <= 1.0 and len([k for k in m if "/class_acc/" in k]) == 3
