"""Softmax / latent G-EED and the representational invariance ratio (gitune.metrics.geed), on known answers."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gitune.metrics import (PENULTIMATE, class_key, derangement, latent_geed, measure_extra_invariance,
                            representation_ratio, softmax_geed, spearman)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- tiny models and transforms


class _GlobalPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class PoolNet(nn.Module):
    """1x1 conv -> ReLU -> global average pool -> linear: exactly invariant to 90° rotations and flips
    (the conv is pointwise, so it commutes with any permutation of pixels, and the pool forgets order)."""

    def __init__(self, in_ch=2, width=6, dim=5, classes=4, seed=0, dropout=0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(in_ch, width, 1), nn.ReLU())
        self.pool = _GlobalPool()
        self.proj = nn.Sequential(nn.Linear(width, dim), nn.Tanh(), nn.Dropout(dropout))
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            self.head.weight.mul_(5.0)

    def features(self, x):
        return self.proj(self.pool(self.body(x)))

    def forward(self, x):
        return self.head(self.features(x))


class ConvNet(nn.Module):
    """3x3 conv -> ReLU -> flatten -> linear -> tanh: sees pixel positions, so not invariant to rotations."""

    def __init__(self, in_ch=2, side=4, dim=6, classes=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(in_ch, 3, 3, padding=1), nn.ReLU())
        self.proj = nn.Sequential(nn.Flatten(), nn.Linear(3 * side * side, dim), nn.Tanh())
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            self.head.weight.mul_(5.0)

    def features(self, x):
        return self.proj(self.body(x))

    def forward(self, x):
        return self.head(self.features(x))


class NoiseFeatures(nn.Module):
    """Features are fresh Gaussian noise, independent of the input: no identity survives."""

    def __init__(self, dim=16, classes=3, seed=0):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.head = nn.Linear(dim, classes)

    def features(self, x):
        return torch.randn(x.shape[0], self.dim, generator=self.gen)

    def forward(self, x):
        return self.head(self.features(x))


def _preprocess(x):
    return (x - 0.5) / 0.25


def _rot_flip(seed):
    gen = torch.Generator().manual_seed(seed)

    def transform(x):
        ks = torch.randint(0, 4, (x.shape[0],), generator=gen).tolist()
        flips = torch.randint(0, 2, (x.shape[0],), generator=gen).tolist()
        out = torch.empty_like(x)
        for i, (k, f) in enumerate(zip(ks, flips)):
            y = torch.rot90(x[i], k, dims=(-2, -1))
            out[i] = y.flip(-1) if f else y
        return out

    return transform


def _additive_noise(amplitude, seed):
    gen = torch.Generator().manual_seed(seed)
    return lambda x: (x + amplitude * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def _images(n, shape=(2, 4, 4), seed=1):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _measure(model, images, labels, transform, k, counts, **kw):
    return measure_extra_invariance(model, images, labels, transform, _preprocess, k, len(counts), counts, **kw)


# ---------------------------------------------------------------- pure functions, hand-computed


def test_softmax_geed_hand_computed():
    log = math.log
    # K = 2, three images (N = 3), C = 2 or padded to 3 with zeros.
    probs = torch.tensor([[[0.9, 0.1, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]],
                          [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]], dtype=torch.float64)
    got = softmax_geed(probs)
    # image 0: p_bar = [0.7, 0.3]
    e0 = 0.5 * ((0.9 * log(0.9 / 0.7) + 0.1 * log(0.1 / 0.3)) + (0.5 * log(0.5 / 0.7) + 0.5 * log(0.5 / 0.3)))
    # image 1: p_bar = [0.75, 0.25]; the zero entry of p_1 contributes 0
    e1 = 0.5 * (1.0 * log(1.0 / 0.75) + (0.5 * log(0.5 / 0.75) + 0.5 * log(0.5 / 0.25)))
    assert got.tolist() == pytest.approx([e0, e1, 0.0], abs=1e-12)
    assert e0 > 0.05 and e1 > 0.1
    # K = 3 one-hot predictions on three different classes: p_bar uniform, every KL = log 3.
    eye = torch.eye(3, dtype=torch.float64).reshape(3, 1, 3)
    assert softmax_geed(eye).item() == pytest.approx(log(3.0), abs=1e-12)


def test_latent_geed_hand_computed():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # c = (e1 + e2) / 2, cos(e_i, c) = 1/sqrt(2) for both.
    assert latent_geed(torch.stack([e1, e2]).reshape(2, 1, 2)).item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert latent_geed(3 * torch.stack([e1, e2]).reshape(2, 1, 2)).item() == pytest.approx(1 - 1 / math.sqrt(2))
    # Feature maps (K x N x C x H x W) are flattened per row.
    maps = torch.zeros(2, 1, 2, 1, 1)
    maps[0, 0, 0], maps[1, 0, 1] = 1.0, 1.0
    assert latent_geed(maps).item() == pytest.approx(1 - 1 / math.sqrt(2))
    # Identical rows: 0. Zero vectors: cos(0, 0) = 1 -> 0; rows that cancel (c = 0): cos(v, 0) = 0 -> 1.
    same = torch.randn(1, 4, 7, generator=torch.Generator().manual_seed(0)).expand(5, 4, 7)
    assert latent_geed(same).abs().max().item() < 1e-6
    assert latent_geed(torch.zeros(3, 2, 4)).tolist() == [0.0, 0.0]
    assert latent_geed(torch.stack([e1, -e1]).reshape(2, 1, 2)).item() == pytest.approx(1.0)
    # Opposite rows that do not cancel: f = (2, 0), (-1, 0), c = (0.5, 0): cos = 1 and -1 -> mean(0, 2) = 1.
    assert latent_geed(torch.tensor([[[2.0, 0.0]], [[-1.0, 0.0]]])).item() == pytest.approx(1.0)


def test_representation_ratio_hand_computed():
    f1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    f2 = torch.tensor([[3.0, 4.0], [1.0, 1.0]])  # distances 5 and 0
    ref = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert representation_ratio(f1, f2, ref, ref[[1, 0]]).item() == pytest.approx(2.5 / 2.0)
    assert representation_ratio(f1, f1.clone(), ref, ref[[1, 0]]).item() == 0.0


def test_derangement_has_no_fixed_points_and_is_reproducible():
    for n in (2, 3, 7, 50):
        for seed in range(10):
            p = derangement(n, torch.Generator().manual_seed(seed))
            assert sorted(p.tolist()) == list(range(n))
            assert not (p == torch.arange(n)).any()
            assert torch.equal(p, derangement(n, torch.Generator().manual_seed(seed)))
    assert derangement(2).tolist() == [1, 0]
    with pytest.raises(ValueError):
        derangement(1)


# ---------------------------------------------------------------- the entry point


def test_exactly_invariant_model_scores_zero_and_a_non_invariant_one_does_not():
    images, labels, counts = _images(12), torch.arange(12) % 3, [500, 50, 5]
    out = _measure(PoolNet(), images, labels, _rot_flip(0), 4, counts, layer="pool", batch_size=10)
    assert out["inv/geed_mean"] == pytest.approx(0.0, abs=1e-6)
    assert out["inv/latent_geed_mean"] == pytest.approx(0.0, abs=1e-5)
    assert out["inv/rep_dist_same"] == pytest.approx(0.0, abs=1e-5)
    assert out["inv/rep_ratio"] == pytest.approx(0.0, abs=1e-5)
    assert out["inv/rep_dist_diff"] > 0.01  # different images do differ
    # Same model, the layer before the pool: its maps rotate with the input, so they are not invariant.
    body = _measure(PoolNet(), images, labels, _rot_flip(0), 4, counts, layer="body", batch_size=10)
    assert body["inv/latent_geed_mean"] > 1e-2 and body["inv/geed_mean"] == pytest.approx(0.0, abs=1e-6)
    # A model that sees pixel positions is not invariant to the same transform.
    conv = _measure(ConvNet(), images, labels, _rot_flip(0), 4, counts, batch_size=10)
    assert conv["inv/geed_mean"] > 1e-2
    assert conv["inv/latent_geed_mean"] > 1e-3
    assert conv["inv/rep_ratio"] > 0.1
    # ... unless the transform is the identity.
    ident = _measure(ConvNet(), images, labels, lambda x: x.clone(), 4, counts, layer="body", batch_size=10)
    for metric in ("geed_mean", "latent_geed_mean", "rep_ratio"):
        assert ident[f"inv/{metric}"] == pytest.approx(0.0, abs=1e-6)


class _CyclicShift:
    """Deterministic stand-in for T: row r of the whole stream gets nuisance r mod K. With image-major rows
    (the K draws of an image consecutive), draw k of every image is `deltas[k]`, whatever the batching."""

    def __init__(self, deltas):
        self.deltas, self.count = deltas, 0

    def __call__(self, x):
        idx = (torch.arange(x.shape[0]) + self.count) % len(self.deltas)
        self.count += x.shape[0]
        return (x + self.deltas[idx]).clamp(0, 1)


def _manual(model, images, labels, deltas, perm, num_classes):
    """Per-class G-EED, latent G-EED at model.body, and ratio, image by image in float64 numpy."""
    geed, lat, same = [], [], []
    with torch.no_grad():
        phi_clean = model.features(_preprocess(images)).double().numpy()
        for x in images:
            xs = _preprocess((x[None] + deltas).clamp(0, 1))
            p = torch.softmax(model(xs).double(), -1).numpy()
            f = model.body(xs).flatten(1).double().numpy()
            phi = model.features(xs).double().numpy()
            pbar = p.mean(0)
            geed.append(np.mean([np.sum(pk * np.log(pk / pbar)) for pk in p]))
            c = f.mean(0)
            lat.append(np.mean([1 - fk @ c / (np.linalg.norm(fk) * np.linalg.norm(c)) for fk in f]))
            same.append(np.linalg.norm(phi[0] - phi[1]))
    den = np.mean([np.linalg.norm(phi_clean[i] - phi_clean[j]) for i, j in enumerate(perm.tolist())])
    out = {}
    for c in range(num_classes):
        rows = [i for i in range(len(labels)) if labels[i] == c]
        if rows:
            out[c] = (np.mean([geed[i] for i in rows]), np.mean([lat[i] for i in rows]),
                      np.mean([same[i] for i in rows]) / den)
    return out, np.mean(same) / den


@pytest.mark.parametrize("batch_size", [1, 2, 5, 7, 64])
def test_batched_entry_point_matches_image_by_image_computation(batch_size):
    model = ConvNet(seed=3)
    images, labels, counts = _images(7, seed=2), torch.tensor([0, 0, 1, 3, 3, 3, 1]), [500, 50, 5, 8]
    deltas = 0.3 * torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    out = _measure(model, images, labels, _CyclicShift(deltas), 3, counts, layer="body", batch_size=batch_size,
                   generator=torch.Generator().manual_seed(7))
    expected, ratio = _manual(model, images, labels, deltas, derangement(7, torch.Generator().manual_seed(7)), 4)
    assert min(v[0] for v in expected.values()) > 1e-3  # not a trivial case
    for c, (geed, lat, rep) in expected.items():
        assert out[f"inv/geed/{class_key(c)}"] == pytest.approx(geed, rel=1e-4)
        assert out[f"inv/latent_geed/{class_key(c)}"] == pytest.approx(lat, rel=1e-4)
        assert out[f"inv/rep_ratio/{class_key(c)}"] == pytest.approx(rep, rel=1e-4)
    assert out["inv/rep_ratio"] == pytest.approx(ratio, rel=1e-4)
    # The generator decides pi: the same seed repeats the denominator, another seed changes it.
    again = _measure(model, images, labels, _CyclicShift(deltas), 3, counts, generator=torch.Generator().manual_seed(7))
    other = _measure(model, images, labels, _CyclicShift(deltas), 3, counts, generator=torch.Generator().manual_seed(1))
    assert again["inv/rep_dist_diff"] == out["inv/rep_dist_diff"]
    assert abs(other["inv/rep_dist_diff"] - out["inv/rep_dist_diff"]) > 1e-3


def test_keys_follow_present_classes_and_shot_groups():
    images, labels = _images(12, seed=5), torch.tensor([0, 1, 3] * 4)
    counts = [500, 50, 5, 8]  # many, medium, few (absent here), few
    out = _measure(ConvNet(seed=1), images, labels, _additive_noise(0.2, 0), 3, counts, prefix="inv_gen")
    assert all(k.startswith("inv_gen/") for k in out)
    for metric in ("geed", "latent_geed", "rep_ratio"):
        per_class = {k.rsplit("/", 1)[1]: v for k, v in out.items() if k.startswith(f"inv_gen/{metric}/")}
        assert set(per_class) == {"c000", "c001", "c003"}
        assert out[f"inv_gen/{metric}_many"] == per_class["c000"]
        assert out[f"inv_gen/{metric}_medium"] == per_class["c001"]
        assert out[f"inv_gen/{metric}_few"] == per_class["c003"]  # c002 has no images
        assert out[f"inv_gen/{metric}_mean"] == pytest.approx(np.mean(list(per_class.values())))
        assert out[f"inv_gen/{metric}_size_spearman"] == pytest.approx(
            spearman([500, 50, 8], [per_class[c] for c in ("c000", "c001", "c003")]))
        assert all(v > 0 for v in per_class.values())
    # Equal class sizes here and one shared denominator: the class mean of the ratio is the pooled ratio.
    assert out["inv_gen/rep_ratio_mean"] == pytest.approx(out["inv_gen/rep_ratio"], rel=1e-5)
    assert out["inv_gen/rep_ratio"] == pytest.approx(out["inv_gen/rep_dist_same"] / out["inv_gen/rep_dist_diff"])
    # Groups without present classes are left out.
    only_many = _measure(ConvNet(seed=1), images[:4], torch.zeros(4, dtype=torch.long), _additive_noise(0.2, 0), 2,
                         counts)
    assert "inv/geed_many" in only_many and "inv/geed_few" not in only_many and "inv/geed_medium" not in only_many
    assert math.isnan(only_many["inv/geed_size_spearman"])


@pytest.mark.parametrize("reference", ["clean", "transformed"])
def test_ratio_is_about_one_when_features_carry_no_identity(reference):
    n, labels, counts = 300, torch.arange(300) % 3, [500, 50, 5]
    images = _images(n, shape=(1, 3, 3), seed=8)
    # (a) Features are noise drawn independently of the input.
    out = _measure(NoiseFeatures(), images, labels, lambda x: x, 2, counts, ratio_reference=reference,
                   generator=torch.Generator().manual_seed(0))
    assert out["inv/rep_ratio"] == pytest.approx(1.0, abs=0.1)
    # (b) A real model, but the transform replaces every image with fresh noise from the images' distribution.
    gen = torch.Generator().manual_seed(9)
    model = ConvNet(in_ch=1, side=3, seed=2)
    out = _measure(model, images, labels, lambda x: torch.rand(x.shape, generator=gen), 2, counts,
                   ratio_reference=reference, generator=torch.Generator().manual_seed(0))
    assert out["inv/rep_ratio"] == pytest.approx(1.0, abs=0.1)
    # The same model under a small nuisance keeps the identity: ratio well below 1.
    out = _measure(model, images, labels, _additive_noise(0.03, 1), 2, counts, ratio_reference=reference,
                   generator=torch.Generator().manual_seed(0))
    assert out["inv/rep_ratio"] < 0.3


def _label_marked_data(amps, per_class=6, seed=11):
    """Channel 0: random content; channel 1: constant = the nuisance amplitude of the image's class."""
    images = _images(per_class * len(amps), seed=seed)
    labels = torch.arange(len(amps)).repeat_interleave(per_class)
    images[:, 0] = 0.2 + 0.6 * images[:, 0]
    images[:, 1] = torch.tensor(amps)[labels][:, None, None]
    return images, labels


