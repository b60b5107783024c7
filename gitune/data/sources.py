"""Raw dataset sources (CIFAR, npz, ImageFolder, torchvision datasets) loaded once into uint8 tensors, with
one-line errors.

Every user mistake (missing file, malformed array, bad config value) becomes a UserError naming the config
key and/or path and what was expected, so the CLI can report it before Ray starts.
"""

from __future__ import annotations

import inspect
import math
import os
import tarfile
import zipfile
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gitune.data.nuisances import validate_nuisance
from gitune.data.profiles import PROFILES
from gitune.errors import UserError

SOURCES = ("glyphs", "cifar10", "cifar100", "npz", "imagefolder", "torchvision")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_NPZ_EXPECT = "expected arrays 'images' uint8 N×H×W[×C] and 'labels' int"
_CIFAR = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz"),
}


@dataclass
class RawData:
    """A source as loaded: uint8 N×C×H×W images in source order, before any long-tail subsampling."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor | None
    test_labels: Tensor | None
    num_classes: int
    class_names: list[str]
    natural: bool


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _abspath(p) -> str:
    return os.path.abspath(os.path.expanduser(str(p)))


# ---------------------------------------------------------------------------------------------- config


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def validate_data_config(cfg: dict) -> None:
    """Check the values of the `data` config group (cheap; no file access)."""
    if not isinstance(cfg, dict):
        raise UserError(f"data: expected a mapping of data settings, got {type(cfg).__name__}")
    name = cfg.get("name")
    if name not in SOURCES:
        raise UserError(f"data.name: {name!r} is not a source (expected one of {', '.join(SOURCES)})")
    if name in ("npz", "imagefolder") and not cfg.get("path"):
        what = "an .npz file" if name == "npz" else "an image folder"
        raise UserError(f"data.path: required when data.name is {name} (expected the path of {what})")
    if name in _CIFAR and not cfg.get("root"):
        raise UserError(f"data.root: required when data.name is {name} (expected a folder for the CIFAR files)")
    if cfg.get("profile", "exp") not in PROFILES:
        raise UserError(f"data.profile: {cfg.get('profile')!r} is not a profile (expected one of {', '.join(PROFILES)})")
    checks = [
        ("ratio", lambda v: _is_num(v) and v >= 1, "a number >= 1"),
        ("alpha", lambda v: _is_num(v) and v > 0, "a number > 0"),
        ("n_max", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"),
        ("n_min", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("num_classes", lambda v: v is None or (_is_int(v) and v >= 2), "an integer >= 2 or null"),
        ("image_size", lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"),
        ("channels", lambda v: v is None or (_is_int(v) and v in (1, 3)), "1, 3 or null"),
        ("val_per_class", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("test_per_class", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        ("instance", _is_int, "an integer"),
        ("seed", _is_int, "an integer"),
        ("natural", lambda v: v is None or isinstance(v, bool), "true, false or null"),
        ("download", lambda v: isinstance(v, bool), "true or false"),
    ]
    for key, ok, expected in checks:
        if key in cfg and not ok(cfg[key]):
            raise UserError(f"data.{key}: {cfg[key]!r}: expected {expected}")
    if name == "glyphs" and cfg.get("image_size") is not None and cfg["image_size"] < 16:
        raise UserError(f"data.image_size: {cfg['image_size']!r}: glyphs need an image size >= 16")
    if name == "torchvision":
        _tv_plan(cfg)
    validate_nuisance(cfg.get("nuisance"))


# ---------------------------------------------------------------------------------------------- CIFAR


def _cifar_missing(cfg: dict, download_error: BaseException | None = None) -> UserError:
    label, folder, tarball = _CIFAR[cfg["name"]]
    where = f"data.root: {_abspath(cfg['root'])}"
    if download_error is not None:
        return UserError(f"{where}: {label} not found and the download failed ({_one_line(download_error)}); "
                         f"put {tarball} or the extracted {folder}/ folder there")
    return UserError(f"{where}: {label} not found (put {tarball} or the extracted {folder}/ folder there, "
                     f"or set data.download: true with network access)")


def _cifar_files_present(cfg: dict) -> bool:
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg["name"] == "cifar10" else datasets.CIFAR100
    base = os.path.join(_abspath(cfg["root"]), cls.base_folder)
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return all(os.path.isfile(os.path.join(base, n)) for n in names)


def _extract_cifar_tarball(cfg: dict) -> None:
    """Extract a tarball the user dropped into data.root (torchvision only looks for the folder offline)."""
    root = _abspath(cfg["root"])
    tar_path = os.path.join(root, _CIFAR[cfg["name"]][2])
    if _cifar_files_present(cfg) or not os.path.isfile(tar_path):
        return
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (OSError, tarfile.TarError) as err:
        raise UserError(f"data.root: {tar_path}: cannot extract ({_one_line(err)}); expected the original archive")


def _load_cifar(cfg: dict) -> RawData:
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg["name"] == "cifar10" else datasets.CIFAR100
    root = _abspath(cfg["root"])
    _extract_cifar_tarball(cfg)
    download = bool(cfg.get("download", False)) and not _cifar_files_present(cfg)
    try:
        train = cls(root=root, train=True, download=download)
        test = cls(root=root, train=False, download=False)
    except Exception as err:  # torchvision raises RuntimeError offline/corrupt, URLError/OSError on download
        if download:
            raise _cifar_missing(cfg, err) from err
        if not _cifar_files_present(cfg):
            raise _cifar_missing(cfg) from err
        raise UserError(f"data.root: {root}: {_CIFAR[cfg['name']][0]} files unreadable ({_one_line(err)})") from err

    def conv(ds) -> tuple[Tensor, Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    xtr, ytr = conv(train)
    xte, yte = conv(test)
    nat = cfg.get("natural")
    return RawData(xtr, ytr, xte, yte, len(train.classes), list(train.classes), True if nat is None else nat)


# ---------------------------------------------------------------------------------------------- npz


def _npz_array(npz, name: str, where: str) -> np.ndarray:
    try:
        return npz[name]
    except ValueError as err:  # object arrays need pickle, which is refused
        raise UserError(f"{where}: array {name!r} cannot be read without pickle ({_one_line(err)}); {_NPZ_EXPECT}")
    except Exception as err:
        raise UserError(f"{where}: array {name!r} is unreadable ({_one_line(err)})")


def _check_images(a: np.ndarray, name: str, where: str) -> np.ndarray:
    if a.dtype != np.uint8:
        raise UserError(f"{where}: array {name!r} has dtype {a.dtype} (expected uint8 pixel values 0..255)")
    shape = a.shape
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim != 4:
        raise UserError(f"{where}: array {name!r} has shape {a.shape} (expected N×H×W or N×H×W×C)")
    if a.shape[-1] not in (1, 3):
        raise UserError(f"{where}: array {name!r} has {a.shape[-1]} channels in shape {a.shape} "
                        f"(expected N×H×W×C with C = 1 or 3)")
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise UserError(f"{where}: array {name!r} is empty (shape {shape}); {_NPZ_EXPECT}")
    return a


def _check_labels(a: np.ndarray, name: str, n_images: int, images_name: str, where: str) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.integer):
        raise UserError(f"{where}: array {name!r} has dtype {a.dtype} (expected integer class indices)")
    if a.ndim != 1:
        raise UserError(f"{where}: array {name!r} has shape {a.shape} (expected a 1-D array of class indices)")
    if len(a) != n_images:
        raise UserError(f"{where}: array {name!r} has {len(a)} entries but {images_name!r} has {n_images} images "
                        f"(expected one label per image)")
    if len(a) and int(a.min()) < 0:
        raise UserError(f"{where}: array {name!r} has negative label {int(a.min())} (expected 0..K-1)")
    return a.astype(np.int64)


def _read_npz(cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str] | None]:
    """Open and fully validate the npz file; returns N×H×W×C images, labels, test pair, class names."""
    path = _abspath(cfg["path"])
    where = f"data.path: {path}"
    if not os.path.isfile(path):
        raise UserError(f"{where}: file not found ({_NPZ_EXPECT} in an .npz file)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{where}: not an npz archive (write it with numpy.savez; {_NPZ_EXPECT})")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:
        raise UserError(f"{where}: cannot open as npz ({_one_line(err)}); {_NPZ_EXPECT}")
    if not hasattr(npz, "files"):
        raise UserError(f"{where}: not an npz archive (write it with numpy.savez; {_NPZ_EXPECT})")
    with npz:
        keys = set(npz.files)
        for req in ("images", "labels"):
            if req not in keys:
                raise UserError(f"{where}: missing array {req!r} ({_NPZ_EXPECT}); found {sorted(keys)}")
        if ("test_images" in keys) != ("test_labels" in keys):
            have, miss = ("test_images", "test_labels") if "test_images" in keys else ("test_labels", "test_images")
            raise UserError(f"{where}: has {have!r} but no {miss!r} (expected both or neither)")
        images = _check_images(_npz_array(npz, "images", where), "images", where)
        labels = _check_labels(_npz_array(npz, "labels", where), "labels", len(images), "images", where)
        k = int(labels.max()) + 1
        counts = np.bincount(labels, minlength=k)
        if (counts == 0).any():
            gap = int(np.nonzero(counts == 0)[0][0])
            raise UserError(f"{where}: array 'labels' has no image of class {gap} "
                            f"(expected labels covering 0..{k - 1}, every class with at least one image)")
        if k < 2:
            raise UserError(f"{where}: array 'labels' has a single class (expected at least 2 classes)")
        test_images = test_labels = None
        if "test_images" in keys:
            test_images = _check_images(_npz_array(npz, "test_images", where), "test_images", where)
            if test_images.shape[1:] != images.shape[1:]:
                raise UserError(f"{where}: array 'test_images' has image shape {test_images.shape[1:]} but "
                                f"'images' has {images.shape[1:]} (expected the same H×W×C)")
            test_labels = _check_labels(_npz_array(npz, "test_labels", where), "test_labels",
                                        len(test_images), "test_images", where)
            if int(test_labels.max()) >= k:
                raise UserError(f"{where}: array 'test_labels' has label {int(test_labels.max())} but 'labels' "
                                f"has classes 0..{k - 1} only (expected test labels among the training classes)")
        names = None
        if "class_names" in keys:
            cn = _npz_array(npz, "class_names", where)
            if cn.dtype.kind not in "US" or cn.ndim != 1 or len(cn) != k:
                raise UserError(f"{where}: array 'class_names' has dtype {cn.dtype} and shape {cn.shape} "
                                f"(expected a 1-D string array with one name per class, {k} names)")
            names = [v.decode() if isinstance(v, bytes) else str(v) for v in cn.tolist()]
    return images, labels, test_images, test_labels, names


def _conform(x: Tensor, cfg: dict) -> Tensor:
    """Apply data.channels (1 ↔ 3) and data.image_size (antialiased resize) to uint8 N×C×H×W images."""
    want_c = cfg.get("channels")
    if want_c == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = torch.cat([(x[i:i + 4096].float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
                       for i in range(0, len(x), 4096)])
    elif want_c == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    size = cfg.get("image_size")
    if size and tuple(x.shape[2:]) != (size, size):
        x = torch.cat([F.interpolate(x[i:i + 4096].float(), size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=True).round_().clamp_(0, 255).to(torch.uint8)
                       for i in range(0, len(x), 4096)])
    return x


def _default_natural(cfg: dict, channels: int) -> bool:
    """Custom data: colour images are treated as natural photos unless data.natural says otherwise."""
    nat = cfg.get("natural")
    return channels == 3 if nat is None else bool(nat)


def _load_npz(cfg: dict) -> RawData:
    images, labels, test_images, test_labels, names = _read_npz(cfg)
    k = int(labels.max()) + 1

    def conv(a: np.ndarray) -> Tensor:
        return _conform(torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous(), cfg)

    xtr = conv(images)
    xte = conv(test_images) if test_images is not None else None
    yte = torch.from_numpy(test_labels) if test_labels is not None else None
    names = names or [str(c) for c in range(k)]
    return RawData(xtr, torch.from_numpy(labels), xte, yte, k, names, _default_natural(cfg, xtr.shape[1]))


# ---------------------------------------------------------------------------------------------- ImageFolder


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _folder_layout(cfg: dict) -> tuple[dict[str, list[str]], dict[str, list[str]] | None]:
    """Class → sorted image files for train (and test when path/test/ exists); checks structure only."""
    root = _abspath(cfg["path"])
    if not os.path.isdir(root):
        raise UserError(f"data.path: {root}: folder not found (expected path/<class>/<images> or "
                        f"path/train/<class>/<images> with optional path/test/<class>/<images>)")
    train_root = os.path.join(root, "train")
    has_split = os.path.isdir(train_root)
    if not has_split:
        train_root = root

    def classes_of(folder: str, need_images: bool) -> dict[str, list[str]]:
        subdirs = sorted(d for d in os.listdir(folder)
                         if not d.startswith(".") and os.path.isdir(os.path.join(folder, d)))
        if not subdirs:
            raise UserError(f"data.path: {folder}: no class folders (expected one sub-folder of images per class)")
        out = {}
        for d in subdirs:
            cdir = os.path.join(folder, d)
            files = sorted(f for f in os.listdir(cdir) if _is_image(f) and os.path.isfile(os.path.join(cdir, f)))
            if not files and need_images:
                raise UserError(f"data.path: {cdir}: class folder has no images "
                                f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})")
            out[d] = [os.path.join(cdir, f) for f in files]
        return out

    train = classes_of(train_root, True)
    if len(train) < 2:
        raise UserError(f"data.path: {train_root}: only one class folder (expected at least 2 classes)")
    test = None
    test_root = os.path.join(root, "test")
    if has_split and os.path.isdir(test_root):
        test = classes_of(test_root, False)
        extra = sorted(set(test) - set(train))
        if extra:
            raise UserError(f"data.path: {os.path.join(test_root, extra[0])}: test class not among the training "
                            f"classes (expected test/<class> names matching train/<class>)")
        if not any(test.values()):
            raise UserError(f"data.path: {test_root}: no test images (expected test/<class>/<images>, or remove test/)")
    return train, test


def _pil_array(im, mode: str, size: int | None) -> np.ndarray:
    """One PIL image → uint8 H×W×C array in `mode` ("L" or "RGB"), resized to size×size when given."""
    from PIL import Image

    im = im.convert(mode)
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _read_images(files: list[str], cfg: dict, shape_ref: list) -> np.ndarray:
    """Decode every file once with PIL into one N×H×W×C uint8 array."""
    from PIL import Image

    mode = "L" if cfg.get("channels") == 1 else "RGB"
    size = cfg.get("image_size")
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                a = _pil_array(im, mode, size)
        except Exception as err:
            raise UserError(f"data.path: {f}: cannot read image ({_one_line(err)})")
        if not shape_ref:
            shape_ref.extend([a.shape, f])
        elif a.shape != shape_ref[0]:
            h, w = a.shape[:2]
            h0, w0 = shape_ref[0][:2]
            raise UserError(f"data.path: {f}: image is {w}×{h} but {shape_ref[1]} is {w0}×{h0} "
                            f"(expected one size; set data.image_size to resize)")
        out.append(a)
    return np.stack(out) if out else np.zeros((0, 1, 1, 1), np.uint8)


def _load_imagefolder(cfg: dict) -> RawData:
    train, test = _folder_layout(cfg)
    names = list(train)
    shape_ref: list = []

    def load(split: dict[str, list[str]]) -> tuple[Tensor, Tensor]:
        files = [f for c in names for f in split.get(c, [])]
        labels = [i for i, c in enumerate(names) for _ in split.get(c, [])]
        a = _read_images(files, cfg, shape_ref)
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)

    xtr, ytr = load(train)
    xte, yte = load(test) if test is not None else (None, None)
    return RawData(xtr, ytr, xte, yte, len(names), names, _default_natural(cfg, xtr.shape[1]))


# ---------------------------------------------------------------------------------------------- torchvision

_TV_EXAMPLES = "MNIST, KMNIST, FashionMNIST, EMNIST, SVHN, GTSRB"
_TV_SUPPLIED = ("root", "train", "split", "download")  # constructor arguments gitune fills in
_TV_TRAIN_SPLITS = ("train", "trainval", "train-standard")  # tried in order for datasets with `split` only
_TV_TEST_SPLITS = ("test", "val", "valid")
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass(frozen=True)
class _TVPlan:
    """How to construct a torchvision dataset class from the `data` config group."""

    cls: type
    name: str
    root: str | None  # None when the class takes no root
    mode: str  # "train" (train=bool), "split" (split=str), "split+train" (EMNIST-like), "single" (no test split)
    params: frozenset
    subset: str | None


def _tv_params(cls: type) -> dict[str, inspect.Parameter]:
    """Constructor parameters by name, following **kwargs into the base classes (EMNIST passes `train` on)."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            break
        forwards = False
        for i, (pname, p) in enumerate(sig.parameters.items()):
            if i == 0 and pname == "self":
                continue
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                params.setdefault(pname, p)
        if not forwards:
            break
    return params


