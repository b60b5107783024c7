import pytest
import torch

from gitune.data.nuisances import (NUISANCES, _morph, apply_nuisance, random_stroke, rotate,
                                   validate_nuisance)
from gitune.errors import UserError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _glyph_like(n=8, size=16, seed=0):
    """Sparse images: a bright blob on an exact-zero background."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    x[:, :, 5:11, 6:9] = torch.rand(n, 1, 6, 3, generator=g) * 0.8 + 0.2
    return x


def test_zero_spec_is_identity():
    x = _glyph_like()
    for spec in ({}, {"rotation": 0}, {"rotation": 0, "background": 0, "stroke": False, "translate": 0}):
        out = apply_nuisance(x, spec, _gen())
        assert torch.equal(out, x) and out is not x


def test_rotate_quarter_turn_matches_rot90():
    x = torch.rand(3, 2, 12, 12, generator=_gen(1))
    out = rotate(x, torch.full((3,), 90.0))
    ref = torch.rot90(x, k=1, dims=(2, 3))  # counter-clockwise
    assert torch.allclose(out, ref, atol=1e-4)


def test_rotation_reproducible_and_varies():
    x = _glyph_like()
    a = apply_nuisance(x, {"rotation": 180}, _gen(3))
    assert torch.equal(a, apply_nuisance(x, {"rotation": 180}, _gen(3)))
    assert not torch.equal(a, apply_nuisance(x, {"rotation": 180}, _gen(4)))
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a[0], a[1])  # independent draws per image


def test_background_changes_only_zero_pixels():
    x = _glyph_like(n=32, size=12)
    out = apply_nuisance(x, {"background": 99}, _gen(5))
    nz = x != 0
    assert torch.equal(out[nz], x[nz])
    for n in range(len(x)):
        vals = out[n][x[n] == 0].unique()
        assert len(vals) == 1
        v = round(float(vals[0]) * 255)
        assert 0 <= v <= 99 and abs(float(vals[0]) * 255 - v) < 1e-3
    assert len({round(float(out[n, 0, 0, 0]) * 255) for n in range(len(x))}) > 3


def test_background_needs_all_channels_zero():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1, 0, 0] = 0.5
    out = apply_nuisance(x, {"background": 255}, _gen(0))
    assert out[0, 0, 0, 0] == 0 and out[0, 1, 0, 0] == 0.5


@pytest.mark.parametrize("side", [1, 2, 3, 4])
def test_morph_shapes_and_order(side):
    x = torch.rand(4, 2, 13, 13, generator=_gen(side))
    d, e = _morph(x, side, True), _morph(x, side, False)
    assert d.shape == x.shape and e.shape == x.shape
    assert (d >= x).all() and (e <= x).all()
    if side > 1:
        assert (d > x).any() and (e < x).any()


def test_morph_dilation_of_point_is_square():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1
    assert _morph(x, 3, True).sum() == 9
    assert _morph(x, 2, True).sum() == 4
    assert _morph(_morph(x, 3, True), 3, False).sum() == 1


def test_random_stroke_dilates_or_erodes_each_image():
    x = _glyph_like(n=40)
    out = random_stroke(x, _gen(6))
    grew = [bool((out[n] >= x[n]).all() and (out[n] > x[n]).any()) for n in range(len(x))]
    shrank_or_same = [bool((out[n] <= x[n]).all()) for n in range(len(x))]
    assert all(g or s for g, s in zip(grew, shrank_or_same))
    assert 12 < sum(grew) < 36  # p(dilate) = 0.6
    assert torch.equal(out, random_stroke(x, _gen(6)))


def test_translate_is_integer_shift():
    x = _glyph_like(n=10)
    out = apply_nuisance(x, {"translate": 2}, _gen(7))
    for n in range(len(x)):
        ok = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[n])
                ref[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):16 + min(dx, 0)] = \
                    x[n][:, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):16 + min(-dx, 0)]
                ok |= torch.equal(out[n], ref)
        assert ok


def test_all_nuisances_same_generator_state_same_output():
    x = _glyph_like(n=16)
    spec = {"rotation": 30, "background": 50, "stroke": True, "translate": 2}
    g = _gen(11)
    state = g.get_state()
    a = apply_nuisance(x, spec, g)
    g.set_state(state)
    assert torch.equal(a, apply_nuisance(x, spec, g))
    assert a.shape == x.shape


@pytest.mark.parametrize("spec,key", [
    ({"blur": 1}, "data.nuisance.blur"),
    ({"rotation": -5}, "data.nuisance.rotation"),
    ({"rotation": 181}, "data.nuisance.rotation"),
    ({"background": 256}, "data.nuisance.background"),
    ({"translate": -1}, "data.nuisance.translate"),
    ({"stroke": 2}, "data.nuisance.stroke"),
    ({"rotation": "lots"}, "data.nuisance.rotation"),
])
def test_validate_rejects(spec, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        validate_nuisance(spec)


def test_validate_keeps_enabled_only():
    assert validate_nuisance({"rotation": 180, "background": 0, "stroke": False}) == {"rotation": 180.0}
    assert validate_nuisance(None) == {}
    assert set(NUISANCES) == {"rotation", "background", "stroke", "translate"}
    with pytest.raises(UserError, match=r"git\.oracle"):
        validate_nuisance({"x": 1}, key_prefix="git.oracle")
