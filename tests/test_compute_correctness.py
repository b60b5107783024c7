"""Correctness of the compute settings: which device a trial takes, what runs in bf16 and what must not
(evaluation, invariance, the cosine head, augmentation and GIT), deterministic mode, and RNG restore across
device types. Real trials on tiny glyph data, on the CPU (CPU autocast supports bf16)."""

import contextlib
import copy
import logging
import math
import os

import pytest
import torch
from torch import nn

from gitune.config import merge_config, validate_config
from gitune.data.augment import to_float
from gitune.errors import UserError
from gitune.metrics.accuracy import classification_metrics
from gitune.metrics.invariance import measure_invariance
from gitune.models import create_model
from gitune.models.heads import CosineLinear
from gitune.trainables import checkpoint, classifier
from gitune.trainables.classifier import (RNG_STREAMS, build_trial, choose_device, evaluate_epoch, pick_device,
                                          stream_seed, train_one_epoch)
from gitune.training.compute import Compute
from gitune.training.schedule import build_optimizer, build_scheduler

CPU = torch.device("cpu")

TINY = {"data": {"name": "glyphs", "num_classes": 4, "image_size": 16, "profile": "exp", "n_max": 40, "ratio": 4,
                 "val_per_class": 8, "test_per_class": 8, "nuisance": {"rotation": 180}},
        "model": {"arch": "small_cnn"},
        "optim": {"lr": 0.05, "warmup_epochs": 0, "milestones": [1], "gamma": 0.1},
        "train": {"epochs": 1, "batch_size": 16, "threads": 1, "seed": 3},
        "eval": {"inv_interval": 1, "inv_images_per_class": 4, "inv_transforms": 3, "batch_size": 256}}


def tiny(**groups) -> dict:
    """TINY with some groups' keys overridden, as a full trial config."""
    cfg = copy.deepcopy(TINY)
    for group, values in groups.items():
        cfg.setdefault(group, {}).update(values)
    return merge_config(cfg, "test")


def generator_payload():
    from gitune.models.munit import MunitGenerator

    torch.manual_seed(11)
    arch = {"dim": 4, "style_dim": 2, "n_downsample": 1, "n_res": 1, "mlp_dim": 4, "mlp_layers": 2}
    return {"arch": arch, "in_channels": 1, "image_size": 16, "state_dict": MunitGenerator(1, **arch).state_dict()}


