"""(e) MUNIT generator training step: images/s now vs the step as it was before its speed work (655c9a5).

Both steps train the same networks (gitune.models.munit, built with the same seed) on the same random
1×28×28 images in [-1, 1] (speed does not depend on the pixels), with the same torch threads; they are
timed in alternating rounds, after warming up, so that load from other jobs falls on both alike.

  before  the step at 655c9a5, kept below as it was: the discriminator update encodes x again; two decoder
          calls (own style, random style) and two discriminator calls (real, fake) per update; for-loop
          Adam; every conv in NCHW layout; F.instance_norm and F.layer_norm (the modules' forward code
          as it was, swapped back in by `as_before`)
  now     gitune.training.munit.munit_step with build_munit_optimizers: one encoding of x for both
          updates, one decoder call on the concatenated batch, one discriminator call on cat(real, fake),
          fused Adam, image-side convs channels-last on CPU (gitune.models.munit.ImageConv2d), instance
          and layer norm computed as group norm (gitune.models.munit.instance_norm, LayerNorm); with the
          stage's compute settings (generator_compute: `--precision`, channels-last on CUDA)

Sizes: `demo` (dim 16, style_dim 8, n_downsample 2, n_res 2, mlp_dim 64, mlp_layers 3, disc_dim 16,
disc_layers 3, disc_scales 1: the offline demo's generator) at batches 8, 16, 32, 64, and `reference`
(gitune.models.munit.MUNIT_DEFAULTS) at batches 1 and 8. Before timing it checks that both steps give
the same losses on their first step (float rounding apart).

    python benchmarks/generator_step.py                      # 1 thread on cpu (common.py's default)
    python benchmarks/generator_step.py --threads 2          # the demo's threads on a 2-core machine
    python benchmarks/generator_step.py --sizes demo --batches 32 --rounds 3    # quick check

With 2 threads on 2 cores, any other busy process makes both steps several times slower (OpenMP threads
wait for each other): compare the two columns of one run, not runs made under different loads.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

import common  # noqa: F401  (puts the repository root on sys.path)
from common import Timer, describe_machine, make_parser, median, print_table, result, setup
from gitune.models.munit import (MUNIT_DEFAULTS, AdaResBlock, ImageConv2d, InstanceNorm, LayerNorm,
                                 build_munit)
from gitune.trainables.generator import generator_compute
from gitune.training.munit import MUNIT_LOSS_WEIGHTS, build_munit_optimizers, munit_step

DEMO = {"dim": 16, "style_dim": 8, "n_downsample": 2, "n_res": 2, "mlp_dim": 64, "mlp_layers": 3,
        "disc_dim": 16, "disc_layers": 3, "disc_scales": 1}
SIZES = {"demo": (DEMO, (8, 16, 32, 64)), "reference": (MUNIT_DEFAULTS, (1, 8))}
IMAGE = (1, 28, 28)


# ---- The step before (gitune/training/munit.py at 655c9a5), unchanged but for the names. ----

def before_dis_loss(dis, real, fake):
    total = real.new_zeros(())
    for out_fake, out_real in zip(dis(fake), dis(real)):
        total = total + out_fake.pow(2).mean() + (out_real - 1).pow(2).mean()
    return total


def before_gen_adv_loss(dis, fake):
    total = fake.new_zeros(())
    for out in dis(fake):
        total = total + (out - 1).pow(2).mean()
    return total


def before_gen_losses(gen, dis, x, style, weights=None):
    w = {**MUNIT_LOSS_WEIGHTS, **(weights or {})}
    content, s_own = gen.encode(x)
    recon_x = (gen.decode(content, s_own) - x).abs().mean()
    fake = gen.decode(content, style)
    c_rec, s_rec = gen.encode(fake)
    recon_s = (s_rec - style).abs().mean()
    recon_c = (c_rec - content).abs().mean()
    adv = before_gen_adv_loss(dis, fake)
    total = w["gan"] * adv + w["recon_x"] * recon_x + w["recon_s"] * recon_s + w["recon_c"] * recon_c
    return {"total": total, "adv": adv, "recon_x": recon_x, "recon_s": recon_s, "recon_c": recon_c}


@contextmanager
def _frozen(module):
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def before_step(gen, dis, opt_g, opt_d, x, generator=None, weights=None):
    with torch.no_grad():  # dis_update
        fake = gen.decode(gen.encode_content(x), gen.random_style(x.shape[0], x.device, generator))
    opt_d.zero_grad(set_to_none=True)
    loss = before_dis_loss(dis, x, fake)
    loss.backward()
    opt_d.step()
    d = loss.detach()
    style = gen.random_style(x.shape[0], x.device, generator)  # gen_update
    opt_g.zero_grad(set_to_none=True)
    with _frozen(dis):
        losses = before_gen_losses(gen, dis, x, style, weights)
        losses["total"].backward()
    opt_g.step()
    g = {k: v.detach() for k, v in losses.items()}
    return {"loss/dis": d, "loss/gen_total": g["total"], "loss/gen_adv": g["adv"], "loss/recon_x": g["recon_x"],
            "loss/recon_s": g["recon_s"], "loss/recon_c": g["recon_c"]}


def before_optimizers(gen, dis):
    """Adam as build_munit_optimizers made it before: torch's default (for-loop on CPU, foreach on CUDA)."""
    kw = {"lr": 1e-4, "betas": (0.5, 0.999), "weight_decay": 1e-4}
    return torch.optim.Adam(gen.parameters(), **kw), torch.optim.Adam(dis.parameters(), **kw)