def _tv_class(cfg: dict) -> type:
    from torch.utils.data import Dataset
    from torchvision import datasets

    name = cfg.get("dataset")
    if name is None or name == "":
        raise UserError(f"data.dataset: required when data.name is torchvision (expected a class name of "
                        f"torchvision.datasets such as {_TV_EXAMPLES})")
    expected = f"expected a class of torchvision.datasets such as {_TV_EXAMPLES}"
    if not isinstance(name, str):
        raise UserError(f"data.dataset: {name!r}: {expected}")
    cls = None if name.startswith("_") else getattr(datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Dataset)):
        public = [n for n in dir(datasets) if not n.startswith("_") and inspect.isclass(getattr(datasets, n))]
        near = [n for n in public if n.lower() == name.lower()]
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise UserError(f"data.dataset: {name!r} is not a torchvision dataset ({expected}){hint}")
    return cls


def _tv_plan(cfg: dict) -> _TVPlan:
    """Resolve data.dataset / data.subset / data.root against the class's constructor (no file access)."""
    cls = _tv_class(cfg)
    name = cfg["dataset"]  # as the user wrote it (the attribute of torchvision.datasets)
    params = _tv_params(cls)
    needed = [p for p, v in params.items() if p not in _TV_SUPPLIED and v.default is inspect.Parameter.empty]
    if needed:
        raise UserError(f"data.dataset: {name} needs constructor arguments gitune cannot supply "
                        f"({', '.join(needed)}); expected an image classification dataset built from root, "
                        f"train or split, and download")
    has_train, has_split = "train" in params, "split" in params
    mode = "split+train" if has_train and has_split else "train" if has_train else "split" if has_split else "single"
    subset = cfg.get("subset")
    if subset is not None and not isinstance(subset, str):
        raise UserError(f"data.subset: {subset!r}: expected a string or null")
    if mode == "split+train":
        choices = getattr(cls, "splits", None)
        choices = list(choices) if isinstance(choices, (tuple, list, dict)) else None
        listing = f"one of {', '.join(map(str, choices))}" if choices else f"a {name} split name"
        if not subset:
            raise UserError(f"data.subset: required when data.dataset is {name} (expected {listing})")
        if choices and subset not in choices:
            raise UserError(f"data.subset: {subset!r} is not a {name} subset (expected {listing})")
    elif subset is not None:
        raise UserError(f"data.subset: {subset!r}: {name} has no subsets (expected null; data.subset picks the "
                        f"`split` of datasets such as EMNIST)")
    root = None
    if "root" in params:
        if not isinstance(cfg.get("root"), str) or not cfg["root"]:
            raise UserError(f"data.root: required when data.name is torchvision (expected the folder torchvision "
                            f"keeps {name} in)")
        root = _abspath(cfg["root"])
    return _TVPlan(cls, name, root, mode, frozenset(params), subset if mode == "split+train" else None)


