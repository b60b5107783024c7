import numpy as np
import pytest
import torch

from gitune.data.synthetic import class_skeletons, make_glyphs
from gitune.errors import UserError


def test_shape_dtype_labels():
    x, y = make_glyphs(4, [3, 5, 0, 2], 28, {}, seed=0)
    assert x.shape == (10, 1, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == [0] * 3 + [1] * 5 + [3] * 2
    assert all(int(img.max()) > 100 for img in x)  # every glyph has visible strokes
    x3, _ = make_glyphs(2, [2, 2], 32, {}, seed=0, channels=3)
    assert x3.shape == (4, 3, 32, 32) and torch.equal(x3[:, 0], x3[:, 2])


def test_deterministic_by_seed_and_stream():
    spec = {"rotation": 180, "stroke": True, "background": 99, "translate": 2}
    a = make_glyphs(3, [6, 6, 6], 28, spec, seed=5)
    b = make_glyphs(3, [6, 6, 6], 28, spec, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], make_glyphs(3, [6, 6, 6], 28, spec, seed=6)[0])
    assert not torch.equal(a[0], make_glyphs(3, [6, 6, 6], 28, spec, seed=5, stream=1)[0])


def test_first_images_of_a_class_do_not_depend_on_other_counts():
    a, _ = make_glyphs(3, [4, 9, 2], 28, {"rotation": 90}, seed=1)
    b, _ = make_glyphs(3, [7, 1, 2], 28, {"rotation": 90}, seed=1)
    assert torch.equal(a[:4], b[:4])  # class 0
    assert torch.equal(a[4:5], b[7:8])  # class 1, first image


def test_images_within_class_differ_and_classes_differ():
    x, y = make_glyphs(5, [20] * 5, 28, {}, seed=0)
    f = x.float().flatten(1)
    assert not torch.equal(x[0], x[1])
    means = torch.stack([f[y == c].mean(0) for c in range(5)])
    within = (f - means[y]).norm(dim=1).mean()
    between = torch.cdist(means, means)[~torch.eye(5, dtype=torch.bool)].min()
    assert between > 0.5 * within


def test_skeletons_distinct():
    sk = class_skeletons(49, seed=0)
    assert len(sk) == 49
    keys = {tuple(np.round(s, 4).flatten().tolist()) for s in sk}
    assert len(keys) == 49
    assert all(3 <= len(s) <= 5 for s in sk)
    assert all(np.array_equal(a, b) for a, b in zip(sk[:10], class_skeletons(10, seed=0)))


def test_nuisances_act():
    plain, _ = make_glyphs(2, [30, 30], 28, {}, seed=2)
    bg, _ = make_glyphs(2, [30, 30], 28, {"background": 99}, seed=2)
    nz = plain != 0
    assert torch.equal(bg[nz], plain[nz])
    assert bg.max() > 0 and (bg[~nz] <= 99).all() and (bg[~nz] > 0).any()
    thick, _ = make_glyphs(2, [30, 30], 28, {"stroke": True}, seed=2)
    ink_plain = (plain > 0).flatten(1).sum(1).float()
    ink_thick = (thick > 0).flatten(1).sum(1).float()
    assert (ink_thick / ink_plain).std() > 0.1  # per-image stroke width varies
    rot, _ = make_glyphs(2, [30, 30], 28, {"rotation": 180}, seed=2)
    assert (rot.float() - plain.float()).abs().mean() > 5


def test_bad_arguments():
    with pytest.raises(UserError, match="data.image_size"):
        make_glyphs(2, [1, 1], 8, {}, seed=0)
    with pytest.raises(UserError, match="data.nuisance.rotation"):
        make_glyphs(2, [1, 1], 28, {"rotation": 500}, seed=0)
