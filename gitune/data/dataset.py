"""Long-tailed train / validation / test splits built from a source and a class-size profile.

Validation comes from training images the long-tail subsampling left unused (docs/method.md, long-tailed data
and reference numbers: the reference code tuned on the test set; gitune does not), so hyperparameters never see the
test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gitune.data.augment import to_float
from gitune.data.nuisances import apply_nuisance, validate_nuisance
from gitune.data.profiles import class_counts as profile_counts
from gitune.data.raw import MAX_CLASSES, RawData, check_labels_within
from gitune.data.sources import validate_data_config
from gitune.data.synthetic import make_glyphs
from gitune.errors import UserError, shown
from gitune.registry import resolve

# Independent seed streams derived from data.seed / data.instance.
_TEST_STREAM, _VAL_STREAM, _NUISANCE_STREAM, _RANK_STREAM = 0x7E57, 0x0A1, 0x9015E, 0x2A4C


@dataclass
class Split:
    images: Tensor  # uint8 N×C×H×W (CPU)
    labels: Tensor  # int64 N

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class LongTailData:
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_counts: list[int]  # training images per class, as actually built
    class_names: list[str]
    mean: tuple[float, ...]  # per channel of train, in [0, 1] units
    std: tuple[float, ...]
    natural: bool  # natural images: crop/flip augmentation, standard_augment as invariance T
    nuisance: dict = field(default_factory=dict)  # nuisance spec for invariance T (the one applied to the data)
    # The untransformed originals of each split, image for image (the same objects when no nuisance):
    # invariance is measured as x → T(x) on clean images, and the oracle augments clean training images.
    clean_train: Split | None = None
    clean_val: Split | None = None
    clean_test: Split | None = None
    transformed_classes: list[int] = field(default_factory=list)  # classes whose images got the nuisance

    def __post_init__(self) -> None:
        self.clean_train = self.train if self.clean_train is None else self.clean_train
        self.clean_val = self.val if self.clean_val is None else self.clean_val
        self.clean_test = self.test if self.clean_test is None else self.clean_test

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def ranked_classes(cfg: dict, num_classes: int) -> list[int]:
    """Class index at each rank (position 0 = rank 1, the head): index order for exp/step/none, a seeded
    permutation for zipf. zipf follows the K49-LT protocol: each `data.instance` assigns classes to ranks
    at random, so that a class is sometimes head and sometimes tail."""
    if cfg.get("profile") != "zipf":
        return list(range(num_classes))
    return [int(c) for c in _rng(cfg.get("instance", 0), _RANK_STREAM).permutation(num_classes)]


def target_counts(cfg: dict, num_classes: int, n_max: int) -> list[int]:
    """Profile counts per class index (the profile's rank counts placed by `ranked_classes`)."""
    by_rank = profile_counts(cfg.get("profile", "exp"), num_classes, n_max, float(cfg.get("ratio", 100.0)),
                             float(cfg.get("alpha", 2.0)), int(cfg.get("n_min", 5)))
    out = [0] * num_classes
    for rank, cls in enumerate(ranked_classes(cfg, num_classes)):
        out[cls] = by_rank[rank]
    return out


def transformed_classes(cfg: dict, spec: dict, num_classes: int) -> list[int]:
    """Classes whose images get the nuisance: all of them, or with `data.nuisance_rank` r only the class
    of rank r (the "single transformed class" experiment: does invariance learned on one class reach
    the others?)."""
    if not spec:
        return []
    rank = cfg.get("nuisance_rank")
    if rank is None:
        return list(range(num_classes))
    if not 1 <= int(rank) <= num_classes:
        raise UserError(f"data.nuisance_rank: {shown(rank)}: expected a class rank within 1..{num_classes}")
    return [ranked_classes(cfg, num_classes)[int(rank) - 1]]


def _only_classes(transformed: Split, clean: Split, classes: list[int], num_classes: int) -> Split:
    """The transformed images of `classes`, the clean ones elsewhere (the splits are image-aligned)."""
    if len(classes) == num_classes:
        return transformed
    pick = torch.isin(clean.labels, torch.tensor(classes, dtype=torch.int64))
    return Split(torch.where(pick[:, None, None, None], transformed.images, clean.images), clean.labels)


def _channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, accumulated in float64 chunks to bound memory."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(x), 8192):
        v = x[i:i + 8192].to(torch.float64).div_(255.0)
        s += v.sum(dim=(0, 2, 3))
        s2 += (v * v).sum(dim=(0, 2, 3))
    n = max(len(x) * x.shape[2] * x.shape[3], 1)
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _transform_once(x: Tensor, spec: dict, seed: int, tag: int) -> Tensor:
    """Apply the nuisance once to stored uint8 images (the transformed-long-tail construction)."""
    if not spec or len(x) == 0:
        return x
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed & 0xFFFFFFFF, _NUISANCE_STREAM, tag])
                                          .generate_state(1)[0]))
    out = []
    for i in range(0, len(x), 4096):
        y = apply_nuisance(to_float(x[i:i + 4096]), spec, g)
        out.append(y.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _finish(splits: list[tuple[Split, Split]], num_classes: int, names: list[str], natural: bool,
            spec: dict, classes: list[int]) -> LongTailData:
    """splits: (transformed, clean) for train, val and test."""
    (train, clean_train), (val, clean_val), (test, clean_test) = splits
    counts = torch.bincount(train.labels, minlength=num_classes).tolist()
    mean, std = _channel_stats(train.images)
    return LongTailData(train, val, test, num_classes, counts, names, mean, std, natural, spec,
                        clean_train, clean_val, clean_test, classes)


def build_glyphs(cfg: dict) -> LongTailData:
    """The `glyphs` source (gitune.registry.SOURCES): renders its own splits, the nuisance while rendering."""
    spec = validate_nuisance(cfg.get("nuisance"))
    c = int(cfg.get("num_classes") or 10)
    size = int(cfg.get("image_size") or 28)
    ch = int(cfg.get("channels") or 1)
    seed = int(cfg.get("seed", 0))
    n_max = int(cfg.get("n_max") or 500)
    counts = target_counts(cfg, c, n_max)
    classes = transformed_classes(cfg, spec, c)
    v, t = int(cfg["val_per_class"]), int(cfg["test_per_class"])
    splits = []
    for stream, per_class in enumerate((counts, [v] * c, [t] * c)):
        # Per-image draws do not depend on the nuisance spec, so the clean render is the same image
        # without its nuisance (the glyph analogue of keeping the untransformed original).
        clean = Split(*make_glyphs(c, per_class, size, {}, seed, ch, stream=stream))
        if not spec:
            splits.append((clean, clean))
            continue
        full = Split(*make_glyphs(c, per_class, size, spec, seed, ch, stream=stream))
        splits.append((_only_classes(full, clean, classes, c), clean))
    natural = bool(cfg["natural"]) if cfg.get("natural") is not None else False
    return _finish(splits, c, [f"glyph{i:02d}" for i in range(c)], natural, spec, classes)


def _check_raw_labels(raw: RawData, name: str) -> None:
    """Any registered source's labels within 0..num_classes-1 (and num_classes bounded), before bincount and
    the per-class lists are sized by them."""
    where = f"data.name: {name}"
    if not 1 <= raw.num_classes <= MAX_CLASSES:
        raise UserError(f"{where}: the source declares {raw.num_classes} classes (expected 1..{MAX_CLASSES:,})")
    for what, y in (("train labels", raw.train_labels), ("test labels", raw.test_labels)):
        if y is not None and len(y):
            check_labels_within(int(y.min()), int(y.max()), raw.num_classes, what, where)


def _split_indices(raw: RawData, cfg: dict) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray] | None]:
    """Per class: train indices (first n_c of the available images), val indices, held-out test indices."""
    seed = int(cfg.get("seed", 0))
    v = int(cfg["val_per_class"])
    labels = raw.train_labels.numpy()
    _check_raw_labels(raw, cfg["name"])
    order = np.argsort(labels, kind="stable")
    per_class = np.split(order, np.cumsum(np.bincount(labels, minlength=raw.num_classes))[:-1])

    test_idx = None
    if raw.test_images is None:
        t = int(cfg["test_per_class"])
        rng = _rng(seed, _TEST_STREAM)
        test_idx, kept = [], []
        for c, idx in enumerate(per_class):
            if len(idx) < t + v + 1:
                raise UserError(
                    f"data.test_per_class: class {shown(raw.class_names[c])} has {len(idx)} images, fewer than "
                    f"test_per_class ({t}) + val_per_class ({v}) + 1 training image (expected smaller values "
                    f"or a source test set)")
            pick = np.zeros(len(idx), dtype=bool)
            pick[rng.choice(len(idx), t, replace=False)] = True
            test_idx.append(idx[pick])
            kept.append(idx[~pick])  # source order preserved
        per_class = kept

    n_max = cfg.get("n_max") or max(len(idx) for idx in per_class)
    targets = target_counts(cfg, raw.num_classes, int(n_max))
    rng = _rng(seed, _VAL_STREAM)
    train_idx, val_idx = [], []
    for c, idx in enumerate(per_class):
        n_c = min(targets[c], len(idx))
        unused = idx[n_c:]
        if len(unused) >= v:
            val = np.sort(rng.choice(unused, v, replace=False))
        else:  # not enough left over: the last v images of the class become validation, train shrinks
            n_c = len(idx) - v
            if n_c < 1:
                raise UserError(
                    f"data.val_per_class: class {shown(raw.class_names[c])} has {len(idx)} usable images, "
                    f"not enough for val_per_class ({v}) + 1 training image (expected a smaller value)")
            val = idx[n_c:]
        train_idx.append(idx[:n_c])
        val_idx.append(val)
    return train_idx, val_idx, test_idx