def _tv_where(plan: _TVPlan) -> str:
    return f"data.dataset: {plan.name}" + (f" (data.root: {plan.root})" if plan.root else "")


def _tv_missing(err: BaseException) -> bool:
    """Does a constructor error mean 'the files are not there' (torchvision has no common exception for it)?"""
    if isinstance(err, FileNotFoundError):
        return True
    msg = str(err).lower()
    return isinstance(err, (RuntimeError, OSError)) and (
        "dataset not found" in msg or "file not found" in msg or "download=true" in msg)


def _tv_missing_error(plan: _TVPlan, err: BaseException) -> UserError:
    where = plan.root or "the default location"
    note = f"; torchvision says: {_one_line(err)}" if "corrupt" in str(err).lower() else ""
    return UserError(f"data.root: no {plan.name} files under {where} (expected torchvision's layout, or "
                     f"data.download: true){note}")


class _NoSuchSplit(Exception):
    pass


def _tv_make(plan: _TVPlan, kw: dict, download: bool):
    """Construct one split; download only when the files are missing (so trials never download concurrently)."""
    args = dict(kw)
    if plan.root is not None:
        args["root"] = plan.root
    can_download = "download" in plan.params

    def attempt(dl: bool):
        try:
            return plan.cls(**args, **({"download": dl} if can_download else {}))
        except ValueError as err:
            if "split" in kw and f"'{kw['split']}'" in str(err) and "split" in str(err):
                raise _NoSuchSplit(str(err)) from err
            raise

    try:
        return attempt(False)
    except _NoSuchSplit:
        raise
    except Exception as err:
        if not _tv_missing(err):
            raise UserError(f"{_tv_where(plan)}: torchvision cannot load it ({_one_line(err)})") from err
        if not (download and can_download):
            raise _tv_missing_error(plan, err) from err
    try:
        return attempt(True)
    except _NoSuchSplit:
        raise
    except Exception as err:
        raise UserError(f"data.root: {plan.root}: {plan.name} not found and the download failed "
                        f"({_one_line(err)}); put torchvision's files for {plan.name} there") from err


