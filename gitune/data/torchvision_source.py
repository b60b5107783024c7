"""The `torchvision` source: any image-classification class of torchvision.datasets as a long-tail source.

The class is found by name (`data.dataset`) and built from its signature: `train=True/False`, or
`split="train"/"test"` (and the like), with EMNIST-style classes taking `data.subset` as their `split`.
Files are read in torchvision's own layout under `data.root`; a download, when allowed, happens once in the
driver's preflight. Array-backed datasets convert without iterating; others are read item by item.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gitune.data.raw import RawData, abspath, check_labels_within, conform, is_int, one_line, pil_array
from gitune.errors import UserError, shown

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

    name = cfg["dataset"]  # a non-empty string: gitune.data.sources.validate_data_config
    expected = f"expected a class of torchvision.datasets such as {_TV_EXAMPLES}"
    cls = None if name.startswith("_") else getattr(datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, Dataset)):
        public = [n for n in dir(datasets) if not n.startswith("_") and inspect.isclass(getattr(datasets, n))]
        near = [n for n in public if n.lower() == name.lower()]
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise UserError(f"data.dataset: {shown(name)} is not a torchvision dataset ({expected}){hint}")
    return cls


def make_plan(cfg: dict) -> _TVPlan:
    """Resolve data.dataset / data.subset / data.root against the class's constructor (no file access); the
    values themselves were checked by gitune.data.sources.validate_data_config."""
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
    if mode == "split+train":
        choices = getattr(cls, "splits", None)
        choices = list(choices) if isinstance(choices, (tuple, list, dict)) else None
        listing = f"one of {', '.join(map(str, choices))}" if choices else f"a {name} split name"
        if not subset:
            raise UserError(f"data.subset: required when data.dataset is {name} (expected {listing})")
        if choices and subset not in choices:
            raise UserError(f"data.subset: {shown(subset)} is not a {name} subset (expected {listing})")
    elif subset is not None:
        raise UserError(f"data.subset: {shown(subset)}: {name} has no subsets (expected null; data.subset picks the "
                        f"`split` of datasets such as EMNIST)")
    root = None
    if "root" in params:
        root = abspath(cfg["root"])
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
    note = f"; torchvision says: {one_line(err)}" if "corrupt" in str(err).lower() else ""
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
            raise UserError(f"{_tv_where(plan)}: torchvision cannot load it ({one_line(err)})") from err
        if not (download and can_download):
            raise _tv_missing_error(plan, err) from err
    try:
        return attempt(True)
    except _NoSuchSplit:
        raise
    except Exception as err:
        raise UserError(f"data.root: {plan.root}: {plan.name} not found and the download failed "
                        f"({one_line(err)}); put torchvision's files for {plan.name} there") from err


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
        raise UserError(f"data.subset: {shown(plan.subset)} is not a {plan.name} subset ({one_line(last)})")
    if train:
        raise UserError(f"{_tv_where(plan)}: no training split (tried split = {', '.join(_TV_TRAIN_SPLITS)}; "
                        f"{one_line(last)})")
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
    return pil_array(img, mode or ("L" if img.mode in _GRAY_MODES else "RGB"), size)


def _tv_label(y, where: str) -> int:
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not (y.is_floating_point() or y.is_complex()
                                                                or y.dtype == torch.bool):
        y = y.item()
    elif isinstance(y, np.ndarray) and y.size == 1 and np.issubdtype(y.dtype, np.integer):
        y = y.item()
    if is_int(y):
        return int(y)
    text = " ".join(shown(y, 60).split())
    raise UserError(f"{where}: target is {type(y).__name__} {text} (expected an integer class index; "
                    f"gitune needs an image classification dataset)")


def _tv_item(ds, i: int, where: str):
    try:
        item = ds[i]
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{where}: cannot read it ({one_line(err)})") from err
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
        if all(a.shape == x[i].shape and torch.equal(a, x[i]) and is_int(lab) and int(lab) == int(y[i])
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


def load(cfg: dict) -> RawData:
    """The dataset named by data.dataset (both splits when it has them), as the `torchvision` source."""
    plan = make_plan(cfg)
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
        if classes is None:  # K inferred from the labels: bounded before bincount sizes arrays by it
            check_labels_within(lo, hi, None, f"the {split} split", _tv_where(plan))
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
    xtr = conform(xtr, cfg).contiguous()
    xte = conform(xte, cfg).contiguous() if xte is not None else None
    if xte is not None and xte.shape[1:] != xtr.shape[1:]:
        raise UserError(f"{_tv_where(plan)}: test images are {tuple(xte.shape[1:])} but train images are "
                        f"{tuple(xtr.shape[1:])} (expected one size; set data.image_size to resize)")
    nat = cfg.get("natural")
    return RawData(xtr, ytr, xte, yte, k, names, native_c == 3 if nat is None else bool(nat))


def check(cfg: dict) -> None:
    """Preflight: construct both splits once (downloading here, not in every trial, when allowed)."""
    plan = make_plan(cfg)
    download = bool(cfg.get("download", False))
    train_ds = _tv_split(plan, "train", download)
    if len(train_ds) == 0:
        raise UserError(f"{_tv_where(plan)}: the train split is empty (expected images)")
    _tv_split(plan, "test", download)
