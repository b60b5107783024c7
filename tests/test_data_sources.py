import os

import numpy as np
import pytest
import torch
from PIL import Image

from gitune.data.sources import check_source, load_source
from gitune.config import DEFAULTS
from gitune.errors import UserError


def data_cfg(**kw):
    """The trial's data config (every key, as the trainable gets it), small and offline."""
    return {**DEFAULTS["data"], "name": "npz", "download": False, "ratio": 10.0, "val_per_class": 2,
            "test_per_class": 2, "nuisance": {}, **kw}


def _good(n=12, k=3, shape=(8, 8)):
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (n, *shape), dtype=np.uint8),
            "labels": (np.arange(n) % k).astype(np.int64)}


def _write(tmp_path, name="d.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return str(p)


def test_npz_grayscale_and_colour(tmp_path):
    g = _good()
    raw = load_source(data_cfg(path=_write(tmp_path, **g)))
    assert raw.train_images.shape == (12, 1, 8, 8) and raw.train_images.dtype == torch.uint8
    assert torch.equal(raw.train_images[:, 0], torch.from_numpy(g["images"]))
    assert raw.num_classes == 3 and raw.class_names == ["0", "1", "2"]
    assert raw.test_images is None and raw.natural is False
    c = _good(shape=(8, 8, 3))
    c["class_names"] = np.array(["cat", "dog", "eel"])
    c["test_images"], c["test_labels"] = c["images"][:4], np.array([0, 1, 2, 2], dtype=np.int32)
    raw = load_source(data_cfg(path=_write(tmp_path, "c.npz", **c)))
    assert raw.train_images.shape == (12, 3, 8, 8)
    assert torch.equal(raw.train_images[5].permute(1, 2, 0), torch.from_numpy(c["images"][5]))
    assert raw.class_names == ["cat", "dog", "eel"] and raw.natural is True
    assert raw.test_labels.tolist() == [0, 1, 2, 2] and raw.test_labels.dtype == torch.int64
    raw = load_source(data_cfg(path=_write(tmp_path, "c.npz", **c), channels=1, image_size=16, natural=False))
    assert raw.train_images.shape == (12, 1, 16, 16) and raw.test_images.shape == (4, 1, 16, 16)
    assert raw.natural is False


def _malformed():
    g = _good()
    cases = {
        "missing_labels": ({"images": g["images"]}, "'labels'"),
        "missing_images": ({"labels": g["labels"]}, "'images'"),
        "float_images": ({"images": g["images"].astype(np.float32), "labels": g["labels"]}, "uint8"),
        "float_labels": ({"images": g["images"], "labels": g["labels"].astype(np.float64)}, "integer"),
        "ndim2": ({"images": g["images"].reshape(12, 64), "labels": g["labels"]}, "N×H×W"),
        "two_channels": ({"images": np.zeros((12, 8, 8, 2), np.uint8), "labels": g["labels"]}, "channels"),
        "length_mismatch": ({"images": g["images"], "labels": g["labels"][:10]}, "one label per image"),
        "negative": ({"images": g["images"], "labels": g["labels"] - 1}, "negative"),
        "gap": ({"images": g["images"], "labels": g["labels"] * 2}, "no image of class 1"),
        "empty": ({"images": np.zeros((0, 8, 8), np.uint8), "labels": np.zeros(0, np.int64)}, "empty"),
        "labels_2d": ({"images": g["images"], "labels": g["labels"].reshape(3, 4)}, "1-D"),
        "test_shape": ({**g, "test_images": np.zeros((2, 9, 9), np.uint8),
                        "test_labels": np.zeros(2, np.int64)}, "test_images"),
        "test_half": ({**g, "test_images": g["images"]}, "test_labels"),
        "test_label_range": ({**g, "test_images": g["images"][:2],
                              "test_labels": np.array([0, 7])}, "test_labels"),
        "object_array": ({**g, "class_names": np.array(["a", 1, None], dtype=object)}, "class_names"),
        "names_count": ({**g, "class_names": np.array(["a", "b"])}, "class_names"),
    }
    return cases


@pytest.mark.parametrize("case", sorted(_malformed()))
def test_npz_malformed(tmp_path, case):
    arrays, expected = _malformed()[case]
    p = tmp_path / f"{case}.npz"
    np.savez(p, **arrays) if case != "object_array" else np.savez(p, **arrays, allow_pickle=True)
    for fn in (load_source, check_source):
        with pytest.raises(UserError) as err:
            fn(data_cfg(path=str(p)))
        msg = str(err.value)
        assert "data.path" in msg and str(p) in msg and expected in msg and "\n" not in msg


def test_npz_not_an_archive_and_missing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello, not numpy")
    with pytest.raises(UserError, match="not an npz"):
        load_source(data_cfg(path=str(bad)))
    npy = tmp_path / "arr.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(UserError, match="not an npz"):
        check_source(data_cfg(path=str(npy)))
    with pytest.raises(UserError, match="file not found"):
        check_source(data_cfg(path=str(tmp_path / "nope.npz")))
    with pytest.raises(UserError, match="data.path: required"):
        check_source(data_cfg(path=None))


def _png(path, size=(6, 5), color=(200, 10, 10)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_train_test_layout(tmp_path):
    for cls, col in (("b_dog", (0, 255, 0)), ("a_cat", (255, 0, 0))):
        for i in range(3):
            _png(str(tmp_path / "train" / cls / f"{i}.png"), color=col)
        _png(str(tmp_path / "test" / cls / "t.png"), color=col)
    (tmp_path / "train" / "a_cat" / "notes.txt").write_text("ignored")
    raw = load_source(data_cfg(name="imagefolder", path=str(tmp_path)))
    assert raw.class_names == ["a_cat", "b_dog"] and raw.num_classes == 2
    assert raw.train_images.shape == (6, 3, 5, 6) and raw.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert raw.train_images[0, :, 0, 0].tolist() == [255, 0, 0]
    assert raw.test_images.shape == (2, 3, 5, 6) and raw.natural is True
    raw = load_source(data_cfg(name="imagefolder", path=str(tmp_path), channels=1, image_size=16))
    assert raw.train_images.shape == (6, 1, 16, 16) and raw.natural is False
    check_source(data_cfg(name="imagefolder", path=str(tmp_path)))


def test_imagefolder_flat_layout_and_errors(tmp_path):
    for cls in ("x", "y"):
        for i in range(2):
            _png(str(tmp_path / cls / f"{i}.png"))
    raw = load_source(data_cfg(name="imagefolder", path=str(tmp_path)))
    assert raw.train_images.shape == (4, 3, 5, 6) and raw.test_images is None

    os.makedirs(tmp_path / "z")
    with pytest.raises(UserError, match=r"z: class folder has no images"):
        check_source(data_cfg(name="imagefolder", path=str(tmp_path)))
    (tmp_path / "z" / "broken.png").write_bytes(b"not a png")
    check_source(data_cfg(name="imagefolder", path=str(tmp_path)))  # preflight does not decode
    with pytest.raises(UserError, match=r"broken\.png: cannot read image"):
        load_source(data_cfg(name="imagefolder", path=str(tmp_path)))
    os.remove(tmp_path / "z" / "broken.png")
    _png(str(tmp_path / "z" / "big.png"), size=(9, 9))
    with pytest.raises(UserError, match=r"big\.png: image is 9×9 but .* is 6×5"):
        load_source(data_cfg(name="imagefolder", path=str(tmp_path)))
    assert load_source(data_cfg(name="imagefolder", path=str(tmp_path), image_size=16)).train_images.shape[0] == 5
    with pytest.raises(UserError, match="folder not found"):
        check_source(data_cfg(name="imagefolder", path=str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    os.makedirs(empty / "train")
    with pytest.raises(UserError, match="no class folders"):
        load_source(data_cfg(name="imagefolder", path=str(empty)))


def test_cifar_missing_names_data_root(tmp_path):
    root = tmp_path / "cifar"
    for name, label in (("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")):
        cfg = data_cfg(name=name, root=str(root), download=False)
        for fn in (check_source, load_source):
            with pytest.raises(UserError) as err:
                fn(cfg)
            msg = str(err.value)
            assert msg.startswith(f"data.root: {root}") and f"{label} not found" in msg and "data.download" in msg


@pytest.mark.parametrize("key,value", [
    ("name", "mnist"), ("ratio", 0.5), ("alpha", 0), ("n_max", 0), ("val_per_class", 0), ("channels", 2),
    ("natural", "yes"), ("profile", "linear"), ("seed", 1.5), ("nuisance", {"rotation": 999}),
])
def test_config_errors_name_key(key, value):
    with pytest.raises(UserError, match=rf"^data\.{key}"):
        check_source({**data_cfg(name="glyphs"), key: value})


def test_cifar_corrupt_tarball_and_files(tmp_path):
    root = tmp_path / "c10"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"cifar-10-python\.tar\.gz: cannot extract"):
        check_source(data_cfg(name="cifar10", root=str(root)))
    os.remove(root / "cifar-10-python.tar.gz")
    base = root / "cifar-10-batches-py"
    base.mkdir()
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (base / f).write_bytes(b"x")
    check_source(data_cfg(name="cifar10", root=str(root)))  # preflight only checks presence
    with pytest.raises(UserError, match=r"^data\.root: .*CIFAR-10 files unreadable"):
        load_source(data_cfg(name="cifar10", root=str(root)))