def _tv_split(plan: _TVPlan, which: str, download: bool):
    """The torchvision dataset object for the train or test split (None: the class has no test split)."""
    train = which == "train"
    if plan.mode == "train":
        tries = [{"train": train}]
    elif plan.mode == "split+train":
        tries = [{"split": plan.subset, "train": train}]
    elif plan.mode == "split":
        tries = [{"split": s} for s in (_TV_TRAIN_SPLITS if train else _TV_TEST_SPLITS)]
    else:
        tries = [{}] if train else []
    last = None
    for kw in tries:
        try:
            return _tv_make(plan, kw, download)
        except _NoSuchSplit as err:
            last = err
    if plan.mode == "split+train":
        raise UserError(f"data.subset: {plan.subset!r} is not a {plan.name} subset ({_one_line(last)})")
    if train:
        raise UserError(f"{_tv_where(plan)}: no training split (tried split = {', '.join(_TV_TRAIN_SPLITS)}; "
                        f"{_one_line(last)})")
    return None


def _tv_item_array(img, mode: str | None, size: int | None, where: str) -> np.ndarray:
    """A dataset item's image (PIL, or uint8 array / tensor) → uint8 H×W×C; mode None keeps grey as grey."""
    from PIL import Image

    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    if isinstance(img, np.ndarray):
        a = img
        if a.dtype != np.uint8:
            raise UserError(f"{where}: image has dtype {a.dtype} (expected PIL images or uint8 arrays)")
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
            a = a.transpose(1, 2, 0)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
            raise UserError(f"{where}: image has shape {tuple(img.shape)} ({img.ndim} dims; expected H×W, "
                            f"H×W×C or C×H×W with C = 1 or 3)")
        img = Image.fromarray(np.ascontiguousarray(a))
    if not isinstance(img, Image.Image):
        raise UserError(f"{where}: image is a {type(img).__name__} (expected a PIL image or a uint8 array; "
                        f"gitune needs an image classification dataset)")
    return _pil_array(img, mode or ("L" if img.mode in _GRAY_MODES else "RGB"), size)


