"""MUNIT generator/discriminator (SCIENCE §4): shapes, style use, RNG control, training steps, size checks."""

import pytest
import torch

from gitune.models.munit import MUNIT_DEFAULTS, MunitDiscriminator, MunitGenerator, build_munit, munit_check
from gitune.training.munit import (MUNIT_LOSS_WEIGHTS, build_munit_optimizers, dis_loss, dis_update, gen_losses,
                                   gen_update, munit_step, sample_grid)

TINY = {"dim": 8, "style_dim": 4, "n_downsample": 2, "n_res": 1, "mlp_dim": 16, "mlp_layers": 2,
        "disc_dim": 8, "disc_layers": 3, "disc_scales": 1}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(in_channels, size=28, **over):
    torch.manual_seed(0)
    return build_munit({**TINY, **over}, in_channels, size)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_shapes_and_range(in_channels, size):
    gen, dis = _tiny(in_channels, size, disc_scales=2)
    assert gen.in_channels == in_channels and gen.style_dim == TINY["style_dim"]
    x = torch.rand(2, in_channels, size, size) * 2 - 1
    with torch.no_grad():
        content, style = gen.encode(x)
        assert content.shape == (2, 4 * TINY["dim"], size // 4, size // 4)
        assert style.shape == (2, TINY["style_dim"], 1, 1)
        torch.testing.assert_close(gen.encode_content(x), content)
        out = gen.decode(content, style)
        fwd = gen(x, gen.random_style(2, "cpu", torch.Generator().manual_seed(1)))
        patches = dis(x)
    for img in (out, fwd):
        assert img.shape == x.shape
        assert img.min() >= -1 and img.max() <= 1
    assert len(patches) == 2
    assert patches[0].shape == (2, 1, size // 8, size // 8)
    assert patches[1].shape == (2, 1, (size + 1) // 2 // 8, (size + 1) // 2 // 8)


def test_default_sizes_build_at_28_32_64():
    for size in (28, 32, 64):
        assert munit_check({}, size) is None
    gen, dis = build_munit({}, 1, 28)
    with torch.no_grad():
        (patch,) = dis(torch.zeros(1, 1, 28, 28))
        assert patch.shape == (1, 1, 1, 1)
        assert gen.encode_content(torch.zeros(1, 1, 28, 28)).shape == (1, 256, 7, 7)
    assert MUNIT_DEFAULTS["style_dim"] == gen.style_dim == 8


def test_decoder_uses_style_and_rng_is_controlled():
    gen, _ = _tiny(3, 32)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        content = gen.encode_content(x)
        s1 = gen.random_style(3, "cpu", torch.Generator().manual_seed(5))
        s1_again = gen.random_style(3, "cpu", torch.Generator().manual_seed(5))
        s2 = gen.random_style(3, "cpu", torch.Generator().manual_seed(6))
        assert s1.shape == (3, TINY["style_dim"], 1, 1)
        torch.testing.assert_close(s1, s1_again)
        out1, out1_again, out2 = gen.decode(content, s1), gen.decode(content, s1_again), gen.decode(content, s2)
    torch.testing.assert_close(out1, out1_again)
    assert (out1 - out2).abs().mean() > 1e-3


def test_training_lowers_reconstruction_loss():
    gen, dis = _tiny(1, 28)
    torch.manual_seed(1)
    # Fixed, structured images: blurred blobs in [-1, 1].
    x = torch.nn.functional.avg_pool2d(torch.rand(16, 1, 28, 28), 5, stride=1, padding=2)
    x = (x - x.amin()) / (x.amax() - x.amin()) * 2 - 1
    opt_g, opt_d, sched_g, sched_d = build_munit_optimizers(gen, dis, lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    recon = []
    for _ in range(40):
        losses = munit_step(gen, dis, opt_g, opt_d, x, rng)
        sched_g.step()
        sched_d.step()
        recon.append(losses["loss/recon_x"].item())
    assert set(losses) == {"loss/dis", "loss/gen_total", "loss/gen_adv", "loss/recon_x", "loss/recon_s",
                           "loss/recon_c"}
    assert all(v.dim() == 0 and not v.requires_grad for v in losses.values())
    assert sum(recon[-5:]) / 5 < 0.6 * recon[0], recon


def test_updates_touch_only_their_own_network():
    gen, dis = _tiny(1, 28)
    opt_g, opt_d, _, _ = build_munit_optimizers(gen, dis, lr=1e-3)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    rng = torch.Generator().manual_seed(0)

    def snap(m):
        return [p.detach().clone() for p in m.parameters()]

    def same(m, before):
        return all(torch.equal(p, b) for p, b in zip(m.parameters(), before))

    g0, d0 = snap(gen), snap(dis)
    dis_update(gen, dis, opt_d, x, rng)
    assert same(gen, g0) and not same(dis, d0)

    g1, d1 = snap(gen), snap(dis)
    gen_update(gen, dis, opt_g, x, rng)
    assert same(dis, d1) and not same(gen, g1)
    assert all(p.requires_grad for p in dis.parameters())  # unfrozen again


def test_discriminator_loss_decreases_with_fixed_fakes():
    _, dis = _tiny(1, 28)
    opt_d = torch.optim.Adam(dis.parameters(), lr=1e-3, betas=(0.5, 0.999))
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    fake = torch.zeros(8, 1, 28, 28)
    first = dis_loss(dis, real, fake).item()
    for _ in range(20):
        opt_d.zero_grad()
        loss = dis_loss(dis, real, fake)
        loss.backward()
        opt_d.step()
    assert dis_loss(dis, real, fake).item() < 0.5 * first


def test_size_errors_name_the_key():
    with pytest.raises(ValueError, match=r"^generator\.n_downsample: 30 px"):
        build_munit({**TINY, "n_downsample": 2}, 1, 30)
    with pytest.raises(ValueError, match=r"^generator\.disc_layers:"):
        build_munit({**TINY, "disc_layers": 5}, 1, 28)
    with pytest.raises(ValueError, match=r"^generator\.disc_scales:"):
        build_munit({**TINY, "disc_layers": 4, "disc_scales": 3}, 1, 28)
    with pytest.raises(ValueError, match=r"^generator\.nres: unknown key"):
        build_munit({"nres": 2}, 1, 28)
    assert munit_check({"dim": 0}, 32).startswith("generator.dim:")
    assert munit_check({"disc_layers": 4, "disc_scales": 2}, 28).startswith("generator.disc_scales:")
    assert munit_check({"disc_layers": 4, "disc_scales": 2}, 32) is None  # 32 -> 16 px, exactly 2**4


def test_sample_grid_shape_range_and_mode():
    gen, _ = _tiny(3, 32)
    gen.train()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    grid = sample_grid(gen, x, 4, torch.Generator().manual_seed(0))
    assert grid.shape == (3, 3 * 32, 5 * 32)
    assert grid.min() >= 0 and grid.max() <= 1
    torch.testing.assert_close(grid[:, 32:64, :32], (x[1] + 1) / 2)  # first column: the real images
    assert gen.training
    assert isinstance(gen, MunitGenerator)
    assert MunitDiscriminator(1, dim=4, n_layers=2)(torch.zeros(1, 1, 16, 16))[0].shape == (1, 1, 4, 4)


def test_gen_losses_total_is_the_weighted_sum():
    gen, dis = _tiny(1, 28)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    style = gen.random_style(2, "cpu", torch.Generator().manual_seed(0))
    weights = {"gan": 0.5, "recon_x": 3.0, "recon_s": 2.0, "recon_c": 0.25}
    with torch.no_grad():
        terms = gen_losses(gen, dis, x, style, weights)
        default = gen_losses(gen, dis, x, style)
    expected = sum(weights[k] * terms["adv" if k == "gan" else k] for k in weights)
    torch.testing.assert_close(terms["total"], expected)
    expected_default = sum(MUNIT_LOSS_WEIGHTS[k] * default["adv" if k == "gan" else k] for k in weights)
    torch.testing.assert_close(default["total"], expected_default)
    with pytest.raises(ValueError, match="recon_cyc"):
        gen_losses(gen, dis, x, style, {"recon_cyc": 1.0})
