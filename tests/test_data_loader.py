import pytest
import torch

from gitune.data.dataset import Split
from gitune.data.loader import DeviceLoader, iterate_in_order


def _split(sizes=(200, 50, 10)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    n = len(labels)
    images = torch.arange(n).view(n, 1, 1, 1).expand(n, 1, 2, 2).remainder(256).to(torch.uint8)
    return Split(images, labels)


def _loader(bs=32, seed=0, **kw):
    return DeviceLoader(_split(**kw), bs, "cpu", torch.Generator(device="cpu").manual_seed(seed))


def test_uniform_covers_every_index_once():
    ld = _loader()
    idx = ld.epoch_indices("uniform")
    assert sorted(idx.tolist()) == list(range(260))
    assert len(ld) == 9  # 260 / 32 → 8 full batches + 1 partial
    batches = list(ld.batches())
    assert len(batches) == 9 and len(batches[-1][0]) == 260 - 8 * 32
    labels = torch.cat([y for _, y in batches])
    assert torch.bincount(labels).tolist() == [200, 50, 10]
    x, y = batches[0]
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.shape[1:] == (1, 2, 2)


def test_balanced_sampler_draws_classes_uniformly():
    ld = _loader(seed=3)
    counts = torch.zeros(3)
    for _ in range(20):
        counts += torch.bincount(ld.labels[ld.epoch_indices("balanced")], minlength=3)
    frac = counts / counts.sum()
    assert ((frac - 1 / 3).abs() < 0.04).all()  # ~5200 draws: sd of a share ≈ 0.0065
    assert len(ld.epoch_indices("balanced")) == 260


def test_same_seed_same_batches_and_bad_sampler():
    a = [y for _, y in _loader(seed=5).batches("balanced")]
    b = [y for _, y in _loader(seed=5).batches("balanced")]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError):
        _loader().epoch_indices("weighted")


def test_iterate_in_order():
    s = _split()
    got = list(iterate_in_order(s.images, s.labels, 100))
    assert [len(y) for _, y in got] == [100, 100, 60]
    assert torch.equal(torch.cat([y for _, y in got]), s.labels)
    assert torch.equal(torch.cat([x for x, _ in got]), s.images)