def _tv_label(y, where: str) -> int:
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not (y.is_floating_point() or y.is_complex()
                                                                or y.dtype == torch.bool):
        y = y.item()
    elif isinstance(y, np.ndarray) and y.size == 1 and np.issubdtype(y.dtype, np.integer):
        y = y.item()
    if _is_int(y):
        return int(y)
    text = " ".join(repr(y).split())
    text = text if len(text) <= 60 else text[:57] + "..."
    raise UserError(f"{where}: target is {type(y).__name__} {text} (expected an integer class index; "
                    f"gitune needs an image classification dataset)")


def _tv_item(ds, i: int, where: str):
    try:
        item = ds[i]
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{where}: cannot read it ({_one_line(err)})") from err
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise UserError(f"{where}: is a {type(item).__name__} (expected an (image, label) pair)")
    return item[0], item[1]


def _tv_fast(ds, plan: _TVPlan, split: str) -> tuple[Tensor, Tensor] | None:
    """Array-backed datasets (`.data` uint8 plus `.targets` or `.labels`): convert without iterating.

    The layout (N×H×W, N×H×W×C or N×C×H×W) is confirmed against ds[0] and ds[-1], so a dataset whose
    items differ from its arrays falls back to iteration.
    """
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim not in (3, 4) or labels is None:
        return None
    try:
        y = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    except Exception:
        return None
    n = len(data)
    if y.ndim != 1 or len(y) != n or n != len(ds) or not np.issubdtype(y.dtype, np.integer):
        return None
    candidates = []
    if data.ndim == 3:
        candidates.append(torch.from_numpy(data)[:, None])
    else:
        if data.shape[-1] in (1, 3):
            candidates.append(torch.from_numpy(data).permute(0, 3, 1, 2))
        if data.shape[1] in (1, 3):
            candidates.append(torch.from_numpy(data))
    checks = []
    for i in sorted({0, n - 1}):
        where = f"{_tv_where(plan)}: {split} item {i}"
        img, lab = _tv_item(ds, i, where)
        checks.append((i, torch.from_numpy(_tv_item_array(img, None, None, where)).permute(2, 0, 1), lab))
    for x in candidates:
        if all(a.shape == x[i].shape and torch.equal(a, x[i]) and _is_int(lab) and int(lab) == int(y[i])
               for i, a, lab in checks):
            return x.contiguous(), torch.from_numpy(y.astype(np.int64))
    return None