@pytest.fixture
def determinism_restored():
    """train.deterministic sets process-wide torch flags and an environment variable: put them back."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


class Reports(list):
    """The reports of one trial, and the trial (`.trial`)."""


def run_trial(monkeypatch, config, generator=None) -> Reports:
    """A whole classifier trial through `train_classifier`, without Tune: the reports it makes, in order."""
    reports = Reports()

    def report(metrics, checkpoint=None):
        reports.append({**metrics, "_deterministic": torch.are_deterministic_algorithms_enabled(),
                        "_cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
                        "_cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")})

    monkeypatch.setattr(classifier.tune, "report", report)
    monkeypatch.setattr(classifier.tune, "get_checkpoint", lambda: None)

    def build(*args):
        reports.trial = build_trial(*args)
        return reports.trial

    monkeypatch.setattr(classifier, "build_trial", build)
    classifier.train_classifier(config, generator=generator)
    return reports


# The device: the GPU Ray assigned, never one merely visible.

def test_device_is_the_gpu_ray_assigned_else_the_cpu(monkeypatch):
    assert choose_device([], "0", cuda_available=True) == CPU  # resources.gpu: 0 on a GPU node
    assert choose_device([2], "2", cuda_available=True) == torch.device("cuda", 0)  # Ray narrowed the list
    assert choose_device(["3"], "1,3", cuda_available=True) == torch.device("cuda", 1)
    assert choose_device([1], None, cuda_available=True) == torch.device("cuda", 1)  # nothing narrowed
    assert choose_device([0], "0", cuda_available=False) == CPU
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES"):
        choose_device([5], "0,1", cuda_available=True)

    import ray

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert pick_device() == CPU
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [0])
    assert pick_device() == torch.device("cuda", 0)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a direct call, outside any Ray worker
    assert pick_device() == CPU


# The LDAM cosine head in fp32 under autocast.

def test_cosine_head_computes_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    head = CosineLinear(24, 5, scale=30.0)
    features = torch.randn(16, 24)
    for x in (features, features.bfloat16()):  # fp32 input, and the bf16 features an autocast body gives
        want = head(x.float())
        with Compute(CPU, bf16=True).autocast():
            got = head(x)
        assert got.dtype == torch.float32
        assert torch.equal(got, want)


# Evaluation and invariance in fp32 after bf16 training.

def test_evaluation_after_a_bf16_step_is_the_fp32_evaluation(one_thread):
    t = build_trial(tiny(train={"precision": "bf16", "loss": "ldam"}), CPU)
    assert t.compute.bf16
    train_one_epoch(t, 0)  # one epoch = a few bf16 training steps
    streams = {k: g.get_state() for k, g in t.gens.items()}
    with t.compute.autocast():  # the worst case: called inside the trial's autocast
        got, inv = evaluate_epoch(t, done=1)
    assert inv and "test/bal_acc" in got

    # The reference: the plain fp32 model on the same images, outside any autocast.
    t.model.eval()
    with torch.no_grad():
        logits = t.model(t.preprocess(to_float(t.val.images)))
    assert logits.dtype == torch.float32
    want = classification_metrics(logits.argmax(1), t.val.labels, t.data.class_counts, "val")
    for k, v in want.items():
        assert got[k] == v, k
    ce = torch.nn.functional.cross_entropy(logits, t.val.labels).item()
    assert math.isclose(got["val/loss"], ce, rel_tol=1e-6)

    def ekld(autocast):
        for k, g in t.gens.items():
            g.set_state(streams[k])
        ev = t.cfg["eval"]
        with autocast:
            return measure_invariance(t.model, t.inv_set.images, t.inv_set.labels, t.inv_transform, t.preprocess,
                                      ev["inv_transforms"], t.data.num_classes, t.data.class_counts,
                                      batch_size=ev["batch_size"], prefix="inv")

    want_inv = ekld(contextlib.nullcontext())
    for k in ("inv/ekld_mean", "inv/consistency_mean", "inv/ekld_few", "inv/ekld_many"):
        if k in want_inv:
            assert got[k] == want_inv[k], k
    # The comparison can see bf16: the same measurement under the trial's autocast gives other numbers.
    assert ekld(t.compute.autocast())["inv/ekld_mean"] != want_inv["inv/ekld_mean"]


# Autocast covers the model and the loss only: GIT, the oracle and crop/flip are those of fp32.

class Recorder(nn.Module):
    """The training callable, keeping every input it is given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def test_git_images_of_a_bf16_step_equal_the_fp32_ones(one_thread):
    inputs, generated = {}, {}
    for precision in ("fp32", "bf16"):
        cfg = tiny(train={"precision": precision, "crop_pad": 2, "flip": True},
                   git={"prob": 0.5}, aug={"oracle_prob": 0.25})
        t = build_trial(cfg, CPU, generator_payload())
        t.net = Recorder(t.net)
        metrics = train_one_epoch(t, 0)
        inputs[precision], generated[precision] = t.net.inputs, metrics["git/generated"]
    assert generated["fp32"] == generated["bf16"] > 0
    assert len(inputs["fp32"]) == len(inputs["bf16"]) > 1
    for a, b in zip(inputs["fp32"], inputs["bf16"]):
        assert a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b)


# train.deterministic.

def test_deterministic_key_is_validated():
    validate_config(merge_config({"train": {"deterministic": True}}, "s.yaml: config"), "s.yaml: config")
    with pytest.raises(UserError, match=r"train\.deterministic: expected true or false, got 'yes'"):
        validate_config(merge_config({"train": {"deterministic": "yes"}}, "s.yaml: config"), "s.yaml: config")


def test_deterministic_trial_applies_the_settings_and_repeats_exactly(monkeypatch, determinism_restored):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    cfg = tiny(train={"epochs": 2, "deterministic": True, "crop_pad": 2, "flip": True}, aug={"oracle_prob": 0.25})
    first = run_trial(monkeypatch, cfg)
    second = run_trial(monkeypatch, cfg)
    assert len(first) == 2
    for report in first:
        assert report["_deterministic"] and report["_cudnn"] == (True, False) and report["_cublas"] == ":4096:8"
    strip = [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in (*first, *second)]
    assert strip[:2] == strip[2:]
    # Off again (the next trial in the same worker process) undoes it.
    run_trial(monkeypatch, tiny(train={"epochs": 1}))
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


