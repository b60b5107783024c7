"""`data.name: torchvision`: any torchvision.datasets class as a long-tail source.

No network here: the tests write real files in torchvision's own on-disk formats (MNIST-family idx files,
QMNIST's idx2-int labels, CIFAR pickles, SVHN .mat, GTSRB .ppm folders) and load them through the
installed torchvision classes. Only md5 checks are bypassed where a class insists on the published
checksums. Tiny in-test classes cover the generic paths (no split, odd items, downloads).
"""

import csv
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset

from gitune.config import DEFAULTS
from gitune.data.dataset import build_dataset, target_counts
from gitune.data.sources import check_source, load_source
from gitune.errors import UserError


def tv_cfg(root, dataset="KMNIST", **kw):
    return {**DEFAULTS["data"], "name": "torchvision", "dataset": dataset, "root": str(root), "download": False,
            "val_per_class": 5, "test_per_class": 5, "nuisance": {}, **kw}


def write_idx(path, arr):
    """An IDX file (big-endian header; uint8 or int32 payload), as the MNIST family ships them, uncompressed."""
    arr = np.asarray(arr)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[arr.dtype]
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    payload = arr.astype(">i4").tobytes() if code == 0x0C else arr.tobytes()
    path.write_bytes(header + payload)


def mnist_like(n, k, size=12, seed=0, first_label=0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(first_label, first_label + k), n // k)).astype(np.uint8)
    return rng.integers(0, 256, (len(labels), size, size), dtype=np.uint8), labels


def write_mnist_family(root, cls_name="KMNIST", per_class=60, test_per_class=10, k=10, seed=0):
    raw = root / cls_name / "raw"
    xtr, ytr = mnist_like(per_class * k, k, seed=seed)
    xte, yte = mnist_like(test_per_class * k, k, seed=seed + 1)
    write_idx(raw / "train-images-idx3-ubyte", xtr)
    write_idx(raw / "train-labels-idx1-ubyte", ytr)
    write_idx(raw / "t10k-images-idx3-ubyte", xte)
    write_idx(raw / "t10k-labels-idx1-ubyte", yte)
    return xtr, ytr, xte, yte


def assert_one_line(err, *parts):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------- MNIST family


@pytest.mark.parametrize("cls_name", ["MNIST", "FashionMNIST", "KMNIST"])
def test_mnist_family_exact_pixels_and_labels(tmp_path, cls_name):
    xtr, ytr, xte, yte = write_mnist_family(tmp_path, cls_name)
    cfg = tv_cfg(tmp_path, cls_name)
    check_source(cfg)
    raw = load_source(cfg)
    assert raw.train_images.dtype == torch.uint8 and raw.train_images.shape == (600, 1, 12, 12)
    assert torch.equal(raw.train_images[:, 0], torch.from_numpy(xtr))
    assert raw.train_labels.dtype == torch.int64 and raw.train_labels.tolist() == ytr.tolist()
    assert torch.equal(raw.test_images[:, 0], torch.from_numpy(xte)) and raw.test_labels.tolist() == yte.tolist()
    assert raw.num_classes == 10 and raw.class_names == list(getattr(torchvision.datasets, cls_name).classes)
    assert raw.natural is False


def test_kmnist_zipf_long_tail(tmp_path):
    xtr, ytr, _, _ = write_mnist_family(tmp_path)
    cfg = tv_cfg(tmp_path, profile="zipf", alpha=1.0, n_max=40, instance=3)
    data = build_dataset(cfg)
    expected = target_counts(cfg, 10, 40)
    assert sorted(expected) != expected  # instance 3 puts the head class somewhere other than class 0
    assert data.class_counts == expected
    assert torch.bincount(data.train.labels, minlength=10).tolist() == expected
    assert len(data.val) == 50 and len(data.test) == 100 and data.image_shape == (1, 12, 12)
    assert data.class_names[0] == "o" and data.natural is False
    for c in (int(np.argmax(expected)), int(np.argmin(expected))):  # each class keeps its first n_c images
        first = xtr[np.flatnonzero(ytr == c)[:expected[c]]]
        assert torch.equal(data.train.images[data.train.labels == c][:, 0], torch.from_numpy(first))


def test_channels_and_image_size(tmp_path):
    write_mnist_family(tmp_path, "FashionMNIST")
    grey = load_source(tv_cfg(tmp_path, "FashionMNIST", image_size=16))
    assert grey.train_images.shape == (600, 1, 16, 16) and grey.test_images.shape == (100, 1, 16, 16)
    rgb = load_source(tv_cfg(tmp_path, "FashionMNIST", image_size=16, channels=3))
    assert rgb.train_images.shape == (600, 3, 16, 16) and rgb.test_images.shape == (100, 3, 16, 16)
    assert all(torch.equal(rgb.train_images[:, c], grey.train_images[:, 0]) for c in range(3))
    assert rgb.natural is False  # natural follows the dataset's own channels, not the conversion
    assert load_source(tv_cfg(tmp_path, "FashionMNIST", channels=3, natural=True)).natural is True


# ---------------------------------------------------------------------------------------------- EMNIST, QMNIST


def write_emnist(root, split, k, first_label=0, per_class=4):
    raw = root / "EMNIST" / "raw"
    for part, seed in (("train", 0), ("test", 1)):
        x, y = mnist_like(per_class * k, k, size=10, seed=seed, first_label=first_label)
        write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte", x)
        write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte", y)


def test_emnist_subset(tmp_path):
    with pytest.raises(UserError) as err:  # subset is checked before any file access
        check_source(tv_cfg(tmp_path / "nothing", "EMNIST"))
    assert_one_line(err, "data.subset: required", "EMNIST", "balanced", "byclass")
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "EMNIST", subset="nope"))
    assert_one_line(err, "data.subset: 'nope'", "balanced")
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "EMNIST", subset="balanced"))
    assert_one_line(err, f"data.root: no EMNIST files under {tmp_path}", "data.download")

    write_emnist(tmp_path, "balanced", 47)
    raw = load_source(tv_cfg(tmp_path, "EMNIST", subset="balanced"))
    assert raw.num_classes == 47 and raw.class_names[:3] == ["0", "1", "2"] and raw.class_names[-1] == "t"
    assert raw.train_images.shape == (188, 1, 10, 10) and raw.test_images.shape == (188, 1, 10, 10)