def _tv_arrays(ds, plan: _TVPlan, cfg: dict, split: str, shape_ref: list) -> tuple[Tensor, Tensor]:
    """uint8 N×C×H×W images and int64 labels of one split (iterated items get data.channels / image_size here)."""
    n = len(ds)
    if n == 0:
        raise UserError(f"{_tv_where(plan)}: the {split} split is empty (expected images)")
    fast = _tv_fast(ds, plan, split)
    if fast is not None:
        return fast
    mode = {1: "L", 3: "RGB"}.get(cfg.get("channels"))
    size = cfg.get("image_size")
    images, labels = [], []
    for i in range(n):
        where = f"{_tv_where(plan)}: {split} item {i}"
        img, lab = _tv_item(ds, i, where)
        a = _tv_item_array(img, mode, size, where)
        labels.append(_tv_label(lab, where))
        if not shape_ref:
            shape_ref.extend([a.shape[:2], f"{split} item {i}"])
        elif a.shape[:2] != shape_ref[0]:
            (h, w), (h0, w0) = a.shape[:2], shape_ref[0]
            raise UserError(f"{where}: image is {w}×{h} but {shape_ref[1]} is {w0}×{h0} "
                            f"(expected one size; set data.image_size to resize)")
        images.append(a)
    if len({a.shape[2] for a in images}) > 1:  # grey and colour mixed (mode None): make every image colour
        images = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in images]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels, dtype=torch.int64)