# Real trials with the GPU settings torch allows on a CPU: bf16 autocast, channels_last, torch.compile.

def test_trial_in_bf16_channels_last_compiled_is_close_to_fp32(monkeypatch, one_thread):
    # batch 18 divides the 90 training images: a compiled trial drops each epoch's last partial batch, and
    # the fp32 trial must see the same batches.
    base = {"epochs": 2, "batch_size": 18, "loss": "ldam", "crop_pad": 2, "flip": True}
    fp32 = run_trial(monkeypatch, tiny(train={**base, "precision": "fp32"}))
    fast = run_trial(monkeypatch, tiny(train={**base, "precision": "bf16", "channels_last": True, "compile": True}))
    assert len(fp32) == len(fast) == 2
    t = fast.trial
    assert (t.compute.bf16, t.compute.channels_last, t.compute.compile) == (True, True, True)
    assert getattr(t.net, "_orig_mod", None) is t.model
    assert t.model.head.weight.dtype == torch.float32
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in t.model.parameters() if p.dim() == 4)
    # Tolerances, against the differences measured here (~0.2 % train loss, <1 % losses, 1-2 % eKLD, one
    # validation image): the first epoch starts from the same weights with the same batches, so its loss
    # differs only by bf16 rounding of the forward pass (8-bit mantissa, ~0.4 % per op, averaging out over
    # the batch) and compiled kernels' summation order: within 1 %. After that the weights have moved
    # apart through 10 SGD steps on bf16 gradients, so the evaluation numbers get a looser band: losses
    # within 5 %, eKLD within 15 % (a mean of small KLs, the most sensitive), accuracies within 0.125
    # (4 of the 32 validation images). For scale: one batch more or less per epoch moved the first-epoch
    # loss by 3 %.
    assert math.isclose(fast[0]["train/loss"], fp32[0]["train/loss"], rel_tol=0.01)
    for a, b in zip(fp32, fast):
        for k in ("train/loss", "val/loss", "test/loss"):
            if k in a:
                assert math.isclose(b[k], a[k], rel_tol=0.05), (k, a[k], b[k])
        assert math.isclose(b["inv/ekld_mean"], a["inv/ekld_mean"], rel_tol=0.15)
        for k in ("train/acc", "val/acc", "val/bal_acc", "test/acc"):
            if k in a:
                assert abs(b[k] - a[k]) <= 0.125, (k, a[k], b[k])


# RNG streams saved on one device type, restored on another.

class FakeCheckpoint:
    def __init__(self, path):
        self.path = path

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.path)


def _trial_parts():
    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1)
    optimizer = build_optimizer(model, 0.1, 0.9, 0.0)
    return model, optimizer, build_scheduler(optimizer, 0, [5], 0.1)


def _gens(seed):
    return {name: torch.Generator().manual_seed(stream_seed(seed, i)) for i, name in enumerate(RNG_STREAMS)}


def test_rng_streams_from_another_device_type_are_reseeded_not_crashed(tmp_path, caplog):
    model, optimizer, scheduler = _trial_parts()
    state = classifier._state(model, optimizer, scheduler, _gens(3), 4)
    assert state["rng_device"] == "cpu"
    # A CUDA generator's state (Philox seed + offset, 16 bytes) does not fit a CPU generator.
    cuda_state = torch.zeros(16, dtype=torch.uint8)
    with pytest.raises(RuntimeError):
        torch.Generator().set_state(cuda_state)
    for stored in ("cuda", None):  # None: a checkpoint from before the device type was stored
        saved = {**state, "rng": {k: cuda_state for k in RNG_STREAMS}}
        if stored is None:
            del saved["rng_device"]
        else:
            saved["rng_device"] = stored
        torch.save(saved, tmp_path / checkpoint.STATE_FILE)
        gens = _gens(3)
        with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
            caplog.clear()
            epoch = classifier._restore(FakeCheckpoint(tmp_path), model, optimizer, scheduler, gens, seed=3)
        assert epoch == 4
        assert "reseeding" in caplog.text
        for i, name in enumerate(RNG_STREAMS):  # reseeded from (seed, stream, epoch): the same on every retry
            want = torch.Generator().manual_seed(stream_seed(3, i, 4))
            assert torch.equal(torch.rand(5, generator=gens[name]), torch.rand(5, generator=want)), name
    # ... and not the streams the trial started with.
    first = torch.rand(5, generator=torch.Generator().manual_seed(stream_seed(3, 0)))
    assert not torch.equal(torch.rand(5, generator=torch.Generator().manual_seed(stream_seed(3, 0, 4))), first)


