"""Raw dataset sources (CIFAR, npz, ImageFolder, torchvision datasets) loaded once into uint8 tensors, with
one-line errors, and the one validator of the `data` config group. Sources are found by data.name through
gitune.registry.SOURCES (loaders) and SOURCE_CHECKS (preflights).

Every user mistake (missing file, malformed array, bad config value) becomes a UserError naming the config
key and/or path and what was expected, so the CLI can report it before Ray starts.
"""

from __future__ import annotations

import math
import os
import tarfile
import warnings
import zipfile

import numpy as np
import torch
from torch import Tensor

from gitune.config import check_data_rules, check_value
from gitune.data.nuisances import validate_nuisance
from gitune.data.raw import (MAX_DATA_BYTES, MAX_FOLDER_IMAGES, MAX_IMAGE_PIXELS, MAX_ZIP_RATIO, RawData, abspath,
                              check_labels_within, conform, one_line, pil_array)
from gitune.errors import UserError, shown
from gitune.registry import SOURCE_CHECKS, resolve

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

_NPZ_EXPECT = "expected arrays 'images' uint8 N×H×W[×C] and 'labels' int"
_CIFAR = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz"),
}


# ---------------------------------------------------------------------------------------------- config


def validate_data_config(cfg: dict) -> None:
    """The one check of the `data` config group (cheap; no file access): every key against its Key declaration
    in gitune.config, the spec checks' source of truth, then the rules that span keys. build_dataset runs it
    once per build; load_source and check_source run it for their direct callers."""
    if not isinstance(cfg, dict):
        raise UserError(f"data: expected a mapping of data settings, got {type(cfg).__name__}")
    for key, value in {"name": None, **cfg}.items():  # data.name is required: it picks the source
        if key == "nuisance":
            validate_nuisance(value)
        else:
            check_value(f"data.{key}", value, f"data.{key}", groups=("data",))
    check_data_rules(cfg)


# ---------------------------------------------------------------------------------------------- CIFAR


def _cifar_missing(cfg: dict, download_error: BaseException | None = None) -> UserError:
    label, folder, tarball = _CIFAR[cfg["name"]]
    where = f"data.root: {abspath(cfg['root'])}"
    if download_error is not None:
        return UserError(f"{where}: {label} not found and the download failed ({one_line(download_error)}); "
                         f"put {tarball} or the extracted {folder}/ folder there")
    return UserError(f"{where}: {label} not found (put {tarball} or the extracted {folder}/ folder there, "
                     f"or set data.download: true with network access)")


def _cifar_files_present(cfg: dict) -> bool:
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg["name"] == "cifar10" else datasets.CIFAR100
    base = os.path.join(abspath(cfg["root"]), cls.base_folder)
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return all(os.path.isfile(os.path.join(base, n)) for n in names)


def _extract_cifar_tarball(cfg: dict) -> None:
    """Extract a tarball the user dropped into data.root (torchvision only looks for the folder offline)."""
    root = abspath(cfg["root"])
    tar_path = os.path.join(root, _CIFAR[cfg["name"]][2])
    if _cifar_files_present(cfg) or not os.path.isfile(tar_path):
        return
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            tar.extractall(root, filter="data")
    except (OSError, tarfile.TarError) as err:
        raise UserError(f"data.root: {tar_path}: cannot extract ({one_line(err)}); expected the original archive")


def load_cifar(cfg: dict) -> RawData:
    """CIFAR-10 / CIFAR-100 (data.name) from data.root, downloaded when allowed and missing."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg["name"] == "cifar10" else datasets.CIFAR100
    root = abspath(cfg["root"])
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
        raise UserError(f"data.root: {root}: {_CIFAR[cfg['name']][0]} files unreadable ({one_line(err)})") from err

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
        raise UserError(f"{where}: array {name!r} cannot be read without pickle ({one_line(err)}); {_NPZ_EXPECT}")
    except Exception as err:
        raise UserError(f"{where}: array {name!r} is unreadable ({one_line(err)})")


def _npz_members(path: str, where: str) -> dict[str, zipfile.ZipInfo]:
    """Array name (as np.load names it) → zip member, from the archive's directory (nothing decompressed)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise UserError(f"{where}: cannot open as npz ({one_line(err)}); {_NPZ_EXPECT}")
    return {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in infos}