def _load_torchvision(cfg: dict) -> RawData:
    plan = _tv_plan(cfg)
    download = bool(cfg.get("download", False))
    train_ds = _tv_split(plan, "train", download)
    test_ds = _tv_split(plan, "test", download)
    shape_ref: list = []
    xtr, ytr = _tv_arrays(train_ds, plan, cfg, "train", shape_ref)
    xte = yte = None
    if test_ds is not None:
        xte, yte = _tv_arrays(test_ds, plan, cfg, "test", shape_ref)
    native_c = max(xtr.shape[1], xte.shape[1] if xte is not None else 0)
    if native_c not in (1, 3):
        raise UserError(f"{_tv_where(plan)}: images have {native_c} channels (expected 1 or 3)")

    # classes: the dataset's list when it has one, else 0..max label
    classes = getattr(train_ds, "classes", None)
    classes = list(classes) if isinstance(classes, (list, tuple)) and len(classes) else None
    for split, y in (("train", ytr), ("test", yte)):
        if y is None or not len(y):
            continue
        lo, hi = int(y.min()), int(y.max())
        if lo < 0:
            raise UserError(f"{_tv_where(plan)}: {split} label {lo} is negative (expected class indices 0..K-1)")
        if classes is not None and hi >= len(classes):
            raise UserError(f"{_tv_where(plan)}: {split} label {hi} is out of range (expected 0..{len(classes) - 1} "
                            f"for the {len(classes)} classes the dataset lists)")
    k = len(classes) if classes is not None else 1 + max(int(ytr.max()), int(yte.max()) if yte is not None else 0)
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in range(k)]

    # classes without training images (EMNIST letters' 'N/A') cannot be part of a long tail: drop them
    keep = torch.nonzero(torch.bincount(ytr, minlength=k)).flatten()
    if len(keep) < 2:
        raise UserError(f"{_tv_where(plan)}: the train split has {len(keep)} class (expected at least 2)")
    if len(keep) < k:
        remap = torch.full((k,), -1, dtype=torch.int64)
        remap[keep] = torch.arange(len(keep))
        ytr = remap[ytr]
        if yte is not None:
            yte = remap[yte]
            mask = yte >= 0
            xte, yte = (xte[mask], yte[mask]) if bool(mask.any()) else (None, None)
        names = [names[int(c)] for c in keep]
        k = len(keep)

    if native_c == 3:  # grey and colour splits mixed: make both colour before conforming
        xtr = xtr.expand(-1, 3, -1, -1) if xtr.shape[1] == 1 else xtr
        xte = xte.expand(-1, 3, -1, -1) if xte is not None and xte.shape[1] == 1 else xte
    xtr = _conform(xtr, cfg).contiguous()
    xte = _conform(xte, cfg).contiguous() if xte is not None else None
    if xte is not None and xte.shape[1:] != xtr.shape[1:]:
        raise UserError(f"{_tv_where(plan)}: test images are {tuple(xte.shape[1:])} but train images are "
                        f"{tuple(xtr.shape[1:])} (expected one size; set data.image_size to resize)")
    nat = cfg.get("natural")
    return RawData(xtr, ytr, xte, yte, k, names, native_c == 3 if nat is None else bool(nat))