def _marked_noise(seed):
    gen = torch.Generator().manual_seed(seed)

    def transform(x):
        amp = x[:, 1].mean(dim=(1, 2))
        out = x.clone()
        out[:, 0] = (x[:, 0] + amp[:, None, None] * torch.randn(x[:, 0].shape, generator=gen)).clamp(0, 1)
        return out

    return transform


@pytest.mark.parametrize("small_classes_noisier", [True, False])
def test_size_spearman_sign_when_small_classes_are_less_invariant(small_classes_noisier):
    counts = [400, 100, 30, 8]
    amps = [0.0, 0.03, 0.1, 0.3] if small_classes_noisier else [0.3, 0.1, 0.03, 0.0]
    images, labels = _label_marked_data(amps)
    out = _measure(ConvNet(seed=5), images, labels, _marked_noise(0), 4, counts)
    sign = -1.0 if small_classes_noisier else 1.0
    for metric in ("geed", "latent_geed", "rep_ratio"):
        assert out[f"inv/{metric}_size_spearman"] == pytest.approx(sign)
        assert (out[f"inv/{metric}_few"] > out[f"inv/{metric}_many"]) == small_classes_noisier
    quiet = "c000" if small_classes_noisier else "c003"
    assert out[f"inv/geed/{quiet}"] == pytest.approx(0.0, abs=1e-6)


