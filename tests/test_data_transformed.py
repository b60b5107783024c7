"""Transformed long tails (docs/method.md, long-tailed data): exact Zipf counts, seeded instances, untransformed copies kept,
the single-transformed-class mode, and the oracle that applies the true nuisance during training."""

import numpy as np
import pytest
import torch

from gitune.config import DEFAULTS
from gitune.data.augment import to_float
from gitune.data.dataset import build_dataset, ranked_classes, target_counts
from gitune.data.nuisances import apply_nuisance
from gitune.errors import UserError
from gitune.training.git import GitAugmenter


def data_cfg(**kw):
    return {**DEFAULTS["data"], "name": "glyphs", "download": False, "val_per_class": 3, "test_per_class": 3,
            "nuisance": {}, **kw}


K49 = dict(profile="zipf", num_classes=49, n_max=4800, alpha=2.0, n_min=5)


def _k49_npz(tmp_path, instance, extra=6, size=8):
    """An npz with exactly the images a K49-LT instance needs per class, plus `extra` for val/test."""
    need = [n + extra for n in target_counts({**K49, "instance": instance}, 49, 4800)]
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(need)]).astype(np.int64)
    rng = np.random.default_rng(instance)
    images = rng.integers(0, 256, (len(labels), size, size), dtype=np.uint8)
    p = tmp_path / f"k49_{instance}.npz"
    np.savez(p, images=images, labels=labels)
    return str(p)


def test_k49_lt_counts_exact_on_npz_and_glyphs(tmp_path):
    # docs/method.md, long-tailed data: 49 classes, n_1 = 4800, alpha = 2, floor at 5 -> 7,822 training images.
    data = build_dataset(data_cfg(name="npz", path=_k49_npz(tmp_path, 3), instance=3, n_max=4800,
                                  **{k: v for k, v in K49.items() if k != "n_max"}))
    assert sum(data.class_counts) == len(data.train) == 7822
    assert sorted(data.class_counts, reverse=True)[:4] == [4800, 1200, 533, 300]
    assert min(data.class_counts) == 5 and data.class_counts.count(5) == 21  # ranks 29..49: floor(4800/k²) ≤ 5
    glyphs = build_dataset(data_cfg(image_size=16, **K49))
    assert sum(glyphs.class_counts) == 7822


def test_instances_reproducible_and_different(tmp_path):
    cfg = data_cfg(image_size=16, profile="zipf", num_classes=12, n_max=80, nuisance={"rotation": 180})
    a, b = build_dataset({**cfg, "instance": 1}), build_dataset({**cfg, "instance": 1})
    assert torch.equal(a.train.images, b.train.images) and a.class_counts == b.class_counts
    others = [build_dataset({**cfg, "instance": i}).class_counts for i in (2, 3)]
    assert all(c != a.class_counts for c in others) and others[0] != others[1]
    # Each instance is a permutation of the same profile: ranks → classes differ, the multiset does not.
    assert all(sorted(c) == sorted(a.class_counts) for c in others)
    assert ranked_classes({**cfg, "instance": 1}, 12) != ranked_classes({**cfg, "instance": 2}, 12)


@pytest.mark.parametrize("nuisance", [{"rotation": 180.0}, {"background": 99}, {"stroke": True}])
def test_clean_copies_are_the_untransformed_originals(tmp_path, nuisance):
    path = _k49_npz(tmp_path, 0)
    base = data_cfg(name="npz", path=path, profile="zipf", num_classes=49, n_max=300, instance=0)
    plain = build_dataset(base)
    data = build_dataset({**base, "nuisance": nuisance})
    for split in ("train", "val", "test"):
        clean, transformed = getattr(data, f"clean_{split}"), getattr(data, split)
        assert torch.equal(clean.images, getattr(plain, split).images)
        assert torch.equal(clean.labels, transformed.labels)
        assert not torch.equal(clean.images, transformed.images)
    assert data.transformed_classes == list(range(49))
    assert plain.clean_val is plain.val  # no nuisance: no copy


def test_glyph_clean_copies_render_the_same_glyphs_without_nuisance():
    cfg = data_cfg(image_size=16, num_classes=4, n_max=20, profile="exp", ratio=4)
    plain = build_dataset(cfg)
    rotated = build_dataset({**cfg, "nuisance": {"rotation": 180}})
    assert torch.equal(rotated.clean_train.images, plain.train.images)
    assert torch.equal(rotated.clean_test.images, plain.test.images)
    assert not torch.equal(rotated.train.images, plain.train.images)