def test_rng_streams_from_the_same_device_type_continue_exactly(tmp_path, caplog):
    model, optimizer, scheduler = _trial_parts()
    gens = _gens(3)
    for g in gens.values():
        torch.rand(7, generator=g)  # streams somewhere mid-trial
    torch.save(classifier._state(model, optimizer, scheduler, gens, 2), tmp_path / checkpoint.STATE_FILE)
    want = {k: torch.rand(5, generator=g) for k, g in gens.items()}
    restored = _gens(3)
    with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
        assert classifier._restore(FakeCheckpoint(tmp_path), model, optimizer, scheduler, restored, seed=3) == 2
    assert "reseeding" not in caplog.text
    for k, g in restored.items():
        assert torch.equal(torch.rand(5, generator=g), want[k]), k


def test_generator_stage_rng_from_another_device_type_is_reseeded(tmp_path, caplog):
    """The generator stage's checkpoint stores its RNG's device type; a stage retried on another device type
    reseeds its training stream for the iteration it resumes at instead of crashing in set_state."""
    from gitune.trainables import generator as stage

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    rng = torch.Generator().manual_seed(stream_seed(5, stage.TRAIN_STREAM))
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "iteration": 40,
             "rng": torch.zeros(16, dtype=torch.uint8), "rng_device": "cuda", "torch_rng": torch.get_rng_state()}
    torch.save(state, tmp_path / checkpoint.STATE_FILE)
    with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
        start = stage.restore_stage(FakeCheckpoint(tmp_path), {"net": net, "opt": opt}, rng, seed=5)
    assert start == 40 and "reseeding them for iteration 40" in caplog.text
    want = torch.Generator().manual_seed(stream_seed(5, stage.TRAIN_STREAM, 40))
    assert torch.equal(torch.rand(4, generator=rng), torch.rand(4, generator=want))
    # Same device type: the saved stream continues exactly.
    mid = torch.Generator().manual_seed(1)
    torch.rand(3, generator=mid)
    torch.save({**state, "rng": mid.get_state(), "rng_device": "cpu"}, tmp_path / checkpoint.STATE_FILE)
    caplog.clear()
    fresh = torch.Generator().manual_seed(99)
    assert stage.restore_stage(FakeCheckpoint(tmp_path), {"net": net, "opt": opt}, fresh, seed=5) == 40
    assert "reseeding" not in caplog.text
    assert torch.equal(torch.rand(4, generator=fresh), torch.rand(4, generator=mid))
    # What the stage writes now (checkpoint.save_state: named streams) restores the same way.
    checkpoint.save_state(str(tmp_path), {"net": net, "opt": opt}, {"train": mid}, iteration=41)
    again = torch.Generator().manual_seed(99)
    assert stage.restore_stage(FakeCheckpoint(tmp_path), {"net": net, "opt": opt}, again, seed=5) == 41
    assert "reseeding" not in caplog.text
    assert torch.equal(torch.rand(4, generator=again), torch.rand(4, generator=mid))


def test_full_precision_turns_tf32_off_for_cuda_and_restores_it():
    """cuDNN runs fp32 convs in TF32 by default on Ampere and later: evaluation asks for IEEE fp32 and puts
    the trial's setting back afterwards (the flags are process-wide; CUDA itself is not needed to set them)."""
    from gitune.training.compute import _ieee_fp32

    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = (conv.fp32_precision, matmul.fp32_precision)
    conv.fp32_precision = "tf32"
    try:
        with _ieee_fp32(True):
            assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        assert conv.fp32_precision == "tf32" and matmul.fp32_precision == before[1]
        with _ieee_fp32(False):  # CPU evaluation: nothing to change
            assert conv.fp32_precision == "tf32"
    finally:
        conv.fp32_precision, matmul.fp32_precision = before