def _npy_header(path: str, info: zipfile.ZipInfo, name: str, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a member's .npy header, refused before numpy allocates what the header claims: a
    member larger than MAX_DATA_BYTES, compressed beyond MAX_ZIP_RATIO (a zip bomb) or claiming more bytes than
    it holds."""
    at = f"{where}: array {name!r} (member {info.filename})"
    if info.file_size > MAX_DATA_BYTES:
        raise UserError(f"{at}: {info.file_size:,} bytes uncompressed (expected at most {MAX_DATA_BYTES:,} bytes)")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        raise UserError(f"{at}: declares {info.file_size:,} bytes from {info.compress_size:,} compressed "
                        f"(expected a ratio of at most {MAX_ZIP_RATIO}; a zip bomb?)")
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with zipfile.ZipFile(path) as zf, zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in readers:
                raise ValueError(f".npy format version {version} (expected 1.0 or 2.0, as numpy.savez writes)")
            shape, _, dtype = readers[version](f)
            header_size = f.tell()
    except Exception as err:
        raise UserError(f"{at}: not a readable .npy array ({one_line(err)}); {_NPZ_EXPECT}")
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_DATA_BYTES:
        raise UserError(f"{at}: header declares shape {shape} of {dtype}, {size:,} bytes "
                        f"(expected at most {MAX_DATA_BYTES:,} bytes)")
    if size > info.file_size - header_size:
        raise UserError(f"{at}: header declares shape {shape} of {dtype}, {size:,} bytes, but the member holds "
                        f"{info.file_size - header_size:,} (expected a complete array, as numpy.savez writes)")
    return shape, dtype


def _check_images(shape: tuple[int, ...], dtype: np.dtype, name: str, where: str) -> None:
    """An images array's header: uint8 N×H×W or N×H×W×C, C = 1 or 3, nothing empty."""
    if dtype != np.uint8:
        raise UserError(f"{where}: array {name!r} has dtype {dtype} (expected uint8 pixel values 0..255)")
    full = _nhwc_shape(shape)
    if len(full) != 4:
        raise UserError(f"{where}: array {name!r} has shape {shape} (expected N×H×W or N×H×W×C)")
    if full[-1] not in (1, 3):
        raise UserError(f"{where}: array {name!r} has {full[-1]} channels in shape {full} "
                        f"(expected N×H×W×C with C = 1 or 3)")
    if 0 in full[:3]:
        raise UserError(f"{where}: array {name!r} is empty (shape {shape}); {_NPZ_EXPECT}")


def _check_labels(shape: tuple[int, ...], dtype: np.dtype, name: str, n_images: int, images_name: str,
                  where: str) -> None:
    """A labels array's header: one integer per image."""
    if not np.issubdtype(dtype, np.integer):
        raise UserError(f"{where}: array {name!r} has dtype {dtype} (expected integer class indices)")
    if len(shape) != 1:
        raise UserError(f"{where}: array {name!r} has shape {shape} (expected a 1-D array of class indices)")
    if shape[0] != n_images:
        raise UserError(f"{where}: array {name!r} has {shape[0]} entries but {images_name!r} has {n_images} images "
                        f"(expected one label per image)")


def _read_labels(npz, name: str, where: str) -> np.ndarray:
    """A labels array as int64, its values within 0..MAX_CLASSES-1 before anything is sized by them."""
    a = _npz_array(npz, name, where)
    check_labels_within(int(a.min()), int(a.max()), None, f"array {name!r}", where)
    return a.astype(np.int64)


def _check_npz_headers(path: str, where: str) -> set[str]:
    """Every array gitune reads, checked from its header (shape, dtype, size) before any is decompressed;
    returns the array names."""
    members = _npz_members(path, where)
    keys = set(members)
    for req in ("images", "labels"):
        if req not in keys:
            raise UserError(f"{where}: missing array {req!r} ({_NPZ_EXPECT}); found {shown(sorted(keys))}")
    if ("test_images" in keys) != ("test_labels" in keys):
        have, miss = ("test_images", "test_labels") if "test_images" in keys else ("test_labels", "test_images")
        raise UserError(f"{where}: has {have!r} but no {miss!r} (expected both or neither)")
    used = [k for k in ("images", "labels", "test_images", "test_labels", "class_names") if k in keys]
    headers = {k: _npy_header(path, members[k], k, where) for k in used}
    if sum(math.prod(s) * d.itemsize for s, d in headers.values()) > MAX_DATA_BYTES:
        raise UserError(f"{where}: the arrays together exceed {MAX_DATA_BYTES:,} bytes (expected at most that)")
    for images, labels in (("images", "labels"), ("test_images", "test_labels")):
        if images in headers:
            _check_images(*headers[images], images, where)
            _check_labels(*headers[labels], labels, headers[images][0][0], images, where)
    if "test_images" in headers:
        test_shape, train_shape = (_nhwc_shape(headers[k][0])[1:] for k in ("test_images", "images"))
        if test_shape != train_shape:
            raise UserError(f"{where}: array 'test_images' has image shape {test_shape} but "
                            f"'images' has {train_shape} (expected the same H×W×C)")
    return keys


def _read_npz(cfg: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str] | None]:
    """Open and fully validate the npz file; returns N×H×W×C images, labels, test pair, class names."""
    path = abspath(cfg["path"])
    where = f"data.path: {path}"
    if not os.path.isfile(path):
        raise UserError(f"{where}: file not found ({_NPZ_EXPECT} in an .npz file)")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{where}: not an npz archive (write it with numpy.savez; {_NPZ_EXPECT})")
    keys = _check_npz_headers(path, where)
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:
        raise UserError(f"{where}: cannot open as npz ({one_line(err)}); {_NPZ_EXPECT}")
    if not hasattr(npz, "files"):
        raise UserError(f"{where}: not an npz archive (write it with numpy.savez; {_NPZ_EXPECT})")
    with npz:
        labels = _read_labels(npz, "labels", where)
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
            test_labels = _read_labels(npz, "test_labels", where)
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
        images = _as_nhwc(_npz_array(npz, "images", where))
        if "test_images" in keys:
            test_images = _as_nhwc(_npz_array(npz, "test_images", where))
    return images, labels, test_images, test_labels, names


