"""The speed paths: precision/memory-format choices, packing arithmetic, and no host-device sync inside a
training step's GIT/oracle work (checked by forbidding the operations that would wait on the device)."""

import contextlib

import pytest
import torch

from gitune.data import nuisances
from gitune.data.nuisances import _morph, random_stroke
from gitune.errors import UserError
from gitune.models import create_model
from gitune.packing import CONTEXT_BYTES, packing_report, trials_per_gpu
from gitune.training.compute import Compute, resolve_compute
from gitune.training.git import GitAugmenter

CPU = torch.device("cpu")


def test_cpu_defaults_are_the_plain_fp32_path():
    c = resolve_compute({"precision": "auto", "channels_last": None, "compile": False}, CPU)
    assert (c.bf16, c.channels_last, c.compile) == (False, False, False)
    x = torch.randn(2, 3, 8, 8)
    assert c.input(x) is x
    assert isinstance(c.autocast(), contextlib.nullcontext)
    with pytest.raises(UserError, match="train.precision"):
        resolve_compute({"precision": "fp16"}, CPU)


def test_channels_last_and_bf16_keep_the_model_output():
    torch.manual_seed(0)
    model = create_model("resnet20", 5, 3).eval()
    x = torch.rand(4, 3, 32, 32)
    want = model(x)
    cl = Compute(CPU, channels_last=True)
    model_cl = cl.prepare(model)
    convs = [p for p in model_cl.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert cl.input(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(model_cl(cl.input(x)), want, atol=1e-4)
    bf = Compute(CPU, bf16=True)
    with bf.autocast():
        got = model(x)
    assert got.dtype == torch.bfloat16
    assert torch.allclose(got.float(), want, atol=0.15, rtol=0.05)  # bf16 has ~3 significant digits


def test_compile_flag_wraps_the_training_callable_only():
    model = create_model("small_cnn", 3, 1)
    assert Compute(CPU).compiled(model) is model
    compiled = Compute(CPU, compile=True).compiled(model)
    assert compiled is not model and getattr(compiled, "_orig_mod", None) is model


def test_packing_arithmetic():
    assert [trials_per_gpu(f) for f in (1.0, 0.5, 0.34, 0.25, 0.125, 0.1)] == [1, 2, 2, 4, 8, 10]
    gib = 2**30
    line, fits = packing_report(2 * gib, 0.125, 80 * gib)
    assert fits and "8 trials per GPU" in line
    line, fits = packing_report(9 * gib, 0.125, 80 * gib)
    assert not fits and "does NOT fit" in line
    most = int(0.9 * 80 * gib // (9 * gib + CONTEXT_BYTES))
    assert f"({most} per GPU)" in line


@contextlib.contextmanager
def no_device_sync(monkeypatch):
    """Fail on the operations that make the host wait for the device: reading values back, boolean-mask
    indexing and nonzero (data-dependent output sizes)."""
    def forbid(name):
        def fail(*a, **k):
            raise AssertionError(f"{name} waits on the device")
        return fail

    for name in ("item", "tolist", "cpu", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, forbid(f"Tensor.{name}"))
    monkeypatch.setattr(torch, "nonzero", forbid("torch.nonzero"))
    getitem = torch.Tensor.__getitem__

    def checked_getitem(self, idx):
        parts = idx if isinstance(idx, tuple) else (idx,)
        if any(torch.is_tensor(p) and p.dtype == torch.bool for p in parts):
            raise AssertionError("boolean-mask indexing waits on the device")
        return getitem(self, idx)

    monkeypatch.setattr(torch.Tensor, "__getitem__", checked_getitem)
    yield
    monkeypatch.undo()


def test_git_step_with_a_class_threshold_never_waits_on_the_device(monkeypatch):
    counts = [60, 20, 6, 4]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.randint(0, 255, (len(labels), 1, 8, 8), dtype=torch.uint8)

    def draw(sampler, rng):
        return torch.randperm(len(labels), generator=rng)

    aug = GitAugmenter(lambda x, g: torch.zeros_like(x), 0.5, 0, counts, 30, "same", images, labels, draw,
                       torch.Generator().manual_seed(0))
    aug.begin_epoch(0, "uniform")  # the epoch's draws: one device-to-host copy, allowed here
    y_all = []
    with no_device_sync(monkeypatch):
        for i in range(0, len(labels), 16):
            y = labels[i:i + 16].clone()
            x, y = aug.apply(torch.ones(len(y), 1, 8, 8), y, 0)
            y_all.append((x, y))
    generated = aug.metrics()["git/generated"]
    zeros = sum(int((x[:, 0, 0, 0] == 0).sum()) for x, _ in y_all)
    assert generated == zeros > 0
    # Classes at or above the threshold (30) never receive a generated image.
    got = torch.cat([y[x[:, 0, 0, 0] == 0] for x, y in y_all])
    assert set(got.tolist()) <= {1, 2, 3}


def test_stroke_nuisance_is_per_image_and_sync_free(monkeypatch):
    x = (torch.rand(12, 1, 16, 16) > 0.7).float()
    g = torch.Generator().manual_seed(3)
    with no_device_sync(monkeypatch):
        out = random_stroke(x, g)
    # Replay the draws and transform images one at a time.
    r = torch.Generator().manual_seed(3)
    dilate = torch.rand(12, generator=r) < nuisances._DILATE_P
    d_side = torch.randint(2, 5, (12,), generator=r)
    e_side = torch.randint(1, 3, (12,), generator=r)
    for i in range(12):
        side = int(d_side[i] if dilate[i] else e_side[i])
        want = _morph(x[i:i + 1], side, bool(dilate[i]))
        assert torch.equal(out[i:i + 1], want), i
