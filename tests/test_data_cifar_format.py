"""CIFAR-10 in its real on-disk format (cifar-10-batches-py pickles), loaded through torchvision.

The files are written by the test (no network here); only torchvision's md5 check is bypassed, since
synthetic files cannot match the published checksums.
"""

import pickle

import numpy as np
import pytest
import torchvision

from gitune.config import DEFAULTS
from gitune.data.dataset import build_dataset
from gitune.data.sources import check_source


def write_cifar10(root, per_class_train=30, per_class_test=4, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_labels = rng.permutation(np.repeat(np.arange(10), per_class_train))
    train_data = rng.integers(0, 256, (len(train_labels), 3072), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(len(train_labels)), 5)):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": train_data[part], "labels": train_labels[part].tolist()}, f)
    test_labels = np.repeat(np.arange(10), per_class_test)
    test_data = rng.integers(0, 256, (len(test_labels), 3072), dtype=np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": test_data, "labels": test_labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"name{i}" for i in range(10)]}, f)
    return train_data, train_labels


@pytest.fixture
def no_md5(monkeypatch):
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)


def test_cifar10_long_tail_from_real_format(tmp_path, no_md5):
    train_data, train_labels = write_cifar10(tmp_path)
    cfg = {**DEFAULTS["data"], "name": "cifar10", "root": str(tmp_path), "download": False, "n_max": 30,
           "ratio": 10, "val_per_class": 5}
    check_source(cfg)
    data = build_dataset(cfg)
    assert data.natural and data.num_classes == 10 and data.class_names[3] == "name3"
    assert data.train.images.shape[1:] == (3, 32, 32)
    # exp profile 30 → 3; the head class has no unused images, so its 5 validation images come off its 30
    assert data.class_counts[0] == 25 and data.class_counts[-1] == 3
    assert len(data.val) == 50 and len(data.test) == 40
    # training keeps the FIRST images of each class, pixel for pixel (CHW from the row-major 3072 layout)
    first0 = train_data[np.flatnonzero(train_labels == 0)[0]].reshape(3, 32, 32)
    idx0 = (data.train.labels == 0).nonzero().flatten()
    assert any(np.array_equal(data.train.images[i].numpy(), first0) for i in idx0[:1])