def test_emnist_letters_drops_the_empty_class(tmp_path):
    write_emnist(tmp_path, "letters", 26, first_label=1)  # labels 1..26; class 0 is 'N/A'
    raw = load_source(tv_cfg(tmp_path, "EMNIST", subset="letters"))
    assert raw.num_classes == 26 and raw.class_names[0] == "a" and raw.class_names[-1] == "z"
    assert raw.train_labels.min() == 0 and raw.train_labels.max() == 25 and raw.test_labels.max() == 25


def test_qmnist_two_column_targets_are_iterated(tmp_path):
    raw_dir = tmp_path / "QMNIST" / "raw"
    expect = {}
    for part, seed in (("train", 0), ("test", 1)):
        x, y = mnist_like(50, 10, seed=seed)
        extra = np.zeros((len(y), 8), np.int32)
        extra[:, 0] = y
        extra[:, 1] = 7  # other QMNIST columns (writer id etc.) must not leak into the labels
        write_idx(raw_dir / f"qmnist-{part}-images-idx3-ubyte", x)
        write_idx(raw_dir / f"qmnist-{part}-labels-idx2-int", extra)
        expect[part] = (x, y)
    raw = load_source(tv_cfg(tmp_path, "QMNIST"))
    assert torch.equal(raw.train_images[:, 0], torch.from_numpy(expect["train"][0]))
    assert raw.train_labels.tolist() == expect["train"][1].tolist()
    assert raw.test_labels.tolist() == expect["test"][1].tolist() and raw.num_classes == 10


# ---------------------------------------------------------------------------------------------- colour sources


