"""MUNIT training within one domain (docs/method.md, the generator): losses, optimizers, one iteration, a sample grid.

One iteration follows the reference trainer: a discriminator update on detached fakes, then a generator
update, each with its own style draw. Losses: least-squares GAN, image reconstruction, style-code and
content-code reconstruction (L1); cycle and perceptual losses are off, as in GIT.

Content reconstruction: as the reference (`recon_criterion(c_recon, c)`), the target content code is NOT
detached, so the term pulls the encoder's code of x and of the re-styled image towards each other.

Speed (CPU above all; benchmarks/generator_step.py): the step encodes x once for both updates, decodes
the own-style and random-style images in one call and scores real and fake in one discriminator call;
every layer is per sample, so this is the reference's arithmetic, float rounding apart. Adam is fused.

Losses come back as detached 0-dim tensors on the training device: no host sync per step; the caller
reads them (e.g. `.item()`) only when it reports.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from gitune.models.munit import MunitDiscriminator, MunitGenerator

MUNIT_LOSS_WEIGHTS = {"gan": 1.0, "recon_x": 10.0, "recon_s": 1.0, "recon_c": 1.0}


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """t in fp32 when autocast made it bf16; fp32 and fp64 tensors are returned as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def dis_loss(dis: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss, summed over scales: mean(D(fake)^2) + mean((D(real) - 1)^2).

    One discriminator call on cat(real, fake): it has no batch-dependent layer, so this equals a call
    on each up to float rounding, with half the layer calls."""
    n = real.shape[0]
    total = real.new_zeros(())
    for out in dis(torch.cat([real, fake])):
        out = at_least_fp32(out)  # a no-op in fp32/fp64; under bf16 autocast the loss is reduced in fp32
        total = total + out[n:].pow(2).mean() + (out[:n] - 1).pow(2).mean()
    return total


def gen_adv_loss(dis: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """LSGAN generator loss, summed over scales: mean((D(fake) - 1)^2)."""
    total = fake.new_zeros(())
    for out in dis(fake):
        total = total + (at_least_fp32(out) - 1).pow(2).mean()
    return total


def _weights(weights: dict | None) -> dict:
    w = dict(MUNIT_LOSS_WEIGHTS)
    for key, value in (weights or {}).items():
        if key not in w:
            raise ValueError(f"munit loss weight {key!r}: unknown (expected one of: {', '.join(w)})")
        w[key] = float(value)
    return w


def decode_pairs(gen: MunitGenerator, content: torch.Tensor, style_a: torch.Tensor,
                 style_b: torch.Tensor) -> torch.Tensor:
    """cat(decode(content, style_a), decode(content, style_b)) in one decoder call.

    Instance norm and AdaIN are per sample, so this equals the two calls up to float rounding, with
    half the layer calls (the decoder is most of a step's work)."""
    return gen.decode(torch.cat([content, content]), torch.cat([style_a, style_b]))


def gen_losses(gen: MunitGenerator, dis: nn.Module, x: torch.Tensor, style: torch.Tensor,
               weights: dict | None = None,
               codes: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The generator's loss terms for batch x and random styles `style` (graph kept; 'total' is weighted).

    `codes`: gen.encode(x) with its graph, when the caller has it already (munit_step does)."""
    w = _weights(weights)
    content, s_own = codes if codes is not None else gen.encode(x)
    n = x.shape[0]
    both = decode_pairs(gen, content, s_own, style)
    recon_x = (at_least_fp32(both[:n]) - x).abs().mean()
    fake = both[n:]
    c_rec, s_rec = gen.encode(fake)
    recon_s = (at_least_fp32(s_rec) - style).abs().mean()
    recon_c = (at_least_fp32(c_rec) - at_least_fp32(content)).abs().mean()  # target not detached, as the reference
    adv = gen_adv_loss(dis, fake)
    total = w["gan"] * adv + w["recon_x"] * recon_x + w["recon_s"] * recon_s + w["recon_c"] * recon_c
    return {"total": total, "adv": adv, "recon_x": recon_x, "recon_s": recon_s, "recon_c": recon_c}


@contextmanager
def _frozen(module: nn.Module):
    """Turn off gradients of `module`'s parameters for the block (so they get no .grad), then restore."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def dis_update(gen: MunitGenerator, dis: MunitDiscriminator, opt_d: torch.optim.Optimizer, x: torch.Tensor,
               generator: torch.Generator | None = None, content: torch.Tensor | None = None,
               autocast=nullcontext) -> torch.Tensor:
    """One discriminator step on real x and fakes decoded (without graph) from x's content with new styles.

    `content`: gen.encode_content(x) when the caller has it already (munit_step does), else computed here.
    `autocast`: a context for the forward passes and the loss (bf16), never around backward or the step."""
    with torch.no_grad(), autocast():
        if content is None:
            content = gen.encode_content(x)
        fake = gen.decode(content.detach(), gen.random_style(x.shape[0], x.device, generator))
    opt_d.zero_grad(set_to_none=True)
    with autocast():
        loss = dis_loss(dis, x, fake)
    loss.backward()
    opt_d.step()
    return loss.detach()


def gen_update(gen: MunitGenerator, dis: MunitDiscriminator, opt_g: torch.optim.Optimizer, x: torch.Tensor,
               generator: torch.Generator | None = None, weights: dict | None = None,
               codes: tuple[torch.Tensor, torch.Tensor] | None = None, autocast=nullcontext) -> dict[str, torch.Tensor]:
    """One generator step; the discriminator is frozen meanwhile, so it neither changes nor collects grads.

    `codes`: gen.encode(x) with its graph, computed with the generator's current weights, if at hand."""
    style = gen.random_style(x.shape[0], x.device, generator)
    opt_g.zero_grad(set_to_none=True)
    with _frozen(dis):
        with autocast():
            losses = gen_losses(gen, dis, x, style, weights, codes)
        losses["total"].backward()
    opt_g.step()
    return {k: v.detach() for k, v in losses.items()}


def munit_step(gen: MunitGenerator, dis: MunitDiscriminator, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, x: torch.Tensor, generator: torch.Generator | None = None,
               weights: dict | None = None, autocast=nullcontext) -> dict[str, torch.Tensor]:
    """One MUNIT iteration on x in [-1, 1]: dis_update, then gen_update. Schedulers are the caller's.
    `autocast`: the generator stage's precision context (bf16 on CUDA by default), forward passes only.

    Returns detached 0-dim tensors, still on x's device: loss/dis, loss/gen_total, loss/gen_adv,
    loss/recon_x, loss/recon_s, loss/recon_c."""
    # One encoding of x serves both updates: the discriminator's step leaves the generator as it was, so
    # the content code dis_update would compute again is this one, value for value.
    with autocast():
        codes = gen.encode(x)
    d = dis_update(gen, dis, opt_d, x, generator, codes[0], autocast)
    g = gen_update(gen, dis, opt_g, x, generator, weights, codes, autocast)
    return {"loss/dis": d, "loss/gen_total": g["total"], "loss/gen_adv": g["adv"], "loss/recon_x": g["recon_x"],
            "loss/recon_s": g["recon_s"], "loss/recon_c": g["recon_c"]}


def build_munit_optimizers(gen: nn.Module, dis: nn.Module, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.999),
                           weight_decay: float = 1e-4, step_size: int = 100_000, gamma: float = 0.5):
    """(opt_g, opt_d, sched_g, sched_d): Adam as the reference; StepLR meant to be stepped once per iteration.

    Adam is the fused kernel: the same update up to float rounding, one call instead of ~10 small ops per
    tensor (on CPU, the reference-size generator's Adam took ~80 ms per step for-loop, ~16 ms fused)."""
    opt_g = torch.optim.Adam([p for p in gen.parameters() if p.requires_grad], lr=lr, betas=betas,
                             weight_decay=weight_decay, fused=True)
    opt_d = torch.optim.Adam([p for p in dis.parameters() if p.requires_grad], lr=lr, betas=betas,
                             weight_decay=weight_decay, fused=True)
    sched_g = torch.optim.lr_scheduler.StepLR(opt_g, step_size=step_size, gamma=gamma)
    sched_d = torch.optim.lr_scheduler.StepLR(opt_d, step_size=step_size, gamma=gamma)
    return opt_g, opt_d, sched_g, sched_d


def sample_grid(gen: MunitGenerator, images: torch.Tensor, n_styles: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Grid in [0, 1], shape (C, R*H, (1+n_styles)*W): row r is image r, then its content under n_styles styles.

    Column j uses the same style for every row, so a column shows one nuisance applied to different images."""
    was_training = gen.training
    gen.eval()
    try:
        with torch.no_grad():
            n, c, h, w = images.shape
            content = gen.encode_content(images)
            styles = gen.random_style(n_styles, images.device, generator)
            cols = [images] + [gen.decode(content, styles[j:j + 1].expand(n, -1, -1, -1)) for j in range(n_styles)]
            grid = torch.stack(cols, dim=1)  # R x (1+S) x C x H x W
            grid = grid.permute(2, 0, 3, 1, 4).reshape(c, n * h, (1 + n_styles) * w)
            return ((grid + 1) / 2).clamp(0, 1)
    finally:
        gen.train(was_training)
