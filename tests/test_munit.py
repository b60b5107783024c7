"""MUNIT generator/discriminator (docs/method.md, the generator): shapes, style use, RNG control, training steps, size checks."""

import pytest
import torch

from gitune.models.munit import (MUNIT_DEFAULTS, ImageConv2d, LayerNorm, MunitDiscriminator, MunitGenerator,
                                 build_munit, instance_norm, munit_check)
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


def _reference_step(gen, dis, opt_g, opt_d, x, rng):
    """munit_step composed of unbatched calls, as it was before batching: the discriminator update
    encodes x itself; two decoder calls (own style, random style); two discriminator calls (fake, real)."""
    with torch.no_grad():
        fake = gen.decode(gen.encode_content(x), gen.random_style(x.shape[0], x.device, rng))
    opt_d.zero_grad(set_to_none=True)
    d = x.new_zeros(())
    for out_fake, out_real in zip(dis(fake), dis(x)):
        d = d + out_fake.pow(2).mean() + (out_real - 1).pow(2).mean()
    d.backward()
    opt_d.step()
    style = gen.random_style(x.shape[0], x.device, rng)
    opt_g.zero_grad(set_to_none=True)
    for p in dis.parameters():
        p.requires_grad_(False)
    content, s_own = gen.encode(x)
    recon_x = (gen.decode(content, s_own) - x).abs().mean()
    fake = gen.decode(content, style)
    c_rec, s_rec = gen.encode(fake)
    recon_s = (s_rec - style).abs().mean()
    recon_c = (c_rec - content).abs().mean()
    adv = x.new_zeros(())
    for out in dis(fake):
        adv = adv + (out - 1).pow(2).mean()
    total = adv + 10 * recon_x + recon_s + recon_c
    total.backward()
    for p in dis.parameters():
        p.requires_grad_(True)
    opt_g.step()
    return {"loss/dis": d.detach(), "loss/gen_total": total.detach(), "loss/gen_adv": adv.detach(),
            "loss/recon_x": recon_x.detach(), "loss/recon_s": recon_s.detach(), "loss/recon_c": recon_c.detach()}


def _params(gen, dis):
    return list(gen.parameters()) + list(dis.parameters())


def _step_pair(lr):
    """Two identical (gen, dis) pairs: one with build_munit_optimizers (fused Adam), one with for-loop Adam
    of the same settings; the same images and RNG streams for both."""
    new, ref = _tiny(1, 28, disc_scales=2), _tiny(1, 28, disc_scales=2)
    new_opts = build_munit_optimizers(*new, lr=lr)[:2]
    ref_opts = [torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=1e-4, foreach=False)
                for m in ref]
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return (new, new_opts, torch.Generator().manual_seed(3)), (ref, ref_opts, torch.Generator().manual_seed(3)), x


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_batched_step_matches_the_unbatched_reference(float64):
    """munit_step (one encoding of x for both updates, one decoder call for both styles, one discriminator
    call on real + fake, fused Adam) gives the reference's losses and parameters, step after step.

    In float64: rounding stays far below the tolerance, and Adam does not blow up the rounding noise of
    grads that are zero in exact arithmetic (biases ahead of an instance norm) into updates of ±lr, as it
    does in float32 (the float32 test below compares grads instead)."""
    (new, new_opts, new_rng), (ref, ref_opts, ref_rng), x = _step_pair(lr=1e-3)
    for _ in range(3):
        got = munit_step(*new, *new_opts, x, new_rng)
        want = _reference_step(*ref, *ref_opts, x, ref_rng)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=0, msg=key)
        for p, q in zip(_params(*new), _params(*ref)):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-9)
    assert got["loss/recon_x"].dtype == torch.float64


def test_batched_step_matches_the_unbatched_reference_in_float32():
    """The same in float32, the training dtype: the losses of two steps (rtol 1e-4), and the grads of the
    last step (each munit_step leaves the generator's grads of its update, the discriminator's of its own)."""
    (new, new_opts, new_rng), (ref, ref_opts, ref_rng), x = _step_pair(lr=1e-4)
    for _ in range(2):
        got = munit_step(*new, *new_opts, x, new_rng)
        want = _reference_step(*ref, *ref_opts, x, ref_rng)
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=0, msg=key)
    scale = max(q.grad.abs().max().item() for q in _params(*ref))
    for p, q in zip(_params(*new), _params(*ref)):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale)


def test_fast_layers_match_the_torch_layers():
    """ImageConv2d (channels-last on CPU), instance_norm and LayerNorm (as group norm) compute what
    nn.Conv2d, F.instance_norm and F.layer_norm + per-channel affine compute, forward and backward."""
    torch.manual_seed(0)
    conv = ImageConv2d(16, 3, 7)
    plain = torch.nn.Conv2d(16, 3, 7)
    plain.load_state_dict(conv.state_dict())
    ln = LayerNorm(16)
    torch.nn.init.normal_(ln.gamma)
    torch.nn.init.normal_(ln.beta)
    x = torch.randn(4, 16, 12, 12, requires_grad=True)
    pairs = [(conv(x), plain(x), [x, conv.weight, conv.bias], [x, plain.weight, plain.bias]),
             (instance_norm(x), torch.nn.functional.instance_norm(x), [x], [x]),
             (ln(x), torch.nn.functional.layer_norm(x, x.shape[1:]) * ln.gamma.view(1, -1, 1, 1)
              + ln.beta.view(1, -1, 1, 1), [x, ln.gamma, ln.beta], [x, ln.gamma, ln.beta])]
    for fast, slow, fast_in, slow_in in pairs:
        torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
        g = torch.randn_like(slow)
        for a, b in zip(torch.autograd.grad(fast, fast_in, g), torch.autograd.grad(slow, slow_in, g)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        assert fast.is_contiguous()