def _nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape + (1,) if len(shape) == 3 else shape


def _as_nhwc(a: np.ndarray) -> np.ndarray:
    return a[..., None] if a.ndim == 3 else a


def _default_natural(cfg: dict, channels: int) -> bool:
    """Custom data: colour images are treated as natural photos unless data.natural says otherwise."""
    nat = cfg.get("natural")
    return channels == 3 if nat is None else bool(nat)


def load_npz(cfg: dict) -> RawData:
    """The arrays of the .npz file at data.path."""
    images, labels, test_images, test_labels, names = _read_npz(cfg)
    k = int(labels.max()) + 1

    def conv(a: np.ndarray) -> Tensor:
        return conform(torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous(), cfg)

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
    root = abspath(cfg["path"])
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
    _check_file_count(train, train_root)
    if len(train) < 2:
        raise UserError(f"data.path: {train_root}: only one class folder (expected at least 2 classes)")
    test = None
    test_root = os.path.join(root, "test")
    if has_split and os.path.isdir(test_root):
        test = classes_of(test_root, False)
        _check_file_count(test, test_root)
        extra = sorted(set(test) - set(train))
        if extra:
            raise UserError(f"data.path: {os.path.join(test_root, extra[0])}: test class not among the training "
                            f"classes (expected test/<class> names matching train/<class>)")
        if not any(test.values()):
            raise UserError(f"data.path: {test_root}: no test images (expected test/<class>/<images>, or remove test/)")
    return train, test