def build_dataset(cfg: dict) -> LongTailData:
    """Build the long-tailed splits described by the `data` config group (validated once, here; the source is
    gitune.registry.SOURCES[data.name]).

    - Train: class c keeps its first n_c images in source order, n_c from the profile (zipf: class-to-rank
      order seeded by `instance`), capped at what the class has.
    - Validation: `val_per_class` images per class drawn (seeded by `seed`) from the images the subsampling
      left unused. When fewer are left (e.g. CIFAR-10's head class uses all 5,000), the last
      `val_per_class` images of the class become validation and its training count shrinks to match, so
      train and val never overlap; `class_counts` records the counts actually built.
    - Test: the source's test set; without one, `test_per_class` images per class held out (seeded) before
      the long tail is built. Glyphs render train, val and test from separate seed streams.
    - A non-empty `nuisance` is applied once to every image of every split (the transformed long tail of
      docs/method.md, long-tailed data), or with `nuisance_rank` r to the images of the class of rank r only; glyphs apply
      it while rendering. The untransformed originals are kept (`clean_*`), and the spec is recorded as
      the invariance T.
    """
    validate_data_config(cfg)
    loaded = resolve("source", cfg["name"])(cfg)
    if isinstance(loaded, LongTailData):  # the source rendered its own splits (glyphs)
        return loaded
    return _long_tail(loaded, cfg)


