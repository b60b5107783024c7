import numpy as np
import pytest
import torch

from gitune.data.dataset import LongTailData, build_dataset
from gitune.data.profiles import class_counts
from gitune.config import DEFAULTS
from gitune.errors import UserError


def data_cfg(**kw):
    """The trial's data config (every key, as the trainable gets it), small and offline."""
    return {**DEFAULTS["data"], "name": "glyphs", "download": False, "ratio": 10.0, "val_per_class": 5,
            "test_per_class": 4, "nuisance": {}, **kw}


SIZES = [60, 40, 30, 20]


def _id_npz(tmp_path, with_test=False, name="ids.npz"):
    """Images whose first two pixels encode a unique id, classes interleaved in a shuffled order."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(SIZES)])
    labels = labels[np.random.default_rng(1).permutation(len(labels))].astype(np.int64)
    n = len(labels)
    images = np.random.default_rng(2).integers(1, 256, (n, 16, 16), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) // 256, np.arange(n) % 256
    arrays = {"images": images, "labels": labels}
    if with_test:
        t = np.zeros((8, 16, 16), np.uint8)
        t[:, 0, 0] = 200  # ids 51200+ never occur in train
        t[:, 0, 1] = np.arange(8)
        arrays.update(test_images=t, test_labels=np.arange(8) % 4)
    p = tmp_path / name
    np.savez(p, **arrays)
    return str(p), labels


def _ids(split):
    return (split.images[:, 0, 0, 0].long() * 256 + split.images[:, 0, 0, 1].long()).tolist()


def test_npz_splits_disjoint_first_n_and_heldout(tmp_path):
    path, labels = _id_npz(tmp_path)
    data = build_dataset(data_cfg(name="npz", path=path))
    assert isinstance(data, LongTailData) and data.image_shape == (1, 16, 16)
    tr, va, te = set(_ids(data.train)), set(_ids(data.val)), set(_ids(data.test))
    assert len(tr) == len(data.train) and not (tr & va) and not (tr & te) and not (va & te)
    assert torch.bincount(data.val.labels).tolist() == [5] * 4
    assert torch.bincount(data.test.labels).tolist() == [4] * 4
    # n_max = largest available class after the test hold-out (60 − 4); head class gives 5 to val
    target = class_counts("exp", 4, 56, ratio=10)
    avail = [s - 4 for s in SIZES]
    expected = [min(t, a) if a - min(t, a) >= 5 else a - 5 for t, a in zip(target, avail)]
    assert data.class_counts == expected == torch.bincount(data.train.labels).tolist()
    for c in range(4):
        source_order = [i for i in np.nonzero(labels == c)[0].tolist() if i not in te]
        train_c = [i for i, y in zip(_ids(data.train), data.train.labels.tolist()) if y == c]
        assert train_c == source_order[:expected[c]]  # the first n_c images, in source order
        val_c = [i for i, y in zip(_ids(data.val), data.val.labels.tolist()) if y == c]
        assert set(val_c) <= set(source_order[expected[c]:])
    assert data.natural is False and data.nuisance == {}
    assert len(data.mean) == 1 and 0 < data.mean[0] < 1 and 0 < data.std[0] < 1


def test_npz_source_test_set_and_seeds(tmp_path):
    path, _ = _id_npz(tmp_path, with_test=True)
    a = build_dataset(data_cfg(name="npz", path=path, n_max=30, seed=1))
    assert _ids(a.test) == [200 * 256 + i for i in range(8)]
    assert a.class_counts == class_counts("exp", 4, 30, ratio=10)
    b = build_dataset(data_cfg(name="npz", path=path, n_max=30, seed=1))
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.images, b.train.images)
    c = build_dataset(data_cfg(name="npz", path=path, n_max=30, seed=2))
    assert torch.equal(a.train.images, c.train.images) and _ids(a.val) != _ids(c.val)


def test_npz_zipf_instances_and_nuisance(tmp_path):
    path, _ = _id_npz(tmp_path)
    counts = {i: build_dataset(data_cfg(name="npz", path=path, profile="zipf", n_max=15,
                                             val_per_class=1, instance=i)).class_counts
              for i in range(4)}
    assert all(sorted(v, reverse=True) == sorted(counts[0], reverse=True) for v in counts.values())
    assert len({tuple(v) for v in counts.values()}) > 1
    plain = build_dataset(data_cfg(name="npz", path=path))
    rot = build_dataset(data_cfg(name="npz", path=path, nuisance={"rotation": 180}))
    assert rot.nuisance == {"rotation": 180.0}
    assert rot.train.images.shape == plain.train.images.shape
    assert not torch.equal(rot.train.images, plain.train.images)
    assert torch.equal(rot.train.labels, plain.train.labels)


def test_npz_class_too_small(tmp_path):
    path, _ = _id_npz(tmp_path)
    with pytest.raises(UserError, match="data.test_per_class"):
        build_dataset(data_cfg(name="npz", path=path, test_per_class=10, val_per_class=10))
    path, _ = _id_npz(tmp_path, with_test=True, name="t.npz")
    with pytest.raises(UserError, match="data.val_per_class: class '3' has 20 usable images"):
        build_dataset(data_cfg(name="npz", path=path, val_per_class=20))


def test_glyphs_long_tail():
    cfg = data_cfg(n_max=40, num_classes=5, image_size=20, ratio=8.0, nuisance={"rotation": 180})
    data = build_dataset(cfg)
    assert data.class_counts == class_counts("exp", 5, 40, ratio=8.0)
    assert torch.bincount(data.val.labels).tolist() == [5] * 5
    assert torch.bincount(data.test.labels).tolist() == [4] * 5
    assert data.image_shape == (1, 20, 20) and data.train.images.dtype == torch.uint8
    assert data.natural is False and data.nuisance == {"rotation": 180.0} and len(data.class_names) == 5
    keys = [{bytes(img.numpy()) for img in s.images} for s in (data.train, data.val, data.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    again = build_dataset(cfg)
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.test.images, data.test.images)
    # the test set does not depend on the profile
    other = build_dataset({**cfg, "profile": "step"})
    assert torch.equal(other.test.images, data.test.images)


def test_glyphs_zipf_and_channels():
    data = build_dataset(data_cfg(profile="zipf", n_max=30, num_classes=6, channels=3, instance=2))
    assert sorted(data.class_counts, reverse=True) == class_counts("zipf", 6, 30)
    assert data.image_shape == (3, 28, 28) and len(data.mean) == 3
