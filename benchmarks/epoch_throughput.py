"""(a) Classifier epoch throughput: gitune's device-resident pipeline vs a reference-style pipeline.

gitune: the split lives on the device as uint8, batches are index gathers (`DeviceLoader`), crop (pad 4)
and flip are batched on the device, and `train_epoch` keeps the loss on the device (no per-step sync).
Reference style (LDAM-DRW / GIT code): a Dataset of H×W×3 uint8 arrays returning PIL images through
torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, a DataLoader
(batch 128, shuffle, `--workers`, pin_memory on cuda), a host→device copy per batch and `loss.item()`
per step (the reference's running meters).

Both train the same ResNet-32 with the same SGD and CE on the same synthetic CIFAR-10-LT (12,406 random
images), with the same torch thread count, epochs interleaved (gitune, reference, gitune, ...) so that
load drift on a shared machine hits both alike. Also timed: the data path alone (batches + crop/flip +
normalisation, no model), the part of the epoch that gitune controls.

    python benchmarks/epoch_throughput.py                      # full CIFAR-10-LT size, 1 timed epoch each
    python benchmarks/epoch_throughput.py --images 2048 --epochs 1 --workers 0   # quick CPU check
"""

from __future__ import annotations

import torch
from PIL import Image

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (BATCH, CIFAR_MEAN, CIFAR_STD, Timer, classifier, describe_machine, make_parser, mean,
                    preprocess_fn, print_table, setup, synthetic_cifar10_lt, sync)
from gitune.data.augment import random_crop, random_flip, to_float
from gitune.data.dataset import Split
from gitune.data.loader import DeviceLoader
from gitune.trainables.classifier import train_epoch

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
    p.add_argument("--epochs", type=int, default=1, help="timed training epochs per pipeline")
    p.add_argument("--data-epochs", type=int, default=2, help="timed data-path-only epochs per pipeline")
    p.add_argument("--images", type=int, default=None, help="use a random subset of this many images "
                   "(default: all 12,406 of CIFAR-10-LT)")
    p.add_argument("--workers", type=int, default=None,
                   help="reference DataLoader workers (default: 2 on cuda, 0 on cpu)")
    p.add_argument("--warmup-batches", type=int, default=3, help="untimed batches per pipeline first")
    p.add_argument("--arch", default="resnet32")
    args = p.parse_args(argv)
    device = setup(args)
    workers = args.workers if args.workers is not None else (2 if device.type == "cuda" else 0)
    images, labels = synthetic_cifar10_lt(args.seed, args.images)
    n = len(labels)
    print("(a) epoch throughput: gitune (device-resident uint8, batched crop/flip) vs reference style "
          "(PIL transforms + DataLoader)")
    print(describe_machine(device, args.threads))
    print(f"data: {n:,} random 3×32×32 uint8 images, 10 classes (CIFAR-10-LT shape), batch {BATCH}; model "
          f"{args.arch}; reference DataLoader workers {workers}, pin_memory {device.type == 'cuda'}")

    preprocess = preprocess_fn(device)
    sample_gen = torch.Generator(device=device).manual_seed(args.seed)
    aug_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    loader = DeviceLoader(Split(images, labels), BATCH, device, sample_gen)
    dl = reference_loader(images, labels, device, workers, args.seed)

    torch.manual_seed(args.seed)
    g_model, g_opt, g_loss = classifier(device, args.arch)
    torch.manual_seed(args.seed)
    r_model, r_opt, r_loss = classifier(device, args.arch)

    # Warm-up: a few batches of each (cudnn autotuning, allocator, first-touch of the weights).
    k = min(args.warmup_batches * BATCH, n)
    warm = DeviceLoader(Split(images[:k], labels[:k]), BATCH, device, sample_gen)
    train_epoch(g_model, warm, "uniform", g_loss, g_opt, preprocess, 4, True, aug_gen)
    reference_epoch(r_model, dl, r_loss, r_opt, device, max_batches=args.warmup_batches)
    sync(device)

    # Data path alone (no model): the part of an epoch the pipeline itself costs.
    g_data, r_data = [], []
    for _ in range(args.data_epochs):
        with Timer(device) as t:
            gitune_data_epoch(loader, preprocess, aug_gen)
        g_data.append(t.seconds)
        with Timer(device) as t:
            reference_data_epoch(dl, device)
        r_data.append(t.seconds)

    g_train, r_train = [], []
    for _ in range(args.epochs):
        with Timer(device) as t:
            train_epoch(g_model, loader, "uniform", g_loss, g_opt, preprocess, 4, True, aug_gen)
        g_train.append(t.seconds)
        with Timer(device) as t:
            reference_epoch(r_model, dl, r_loss, r_opt, device)
        r_train.append(t.seconds)

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
    full = 12406 / g_ips
    print(f"200 epochs of CIFAR-10-LT at the gitune rate (no GIT): {200 * full / 60:.1f} min "
          f"(target on one H100: ≤ 3 min with GIT)")
    print(f"RESULT ratio gitune/reference epoch throughput = {g_ips / r_ips:.2f}× (target ≥ {TARGET:.0f}× on "
          f"an H100); data path alone = {gd_ips / rd_ips:.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
