import torch

from gitune.data.augment import (color_jitter, normalize, random_crop, random_flip, shift, standard_augment,
                                 to_float)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=6, c=3, h=9, w=11, seed=0):
    # distinct positive values so every shifted window is identifiable
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g) * 0.9 + 0.05


def _shifted(x, dy, dx):
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[..., i, j] = x[..., si, sj]
    return out


def test_to_float_range():
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(to_float(x), torch.tensor([0.0, 128 / 255, 1.0]).view(1, 1, 1, 3))


def test_shift_matches_reference():
    x = _images(2)
    out = shift(x, torch.tensor([2, -1]), torch.tensor([-3, 0]))
    assert torch.equal(out[0], _shifted(x[0], 2, -3))
    assert torch.equal(out[1], _shifted(x[1], -1, 0))


def test_random_crop_pad0_identity():
    x = _images()
    assert torch.equal(random_crop(x, 0, _gen()), x)


def test_random_crop_is_shifted_window_per_image():
    x = _images(n=12)
    pad = 2
    out = random_crop(x, pad, _gen(1))
    assert out.shape == x.shape
    shifts = set()
    for n in range(len(x)):
        found = [(dy, dx) for dy in range(-pad, pad + 1) for dx in range(-pad, pad + 1)
                 if torch.equal(out[n], _shifted(x[n], dy, dx))]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 1  # independent offsets per image


def test_random_crop_uint8_and_reproducible():
    x = (torch.rand(5, 1, 8, 8, generator=_gen(2)) * 255).to(torch.uint8)
    a, b = random_crop(x, 3, _gen(7)), random_crop(x, 3, _gen(7))
    assert a.dtype == torch.uint8 and torch.equal(a, b)


def test_random_flip():
    x = _images(n=64)
    out = random_flip(x, _gen(3))
    same = [torch.equal(out[i], x[i]) for i in range(len(x))]
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    assert all(s or f for s, f in zip(same, flipped))
    assert 10 < sum(flipped) < 54


def test_color_jitter_brightness_only_scales_each_image():
    x = _images(n=8) * 0.5
    out = color_jitter(x, _gen(4), brightness=0.4, contrast=0.0)
    ratio = out / x
    for n in range(len(x)):
        r = ratio[n].flatten()
        assert torch.allclose(r, r[0].expand_as(r), atol=1e-5)
        assert 0.6 - 1e-6 <= float(r[0]) <= 1.4 + 1e-6
    assert out.min() >= 0 and out.max() <= 1


def test_color_jitter_contrast_keeps_mean_without_clipping():
    x = 0.4 + 0.1 * _images(n=4)
    out = color_jitter(x, _gen(5), brightness=0.0, contrast=0.4)
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    assert not torch.allclose(out, x)


def test_standard_augment_reproducible():
    x = _images(n=4, h=16, w=16)
    a, b = standard_augment(x, _gen(9)), standard_augment(x, _gen(9))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, standard_augment(x, _gen(10)))


def test_normalize_per_channel():
    x = torch.ones(2, 3, 4, 4) * torch.tensor([0.5, 0.2, 0.8]).view(1, 3, 1, 1)
    out = normalize(x, (0.5, 0.1, 0.4), (0.5, 0.1, 0.2))
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([[0.0, 1.0, 2.0]] * 2))