def _check_torchvision(cfg: dict) -> None:
    """Preflight: construct both splits once (downloading here, not in every trial, when allowed)."""
    plan = _tv_plan(cfg)
    download = bool(cfg.get("download", False))
    train_ds = _tv_split(plan, "train", download)
    if len(train_ds) == 0:
        raise UserError(f"{_tv_where(plan)}: the train split is empty (expected images)")
    _tv_split(plan, "test", download)


# ---------------------------------------------------------------------------------------------- entry points


def load_source(cfg: dict) -> RawData:
    """Load the `data` config group's source into memory (glyphs are generated by build_dataset instead)."""
    validate_data_config(cfg)
    name = cfg["name"]
    if name in _CIFAR:
        return _load_cifar(cfg)
    if name == "npz":
        return _load_npz(cfg)
    if name == "imagefolder":
        return _load_imagefolder(cfg)
    if name == "torchvision":
        return _load_torchvision(cfg)
    raise ValueError("glyphs have no raw source: they are rendered by gitune.data.dataset.build_dataset")


def check_source(cfg: dict) -> None:
    """Cheap preflight before Ray starts: config values, and that the data is there and well formed."""
    validate_data_config(cfg)
    name = cfg["name"]
    if name in _CIFAR:
        _extract_cifar_tarball(cfg)  # once here, not concurrently in every trial
        if _cifar_files_present(cfg):
            return
        if not cfg.get("download", False):
            raise _cifar_missing(cfg)
        _load_cifar(cfg)  # downloads now, so that trials find the files
    elif name == "npz":
        _read_npz(cfg)
    elif name == "imagefolder":
        _folder_layout(cfg)
    elif name == "torchvision":
        _check_torchvision(cfg)