def test_eval_mode_used_and_train_mode_restored():
    # Dropout in the features: in train mode, identical inputs would give different outputs.
    model = PoolNet(dropout=0.5)
    images, labels, counts = _images(6), torch.arange(6) % 3, [500, 50, 5]
    model.train()
    out = _measure(model, images, labels, lambda x: x.clone(), 3, counts, batch_size=4)
    assert model.training
    assert out["inv/geed_mean"] == pytest.approx(0.0, abs=1e-6)  # rounding only; dropout would give > 0.01
    assert out["inv/rep_ratio"] == pytest.approx(0.0, abs=1e-6)
    model.eval()
    _measure(model, images, labels, lambda x: x.clone(), 3, counts, layer="proj.0")
    assert not model.training
    assert not model.body[0]._forward_hooks  # nor any hook left behind
    assert not model.proj[0]._forward_hooks


def test_bad_arguments():
    model, images, labels, counts = PoolNet(), _images(4), torch.arange(4) % 3, [500, 50, 5]
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*'features'.*'body'"):
        _measure(model, images, labels, lambda x: x, 2, counts, layer="layer9")
    with pytest.raises(ValueError, match="unknown layer"):
        _measure(model, images, labels, lambda x: x, 2, counts, layer="")
    with pytest.raises(ValueError, match="n_transforms"):
        _measure(model, images, labels, lambda x: x, 1, counts)
    with pytest.raises(ValueError, match="at least 2 images"):
        _measure(model, images[:1], labels[:1], lambda x: x, 2, counts)
    with pytest.raises(ValueError, match="ratio_reference"):
        _measure(model, images, labels, lambda x: x, 2, counts, ratio_reference="other")
    model.spare = nn.Linear(1, 1)  # a registered module that never runs in features/head
    with pytest.raises(RuntimeError, match="ran 0 times"):
        _measure(model, images, labels, lambda x: x, 2, counts, layer="spare")
    assert not model.spare._forward_hooks
    assert PENULTIMATE == "features"


@pytest.mark.parametrize("device", DEVICES)
def test_real_model_on_device(device):
    from gitune.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, in_channels=3).to(device)
    images = torch.rand(6, 3, 8, 8, device=device)
    labels = torch.tensor([0, 1, 2, 0, 1, 2], device=device)
    noisy = lambda x: (x + 0.1 * torch.randn_like(x)).clamp(0, 1)  # noqa: E731 - draws on the images' device
    out = measure_extra_invariance(model, images, labels, noisy, _preprocess, 3, 3, [500, 50, 5], batch_size=5,
                                   layer="layer2")
    assert all(math.isfinite(v) for v in out.values())
    assert out["inv/latent_geed_mean"] > 0 and out["inv/geed_mean"] > 0 and 0 < out["inv/rep_ratio"] < 1