def _long_tail(raw: RawData, cfg: dict) -> LongTailData:
    """A raw source's images (in source order) cut into the long-tailed splits build_dataset describes."""
    spec = validate_nuisance(cfg.get("nuisance"))
    seed = int(cfg.get("seed", 0))
    classes = transformed_classes(cfg, spec, raw.num_classes)
    train_idx, val_idx, test_idx = _split_indices(raw, cfg)

    def transformed(clean: Split, tag: int) -> tuple[Split, Split]:
        if not spec:
            return clean, clean
        rows = torch.nonzero(torch.isin(clean.labels, torch.tensor(classes, dtype=torch.int64))).flatten()
        images = clean.images.clone()
        images[rows] = _transform_once(clean.images[rows], spec, seed, tag)
        return Split(images, clean.labels), clean

    def take(images: Tensor, labels: Tensor, parts: list[np.ndarray], tag: int) -> tuple[Split, Split]:
        idx = torch.from_numpy(np.concatenate(parts).astype(np.int64))
        return transformed(Split(images[idx], labels[idx].clone()), tag)

    train = take(raw.train_images, raw.train_labels, train_idx, 0)
    val = take(raw.train_images, raw.train_labels, val_idx, 1)
    if test_idx is None:
        test = transformed(Split(raw.test_images, raw.test_labels.clone()), 2)
    else:
        test = take(raw.train_images, raw.train_labels, test_idx, 2)
    return _finish([train, val, test], raw.num_classes, raw.class_names, raw.natural, spec, classes)