class BeforeLayerNorm(LayerNorm):
    def forward(self, x):
        x = F.layer_norm(x, x.shape[1:], eps=self.eps)
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def before_adain(x, scale, shift, eps=1e-5):
    x = F.instance_norm(x, eps=eps)
    return x * scale[:, :, None, None] + shift[:, :, None, None]


class BeforeAdaResBlock(AdaResBlock):
    def forward(self, x, params):
        out = F.relu(before_adain(self.conv1(self.pad1(x)), *params[0]))
        out = before_adain(self.conv2(self.pad2(out)), *params[1])
        return x + out


def as_before(net: nn.Module) -> nn.Module:
    """The network as it ran before, same weights: plain NCHW nn.Conv2d for ImageConv2d, F.instance_norm
    (nn.InstanceNorm2d, in AdaIN) and F.layer_norm for their group-norm forms."""
    for name, m in list(net.named_modules()):
        if type(m) is ImageConv2d:
            m.__class__ = nn.Conv2d
        elif type(m) is LayerNorm:
            m.__class__ = BeforeLayerNorm
        elif type(m) is AdaResBlock:
            m.__class__ = BeforeAdaResBlock
        elif type(m) is InstanceNorm:
            parent, _, child = name.rpartition(".")
            block = net.get_submodule(parent)  # a _conv_block: pad, conv, norm, ...
            block.register_module(child, nn.InstanceNorm2d(block[int(child) - 1].out_channels, eps=m.eps))
    return net


# ---- Timing. ----

def build(variant: str, cfg: dict, device: torch.device, seed: int, precision: str = "fp32"):
    """(step, networks and optimizers) for one variant; the same weights for both variants. "now" runs
    with the generator stage's compute for `precision` (generator_compute: autocast, channels_last on CUDA)."""
    torch.manual_seed(seed)
    gen, dis = build_munit(cfg, IMAGE[0], IMAGE[1])
    gen, dis = gen.to(device), dis.to(device)
    if variant == "before":
        gen, dis = as_before(gen), as_before(dis)
        return before_step, (gen, dis, *before_optimizers(gen, dis))
    compute = generator_compute({"precision": precision, "channels_last": None}, device)
    gen, dis = compute.prepare(gen), compute.prepare(dis)
    opt_g, opt_d, _, _ = build_munit_optimizers(gen, dis)

    def step(gen, dis, opt_g, opt_d, x, rng):
        return munit_step(gen, dis, opt_g, opt_d, compute.input(x), rng, None, compute.autocast)

    return step, (gen, dis, opt_g, opt_d)