@pytest.mark.parametrize("source", ["glyphs", "npz"])
def test_single_transformed_class_changes_only_that_class(tmp_path, source):
    extra = {"name": "npz", "path": _k49_npz(tmp_path, 5), "num_classes": 49} if source == "npz" else \
        {"image_size": 16, "num_classes": 49}
    cfg = data_cfg(profile="zipf", n_max=200, instance=5, nuisance={"rotation": 180}, nuisance_rank=2, **extra)
    data = build_dataset(cfg)
    target = ranked_classes(cfg, 49)[1]  # rank 2
    assert data.transformed_classes == [target]
    assert data.class_counts[target] == 50  # 200 / 2²: the second-largest class
    for split in ("train", "val", "test"):
        clean, mixed = getattr(data, f"clean_{split}"), getattr(data, split)
        differs = (clean.images != mixed.images).flatten(1).any(1)
        assert set(clean.labels[differs].tolist()) == {target}
        assert differs[clean.labels == target].float().mean() > 0.9


def test_nuisance_rank_out_of_range_is_a_user_error():
    with pytest.raises(UserError, match="data.nuisance_rank"):
        build_dataset(data_cfg(image_size=16, num_classes=4, n_max=10, nuisance={"rotation": 90},
                               nuisance_rank=5))


def test_oracle_applies_the_true_nuisance_to_clean_sources():
    """The oracle is GIT with the nuisance in the generator's place: the replaced positions hold exactly
    T(clean source) for the sources the sampler drew, with the sources' labels."""
    data = build_dataset(data_cfg(image_size=16, num_classes=4, n_max=40, profile="exp", ratio=8,
                                  nuisance={"rotation": 180}))
    labels, clean = data.train.labels, data.clean_train.images
    spec = data.nuisance

    def draw(sampler, rng):
        return torch.randperm(len(labels), generator=rng)

    rng = torch.Generator().manual_seed(4)
    oracle = GitAugmenter(lambda x, g: apply_nuisance(x, spec, g), 0.5, 0, data.class_counts, None, "same",
                          clean, labels, draw, rng, prefix="oracle")
    replay = torch.Generator().manual_seed(4)
    oracle.begin_epoch(0, "uniform")
    source = torch.randperm(len(labels), generator=replay)[:8]
    expected = apply_nuisance(to_float(clean[source]), spec, replay)
    x = to_float(data.train.images[:16])
    y = labels[:16]
    out, y_out = oracle.apply(x, y)
    assert torch.allclose(out[:8], expected) and torch.equal(out[8:], x[8:])
    assert torch.equal(y_out[:8], labels[source])
    assert oracle.metrics() == {"oracle/generated": 8, "oracle/candidates": 8}


def test_git_and_oracle_take_disjoint_ranges_of_the_batch():
    labels = torch.arange(4).repeat_interleave(8)
    images = torch.full((32, 1, 16, 16), 100, dtype=torch.uint8)

    def draw(sampler, rng):
        return torch.randperm(len(labels), generator=rng)

    def mixer(value, prob, prefix):
        return GitAugmenter(lambda x, g: torch.full_like(x, value), prob, 0, [8] * 4, None, "same", images,
                            labels, draw, torch.Generator().manual_seed(0), prefix=prefix)

    git, oracle = mixer(0.25, 0.25, "git"), mixer(0.75, 0.5, "oracle")
    for m in (git, oracle):
        m.begin_epoch(0, "uniform")
    x, y = torch.ones(16, 1, 16, 16), torch.zeros(16, dtype=torch.long)
    x, y = git.apply(x, y, 0)
    x, y = oracle.apply(x, y, git.count(16))
    firsts = x[:, 0, 0, 0].tolist()
    assert firsts == [0.25] * 4 + [0.75] * 8 + [1.0] * 4
    # A range that would run past the batch end is cut there.
    _, _ = oracle.apply(torch.ones(16, 1, 16, 16), torch.zeros(16, dtype=torch.long), 12)
    assert oracle.metrics()["oracle/candidates"] == 8 + 4