def test_cifar10_and_svhn_array_layouts(tmp_path, monkeypatch):
    from scipy.io import savemat

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda *a, **k: True)
    rng = np.random.default_rng(0)

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    ytr = np.repeat(np.arange(10), 3)
    xtr = rng.integers(0, 256, (30, 3072), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(30), 5)):
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": xtr[part], "labels": ytr[part].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": xtr[:10], "labels": ytr[:10].tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"name{i}" for i in range(10)]}, f)
    raw = load_source(tv_cfg(tmp_path, "CIFAR10"))
    assert torch.equal(raw.train_images, torch.from_numpy(xtr.reshape(30, 3, 32, 32)))
    assert raw.class_names[4] == "name4" and raw.natural is True and raw.test_images.shape == (10, 3, 32, 32)
    grey = load_source(tv_cfg(tmp_path, "CIFAR10", channels=1, natural=False))
    assert grey.train_images.shape == (30, 1, 32, 32) and grey.natural is False

    for split, n in (("train", 20), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's H×W×C×N, digit 0 stored as 10
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
        savemat(str(tmp_path / f"{split}_32x32.mat"), {"X": x, "y": y})
        if split == "train":
            xs, ys = x, y
    raw = load_source(tv_cfg(tmp_path, "SVHN"))
    assert torch.equal(raw.train_images, torch.from_numpy(xs).permute(3, 2, 0, 1))
    assert raw.train_labels.tolist() == [v % 10 for v in ys[:, 0].tolist()]
    assert raw.num_classes == 10 and raw.class_names == [str(i) for i in range(10)] and raw.natural is True


def test_gtsrb_varying_sizes_need_image_size(tmp_path):
    base = tmp_path / "gtsrb"
    rng = np.random.default_rng(0)
    for c in range(3):
        d = base / "GTSRB" / "Training" / f"{c:05d}"
        d.mkdir(parents=True)
        for i in range(4):
            size = (20 + i + c, 24 - i)
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(d / f"{i}.ppm")
    test_dir = base / "GTSRB" / "Final_Test" / "Images"
    test_dir.mkdir(parents=True)
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow(["Filename", "ClassId"])
        for i in range(6):
            Image.new("RGB", (30, 31), (i * 40, 0, 0)).save(test_dir / f"{i:05d}.ppm")
            w.writerow([f"{i:05d}.ppm", i % 3])
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "GTSRB"))
    assert_one_line(err, "data.dataset: GTSRB", "train item 1", "set data.image_size")
    raw = load_source(tv_cfg(tmp_path, "GTSRB", image_size=16))
    assert raw.train_images.shape == (12, 3, 16, 16) and raw.test_images.shape == (6, 3, 16, 16)
    assert raw.train_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and raw.test_labels.tolist() == [0, 1, 2] * 2
    assert raw.class_names == ["0", "1", "2"] and raw.natural is True
    assert raw.test_images[1, :, 5, 5].tolist() == [40, 0, 0]


# ---------------------------------------------------------------------------------------------- errors


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(UserError) as err:
        check_source(tv_cfg(tmp_path, "Foo"))
    assert_one_line(err, "data.dataset: 'Foo' is not a torchvision dataset", "KMNIST")
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "kmnist"))
    assert_one_line(err, "data.dataset: 'kmnist'", "did you mean 'KMNIST'")
    with pytest.raises(UserError) as err:
        build_dataset(tv_cfg(tmp_path, None))
    assert_one_line(err, "data.dataset: required when data.name is torchvision")
    with pytest.raises(UserError) as err:  # the key's own check (gitune.config), as the spec checks say it
        build_dataset(tv_cfg(tmp_path, ""))
    assert_one_line(err, "data.dataset: expected a non-empty string (or null), got ''")
    with pytest.raises(UserError) as err:
        check_source(tv_cfg(tmp_path, "KMNIST", subset="balanced"))
    assert_one_line(err, "data.subset: 'balanced'", "KMNIST has no subsets")
    with pytest.raises(UserError) as err:
        check_source(tv_cfg(tmp_path, "CocoDetection"))
    assert_one_line(err, "data.dataset: CocoDetection needs constructor arguments", "annFile")


def test_missing_files_without_download(tmp_path):
    root = tmp_path / "empty"
    for fn in (check_source, load_source):
        with pytest.raises(UserError) as err:
            fn(tv_cfg(root, "KMNIST"))
        msg = assert_one_line(err, f"data.root: no KMNIST files under {root}", "data.download: true")
        assert msg.startswith("data.root:")


class _Arrays(Dataset):
    """An array-backed dataset like MNIST; the test sets the arrays on the class."""

    data = torch.zeros(0, 4, 4, dtype=torch.uint8)
    targets = torch.zeros(0, dtype=torch.int64)

    def __init__(self, root, train=True, download=False):
        self.train = train

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i].numpy(), mode="L"), int(self.targets[i])


class _Items(Dataset):
    """No arrays and no split: items only (the test sets `items`)."""

    items = []

    def __init__(self, root, download=False):
        pass

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Raising(Dataset):
    def __init__(self, root, split="train"):
        raise RuntimeError("bad annotation\nfile")