def compare(cfg: dict, batch: int, device: torch.device, args) -> dict[str, float]:
    """Wall and CPU-time img/s of both variants, the per-round wall ratios' range; checks the losses first.

    CPU time (this process, all threads) is printed too: on a shared machine, time spent waiting for a
    core counts in wall time but not in CPU time, so with one thread its ratio is the steadier one."""
    x = (torch.rand(batch, *IMAGE, generator=torch.Generator().manual_seed(args.seed)) * 2 - 1).to(device)
    variants = {v: build(v, cfg, device, args.seed, args.precision) for v in ("before", "now")}
    rngs = {v: torch.Generator(device=device).manual_seed(args.seed) for v in variants}
    first = {v: step(*nets, x, rngs[v]) for v, (step, nets) in variants.items()}
    worst = max(abs(first["now"][k].item() - first["before"][k].item()) / max(abs(first["before"][k].item()), 1e-12)
                for k in first["now"])
    if worst > (1e-4 if args.precision == "fp32" else 5e-2):  # bf16 forward passes round the losses
        raise SystemExit(f"the two steps disagree on the first step's losses (max relative difference {worst:.1e})")
    for v, (step, nets) in variants.items():
        for _ in range(args.warmup - 1):
            step(*nets, x, rngs[v])
    wall = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v, (step, nets) in variants.items():
            c0 = time.process_time()
            with Timer(device) as t:
                for _ in range(args.steps):
                    step(*nets, x, rngs[v])
            wall[v].append(t.seconds / args.steps)
            cpu[v].append((time.process_time() - c0) / args.steps)
    ratios = [b / n for b, n in zip(wall["before"], wall["now"])]
    return {"before": batch / median(wall["before"]), "now": batch / median(wall["now"]),
            "low": min(ratios), "high": max(ratios),
            "cpu_before": batch / median(cpu["before"]), "cpu_now": batch / median(cpu["now"])}


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="demo,reference", help="comma-separated: demo, reference")
    p.add_argument("--batches", default=None,
                   help="comma-separated batch sizes for every size (default: demo 8,16,32,64; reference 1,8)")
    p.add_argument("--rounds", type=int, default=5, help="alternating timed rounds per variant")
    p.add_argument("--steps", type=int, default=None, help="steps per round (default: 2 on cpu, 20 on cuda)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (the first checks losses)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="generator.precision of the 'now' step (the stage's compute; 'before' stays fp32 NCHW)")
    args = p.parse_args(argv)
    device = setup(args)
    args.steps = args.steps or (20 if device.type == "cuda" else 2)
    args.warmup = max(1, args.warmup)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"--sizes: unknown {unknown[0]!r} (expected demo, reference)")

    print("(e) MUNIT generator training step, before (655c9a5) vs now, 1×28×28 images")
    print(describe_machine(device, args.threads))
    print(f"{args.rounds} alternating rounds of {args.steps} steps per variant after {args.warmup} warm-up steps; "
          "img/s from the median round")
    rows, results = [], []
    for size in sizes:
        cfg, default_batches = SIZES[size]
        batches = [int(b) for b in args.batches.split(",")] if args.batches else default_batches
        for batch in batches:
            r = compare(cfg, batch, device, args)
            cpu_ratio = r["cpu_now"] / r["cpu_before"]
            rows.append([size, batch, r["before"], r["now"], r["now"] / r["before"],
                         f"{r['low']:.2f}–{r['high']:.2f}", r["cpu_before"], r["cpu_now"], cpu_ratio])
            results.append((size, batch, r))
            print(f"  {size} batch {batch}: before {r['before']:.1f} img/s, now {r['now']:.1f} img/s", flush=True)
    print_table(["size", "batch", "before img/s", "now img/s", "now / before", "per-round range",
                 "before img/CPU-s", "now img/CPU-s", "CPU now / before"], rows,
                title="MUNIT training step (discriminator + generator update): images per wall second, "
                      "and per CPU second of this process")
    for size, batch, r in results:
        result(f"generator pretraining, {size} MUNIT, batch {batch}, {args.precision}",
               f"{r['now']:.1f} img/s ({r['now'] / r['before']:.2f}× the step before 655c9a5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