def _check_file_count(classes: dict[str, list[str]], folder: str) -> None:
    """At most MAX_FOLDER_IMAGES image files, counted before any is opened."""
    n = sum(len(files) for files in classes.values())
    if n > MAX_FOLDER_IMAGES:
        raise UserError(f"data.path: {folder}: {n:,} image files (expected at most {MAX_FOLDER_IMAGES:,})")


def _open_image(f: str):
    """PIL's lazy open (the header only), refused when the header declares more than MAX_IMAGE_PIXELS pixels:
    checked before .convert/.load decode it, as PIL's own bomb check is a warning below 2 × its limit."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # PIL warns on > its limit; the size is checked below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(f)
    except Image.DecompressionBombError as err:
        raise UserError(f"data.path: {f}: image too large to decode ({one_line(err)}; expected at most "
                        f"{MAX_IMAGE_PIXELS:,} pixels)")
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise UserError(f"data.path: {f}: image header declares {w}×{h} pixels (expected at most "
                        f"{MAX_IMAGE_PIXELS:,} pixels per image)")
    return im


def _check_total_bytes(shape: tuple[int, ...], n: int, f: str) -> None:
    """n images the shape of the first (file f) must fit MAX_DATA_BYTES, checked before the rest are decoded."""
    size = n * math.prod(shape)
    if size > MAX_DATA_BYTES:
        raise UserError(f"data.path: {f}: {n:,} images of {shape[1]}×{shape[0]}×{shape[2]} would take {size:,} "
                        f"bytes (expected at most {MAX_DATA_BYTES:,}; set data.image_size to shrink them)")


def _read_images(files: list[str], cfg: dict, shape_ref: list, n_total: int) -> np.ndarray:
    """Decode every file once with PIL into one N×H×W×C uint8 array (n_total: the images of every split, for
    the memory bound checked at the first one)."""
    mode = "L" if cfg.get("channels") == 1 else "RGB"
    size = cfg.get("image_size")
    out = []
    for f in files:
        try:
            with _open_image(f) as im:
                a = pil_array(im, mode, size)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"data.path: {f}: cannot read image ({one_line(err)})")
        if not shape_ref:
            shape_ref.extend([a.shape, f])
            _check_total_bytes(a.shape, n_total, f)
        elif a.shape != shape_ref[0]:
            h, w = a.shape[:2]
            h0, w0 = shape_ref[0][:2]
            raise UserError(f"data.path: {f}: image is {w}×{h} but {shape_ref[1]} is {w0}×{h0} "
                            f"(expected one size; set data.image_size to resize)")
        out.append(a)
    return np.stack(out) if out else np.zeros((0, 1, 1, 1), np.uint8)


def load_imagefolder(cfg: dict) -> RawData:
    """The image folder at data.path, decoded once."""
    train, test = _folder_layout(cfg)
    names = list(train)
    shape_ref: list = []
    n_total = sum(len(v) for split in (train, test or {}) for v in split.values())

    def load(split: dict[str, list[str]]) -> tuple[Tensor, Tensor]:
        files = [f for c in names for f in split.get(c, [])]
        labels = [i for i, c in enumerate(names) for _ in split.get(c, [])]
        a = _read_images(files, cfg, shape_ref, n_total)
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)

    xtr, ytr = load(train)
    xte, yte = load(test) if test is not None else (None, None)
    return RawData(xtr, ytr, xte, yte, len(names), names, _default_natural(cfg, xtr.shape[1]))


# ---------------------------------------------------------------------------------------------- Tiny ImageNet

TINY_FOLDER = "tiny-imagenet-200"
_TINY_EXPECT = ("expected tiny-imagenet-200/ holding wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG and "
                "val/val_annotations.txt, as unzipped from tiny-imagenet-200.zip")


def _tiny_base(cfg: dict) -> str:
    """The tiny-imagenet-200 folder: data.root/tiny-imagenet-200, or data.root itself when it is that folder."""
    root = abspath(cfg["root"])
    nested = os.path.join(root, TINY_FOLDER)
    if os.path.isdir(nested):
        return nested
    if any(os.path.exists(os.path.join(root, n)) for n in ("wnids.txt", "train", "val")):
        return root
    raise UserError(f"data.root: {root}: Tiny ImageNet not found ({_TINY_EXPECT}; put the folder in data.root)")


def _image_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if _is_image(f) and os.path.isfile(os.path.join(folder, f)))


def _tiny_layout(cfg: dict) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]], str]:
    """(wnids in wnids.txt order, wnid → sorted train files, wnid → val files, the folder); structure only:
    every malformed part is one UserError naming the file."""
    base = _tiny_base(cfg)
    where = f"data.root: {base}"
    wnids_path = os.path.join(base, "wnids.txt")
    if not os.path.isfile(wnids_path):
        raise UserError(f"{where}: missing wnids.txt (one class id per line; {_TINY_EXPECT})")
    try:
        with open(wnids_path, encoding="utf-8") as f:
            wnids = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"data.root: {wnids_path}: unreadable ({one_line(err)}; expected one class id per line)")
    dup = next((w for i, w in enumerate(wnids) if w in wnids[:i]), None)
    if dup is not None:
        raise UserError(f"data.root: {wnids_path}: class {shown(dup)} listed twice (expected one line per class)")
    if len(wnids) < 2:
        raise UserError(f"data.root: {wnids_path}: {len(wnids)} class(es) (expected at least 2 class ids)")
    if any(w in (".", "..") or os.sep in w or "/" in w for w in wnids):
        bad = next(w for w in wnids if w in (".", "..") or os.sep in w or "/" in w)
        raise UserError(f"data.root: {wnids_path}: class id {shown(bad)} is not a folder name (expected ids "
                        f"such as n01443537)")
    train_root = os.path.join(base, "train")
    if not os.path.isdir(train_root):
        raise UserError(f"{where}: missing train/ folder ({_TINY_EXPECT})")
    known = set(wnids)
    extra = sorted(d for d in os.listdir(train_root)
                   if not d.startswith(".") and os.path.isdir(os.path.join(train_root, d)) and d not in known)
    if extra:
        raise UserError(f"data.root: {os.path.join(train_root, extra[0])}: class folder not listed in wnids.txt "
                        f"(expected train/<wnid> for the ids of wnids.txt only)")
    train = {}
    for w in wnids:
        cdir = os.path.join(train_root, w)
        if not os.path.isdir(cdir):
            raise UserError(f"data.root: {cdir}: missing class folder (wnids.txt lists {w}; expected "
                            f"train/{w}/images/*.JPEG)")
        idir = os.path.join(cdir, "images")
        files = _image_files(idir if os.path.isdir(idir) else cdir)
        if not files:
            raise UserError(f"data.root: {idir if os.path.isdir(idir) else cdir}: no images (expected "
                            f"train/{w}/images/*.JPEG)")
        train[w] = files
    _check_file_count(train, train_root)
    val_root = os.path.join(base, "val")
    ann_path = os.path.join(val_root, "val_annotations.txt")
    if not os.path.isfile(ann_path):
        raise UserError(f"{where}: missing val/val_annotations.txt (lines 'file<TAB>wnid…'; {_TINY_EXPECT})")
    val_images = os.path.join(val_root, "images")
    val: dict[str, list[str]] = {w: [] for w in wnids}
    seen: set[str] = set()
    try:
        with open(ann_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"data.root: {ann_path}: unreadable ({one_line(err)}; expected lines 'file<TAB>wnid…')")
    if len(lines) > MAX_FOLDER_IMAGES:
        raise UserError(f"data.root: {ann_path}: {len(lines):,} lines (expected at most {MAX_FOLDER_IMAGES:,})")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        at = f"data.root: {ann_path} line {n}"
        if len(fields) < 2:
            raise UserError(f"{at}: {shown(line)} (expected 'file<TAB>wnid', optionally followed by the box)")
        name, wnid = fields[0].strip(), fields[1].strip()
        if wnid not in known:
            raise UserError(f"{at}: class {shown(wnid)} is not in wnids.txt (expected one of its {len(wnids)} ids)")
        if os.path.basename(name) != name or not _is_image(name):
            raise UserError(f"{at}: {shown(name)} is not an image file name (expected e.g. val_0.JPEG)")
        if name in seen:
            raise UserError(f"{at}: {name} annotated twice (expected one line per image)")
        path = os.path.join(val_images, name)
        if not os.path.isfile(path):
            raise UserError(f"{at}: image {path} not found (expected val/images/{name})")
        seen.add(name)
        val[wnid].append(path)
    if not seen:
        raise UserError(f"data.root: {ann_path}: no annotated images (expected lines 'file<TAB>wnid…' for "
                        f"val/images/*.JPEG)")
    return wnids, train, val, base


def _tiny_names(base: str, wnids: list[str]) -> list[str]:
    """Class names: 'wnid first-word' from words.txt when it is there, else the wnid."""
    words: dict[str, str] = {}
    try:
        with open(os.path.join(base, "words.txt"), encoding="utf-8") as f:
            for line in f:
                wnid, _, text = line.rstrip("\n").partition("\t")
                words[wnid.strip()] = text.split(",")[0].strip()
    except (OSError, UnicodeDecodeError):
        pass
    return [f"{w} {words[w]}" if words.get(w) else w for w in wnids]


def load_tinyimagenet(cfg: dict) -> RawData:
    """Tiny ImageNet (data.root/tiny-imagenet-200): train/<wnid>/images as the training images (source order:
    sorted file names), the annotated val/images as the test split; labels in wnids.txt order."""
    wnids, train, val, base = _tiny_layout(cfg)
    shape_ref: list = []
    n_total = sum(len(v) for split in (train, val) for v in split.values())

    def load(split: dict[str, list[str]]) -> tuple[Tensor, Tensor]:
        files = [f for w in wnids for f in split[w]]
        labels = [i for i, w in enumerate(wnids) for _ in split[w]]
        a = _read_images(files, cfg, shape_ref, n_total)
        return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels, dtype=torch.int64)

    xtr, ytr = load(train)
    xte, yte = load(val)
    return RawData(xtr, ytr, xte, yte, len(wnids), _tiny_names(base, wnids), _default_natural(cfg, xtr.shape[1]))


def check_tinyimagenet(cfg: dict) -> None:
    """The Tiny ImageNet layout (wnids.txt, class folders, val annotations); images are decoded by the loader."""
    _tiny_layout(cfg)


# ---------------------------------------------------------------------------------------------- entry points


def load_source(cfg: dict) -> RawData:
    """Load the `data` config group's source into memory (for a source that renders its own splits, such as
    glyphs, use gitune.data.dataset.build_dataset)."""
    validate_data_config(cfg)
    raw = resolve("source", cfg["name"])(cfg)
    if not isinstance(raw, RawData):
        raise ValueError(f"{cfg['name']} has no raw source: it is built by gitune.data.dataset.build_dataset")
    return raw


def check_source(cfg: dict) -> None:
    """Cheap preflight before Ray starts: config values, and that the data is there and well formed."""
    validate_data_config(cfg)
    if cfg["name"] in SOURCE_CHECKS:
        resolve("source_check", cfg["name"])(cfg)


def check_cifar(cfg: dict) -> None:
    """CIFAR files present (an archive in data.root is extracted), or downloaded now when allowed."""
    _extract_cifar_tarball(cfg)  # once here, not concurrently in every trial
    if _cifar_files_present(cfg):
        return
    if not cfg.get("download", False):
        raise _cifar_missing(cfg)
    load_cifar(cfg)  # downloads now, so that trials find the files


def check_npz(cfg: dict) -> None:
    """The .npz file opens and its arrays are well formed."""
    _read_npz(cfg)


def check_imagefolder(cfg: dict) -> None:
    """The folder layout (classes, image files); images are decoded by load_imagefolder."""
    _folder_layout(cfg)