def test_generic_classes_and_item_errors(tmp_path, monkeypatch):
    for cls in (_Arrays, _Items, _Raising):
        monkeypatch.setattr(torchvision.datasets, cls.__name__, cls, raising=False)

    monkeypatch.setattr(_Arrays, "data", torch.zeros(0, 4, 4, dtype=torch.uint8))
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "_Arrays"))
    assert_one_line(err, "not a torchvision dataset")  # private names are refused

    monkeypatch.setattr(torchvision.datasets, "Arrays", _Arrays, raising=False)
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "Arrays"))
    assert_one_line(err, "data.dataset: Arrays", "train split is empty")
    monkeypatch.setattr(_Arrays, "data", torch.arange(6 * 16, dtype=torch.uint8).view(6, 4, 4))
    monkeypatch.setattr(_Arrays, "targets", torch.tensor([0, 1, 2, 0, 1, 9]))
    raw = load_source(tv_cfg(tmp_path, "Arrays"))  # no class list: labels without images are dropped
    assert raw.num_classes == 4 and raw.class_names == ["0", "1", "2", "9"]
    assert raw.train_labels.tolist() == [0, 1, 2, 0, 1, 3] and raw.test_labels.tolist() == [0, 1, 2, 0, 1, 3]
    assert torch.equal(raw.train_images[:, 0], _Arrays.data)
    monkeypatch.setattr(_Arrays, "classes", ["a", "b", "c"], raising=False)
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "Arrays"))
    assert_one_line(err, "data.dataset: Arrays", "train label 9 is out of range", "0..2")
    monkeypatch.setattr(_Arrays, "targets", torch.tensor([0, 1, 2, 0, 1, -1]))
    with pytest.raises(UserError) as err:
        load_source(tv_cfg(tmp_path, "Arrays"))
    assert_one_line(err, "label -1 is negative")

    monkeypatch.setattr(torchvision.datasets, "Items", _Items, raising=False)
    rng = np.random.default_rng(0)
    good = [(Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)), i % 2) for i in range(6)]
    good[2] = (torch.from_numpy(np.asarray(good[2][0])).permute(2, 0, 1), torch.tensor(0))  # C×H×W tensor
    monkeypatch.setattr(_Items, "items", good)
    raw = load_source(tv_cfg(tmp_path, "Items"))  # no split: test is held out later by build_dataset
    assert raw.test_images is None and raw.train_images.shape == (6, 3, 5, 6) and raw.num_classes == 2
    assert raw.train_labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.equal(raw.train_images[0].permute(1, 2, 0), torch.from_numpy(np.asarray(good[0][0])))
    cases = [
        ((torch.zeros(1, 1, 5, 6, dtype=torch.uint8), 0), "4 dims"),
        ((np.zeros((5, 6), np.float32), 0), "dtype float32"),
        ((good[0][0], "cat"), "expected an integer class index"),
        ((good[0][0], {"boxes": []}), "expected an integer class index"),
        (("not an image", 0), "expected a PIL image"),
    ]
    for item, expected in cases:
        monkeypatch.setattr(_Items, "items", good[:3] + [item] + good[4:])
        with pytest.raises(UserError) as err:
            load_source(tv_cfg(tmp_path, "Items"))
        assert_one_line(err, "data.dataset: Items", "train item 3", expected)

    monkeypatch.setattr(torchvision.datasets, "Raising", _Raising, raising=False)
    with pytest.raises(UserError) as err:
        check_source(tv_cfg(tmp_path, "Raising"))
    assert_one_line(err, "data.dataset: Raising", f"data.root: {tmp_path}", "bad annotation file")


class _Downloadable(Dataset):
    """Fetches its one file only when asked (the download is recorded, not performed over a network)."""

    calls = []

    def __init__(self, root, train=True, download=False):
        path = f"{root}/dl-{'train' if train else 'test'}.npy"
        if download:
            _Downloadable.calls.append(train)
            np.save(path, np.full((4, 3, 3), 7 if train else 9, np.uint8))
        try:
            self.data = torch.from_numpy(np.load(path))
        except FileNotFoundError:
            raise RuntimeError("Dataset not found. You can use download=True to download it") from None
        self.targets = torch.tensor([0, 1, 0, 1])

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i].numpy(), mode="L"), int(self.targets[i])


def test_preflight_downloads_once(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "Downloadable", _Downloadable, raising=False)
    monkeypatch.setattr(_Downloadable, "calls", [])
    with pytest.raises(UserError) as err:
        check_source(tv_cfg(tmp_path, "Downloadable", download=False))
    assert_one_line(err, f"data.root: no Downloadable files under {tmp_path}")
    check_source(tv_cfg(tmp_path, "Downloadable", download=True))
    assert _Downloadable.calls == [True, False]  # each split fetched once, on the driver
    raw = load_source(tv_cfg(tmp_path, "Downloadable", download=True))
    assert _Downloadable.calls == [True, False]  # trials find the files and do not download again
    assert raw.train_images.unique().tolist() == [7] and raw.test_images.unique().tolist() == [9]
