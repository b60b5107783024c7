"""(a) Classifier epoch throughput: gitune's device-resident pipeline vs a reference-style pipeline.

gitune: the CIFAR-10-LT recipe trial (sweeps/cifar10_lt_ce_drs_git.yaml, ResNet-32, batch 128) built by
gitune's `build_trial` with the device's compute settings (common.trial_for), one `train_one_epoch` of its
plain phase: the split lives on the device as uint8, batches are index gathers (`DeviceLoader`), crop
(pad 4) and flip are batched on the device, the loss stays on the device (no per-step sync).
Reference style (LDAM-DRW / GIT code): a Dataset of H×W×3 uint8 arrays returning PIL images through
torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
(batch 128, shuffle, `--workers`, pin_memory on cuda), a host→device copy per batch and `loss.item()`
per step (the reference's running meters), fp32, NCHW, eager, as the reference code runs.

Both train the same architecture with SGD and CE on the same random CIFAR-10-LT-shaped images (12,406),
with the same torch thread count, after one untimed epoch each (every shape warm), epochs interleaved
(gitune, reference, gitune, ...) so that load drift on a shared machine hits both alike. Also timed: the
data path alone (batches + crop/flip + normalisation, no model), the part of the epoch that gitune controls.

    python benchmarks/epoch_throughput.py                      # full CIFAR-10-LT size, 1 timed epoch each
    python benchmarks/epoch_throughput.py --n-max 1000 --workers 0   # quick CPU check
"""

from __future__ import annotations

import tempfile

import torch
from PIL import Image

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (BATCH, CIFAR_MEAN, CIFAR_STD, Steps, Timer, add_trial_options, classifier, describe_machine,
                    describe_trial, make_parser, mean, print_table, result, setup, sync, trial_for, write_lt_npz)
from gitune.data.augment import random_crop, random_flip, to_float
from gitune.data.loader import DeviceLoader

TARGET = 20.0  # issue 6: ≥ 20× the epoch throughput of a reference-style pipeline (H100)


class PILDataset(torch.utils.data.Dataset):
    """Reference style: images stored as N×H×W×3 uint8 (CIFAR's layout), a PIL image per sample."""

    def __init__(self, images_nchw: torch.Tensor, labels: torch.Tensor, transform):
        self.images = images_nchw.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_loader(images, labels, device: torch.device, workers: int, seed: int):
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])
    return torch.utils.data.DataLoader(
        PILDataset(images, labels, tf), batch_size=BATCH, shuffle=True, num_workers=workers,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))


def reference_epoch(model, dl, loss_fn, optimizer, device: torch.device, max_batches: int | None = None) -> int:
    model.train()
    seen = 0
    for i, (x, y) in enumerate(dl):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # the reference's AverageMeter: one host sync per step
        seen += len(y)
    return seen


def reference_data_epoch(dl, device: torch.device) -> int:
    seen = 0
    for x, y in dl:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        seen += len(y)
    sync(device)
    return seen


def gitune_data_epoch(loader: DeviceLoader, preprocess, gen: torch.Generator) -> int:
    seen = 0
    for xb, yb in loader.batches("uniform"):
        x = preprocess(random_flip(random_crop(to_float(xb), 4, gen), gen))
        seen += len(yb)
    sync(loader.device)
    return seen


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    add_trial_options(p, n_max=5000)
    p.add_argument("--epochs", type=int, default=1, help="timed training epochs per pipeline")
    p.add_argument("--data-epochs", type=int, default=2, help="timed data-path-only epochs per pipeline")
    p.add_argument("--workers", type=int, default=None,
                   help="reference DataLoader workers (default: 2 on cuda, 0 on cpu)")
    args = p.parse_args(argv)
    device = setup(args)
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    with tempfile.TemporaryDirectory() as tmp:
        t, _ = trial_for(write_lt_npz(tmp, args.n_max, seed=args.seed), device, args.threads, args.overrides)
    images, labels = t.data.train.images, t.data.train.labels
    n, arch = len(labels), t.cfg["model"]["arch"]
    print("(a) epoch throughput: gitune (the recipe trial's epoch) vs reference style (PIL transforms + DataLoader)")
    print(describe_machine(device, args.threads))
    print(describe_trial(t))
    print(f"reference: {arch}, batch {BATCH}, fp32, NCHW, eager; DataLoader workers {workers}, pin_memory "
          f"{device.type == 'cuda'}")

    aug_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    dl = reference_loader(images, labels, device, workers, args.seed)
    torch.manual_seed(args.seed)
    r_model, r_opt, r_loss = classifier(device, arch)
    steps = Steps(t)

    # Warm-up: one whole epoch of each (every shape, cuDNN autotuning as the trial has it, the allocator).
    steps.run(0)
    reference_epoch(r_model, dl, r_loss, r_opt, device)
    sync(device)

    # Data path alone (no model): the part of an epoch the pipeline itself costs.
    g_data, r_data = [], []
    for _ in range(args.data_epochs):
        with Timer(device) as timer:
            gitune_data_epoch(t.loader, t.preprocess, aug_gen)
        g_data.append(timer.seconds)
        with Timer(device) as timer:
            reference_data_epoch(dl, device)
        r_data.append(timer.seconds)

    g_train, r_train = [], []
    for epoch in range(args.epochs):
        g_train.append(steps.run(1 + epoch)["_seconds"])
        with Timer(device) as timer:
            reference_epoch(r_model, dl, r_loss, r_opt, device)
        r_train.append(timer.seconds)

    g_ips, r_ips = n / mean(g_train), n / mean(r_train)
    gd_ips, rd_ips = n / mean(g_data), n / mean(r_data)
    print_table(
        ["what", "gitune s/epoch", "reference s/epoch", "gitune img/s", "reference img/s", "ratio gitune/ref"],
        [[f"train epoch ({args.epochs}×, model + data)", mean(g_train), mean(r_train), g_ips, r_ips, g_ips / r_ips],
         [f"data path only ({args.data_epochs}×, no model)", mean(g_data), mean(r_data), gd_ips, rd_ips,
          gd_ips / rd_ips]],
        title=f"Epoch throughput, {n:,} images per epoch (mean of the timed epochs)")
    model_s = max(mean(g_train) - mean(g_data), 1e-9)
    print(f"\nshare of the gitune epoch in the data path: {mean(g_data) / mean(g_train):.1%}; of the reference "
          f"epoch: {min(mean(r_data) / mean(r_train), 1.0):.1%} (workers overlap it with the model when > 0)")
    print(f"model alone (gitune epoch − its data path): {model_s:.2f} s/epoch → the best any data pipeline "
          f"could reach here is {mean(r_train) / model_s:.1f}× the reference")
    result("epoch throughput, gitune trial / reference-style pipeline", f"{g_ips / r_ips:.2f}× "
           f"(data path alone {gd_ips / rd_ips:.1f}×)", f"≥ {TARGET:.0f}× on an H100",
           g_ips / r_ips >= TARGET if device.type == "cuda" else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
