"""The settings that make trials fast on a GPU, checked where they are decided (no GPU needed): compiled
trials see one batch shape, cuDNN autotuning follows train.deterministic, GIT's generator follows the
trial's memory format, and the generator stage's compute and LR keys."""

import pytest
import torch

from gitune.config import merge_config, merge_generator_config
from gitune.errors import UserError

CPU = torch.device("cpu")


def _config(**train):
    return merge_config({"data": {"name": "glyphs", "num_classes": 3, "image_size": 16, "n_max": 21,
                                  "val_per_class": 4, "test_per_class": 4},
                         "model": {"arch": "small_cnn"},
                         "train": {"batch_size": 7, "threads": 1, **train}}, "test")


def _payload():
    from gitune.models.munit import MunitGenerator

    arch = {"dim": 4, "style_dim": 2, "n_downsample": 1, "n_res": 1, "mlp_dim": 4, "mlp_layers": 2}
    return {"arch": arch, "in_channels": 1, "image_size": 16, "state_dict": MunitGenerator(1, **arch).state_dict()}


@pytest.fixture
def fake_compile(monkeypatch):
    """torch.compile recorded, not run (compiling needs a C++ toolchain and minutes); Inductor's config restored."""
    import torch._inductor.config as inductor_config

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or model)
    monkeypatch.setattr(inductor_config, "compile_threads", inductor_config.compile_threads)
    return calls


def _batch_sizes(t):
    return [len(y) for _, y in t.loader.batches("uniform")] + [len(y) for _, y in t.loader.batches("balanced")]


def test_compiled_trial_compiles_static_shapes_once_with_the_trial_cpus(fake_compile):
    import torch._inductor.config as inductor_config

    from gitune.trainables.classifier import build_trial

    plain = build_trial(_config(), CPU)
    n = len(plain.loader.labels)
    assert n % 7 and len(set(_batch_sizes(plain))) == 2  # without compile the partial last batch is kept
    assert not fake_compile
    t = build_trial(_config(compile=True, threads=3), CPU)
    assert set(_batch_sizes(t)) == {7} and len(t.loader) == n // 7
    assert fake_compile == [{"dynamic": False}]
    assert inductor_config.compile_threads == 3


def test_drop_last_keeps_a_split_smaller_than_one_batch():
    from gitune.data.dataset import Split
    from gitune.data.loader import DeviceLoader

    x, y = torch.zeros(5, 1, 4, 4, dtype=torch.uint8), torch.arange(5) % 2
    loader = DeviceLoader(Split(x, y), 8, CPU, torch.Generator().manual_seed(0), drop_last=True)
    assert [len(b) for _, b in loader.batches()] == [5]


def test_cudnn_autotuning_is_on_unless_deterministic(monkeypatch):
    from gitune.trainables.classifier import build_trial

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    build_trial(_config(), CPU)
    assert torch.backends.cudnn.benchmark is True
    cfg = _config()
    cfg["train"]["deterministic"] = True  # the key the deterministic mode reads
    was = torch.are_deterministic_algorithms_enabled()
    try:
        build_trial(cfg, CPU)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(was)


@pytest.mark.parametrize("channels_last", [True, False])
def test_git_generator_follows_the_trial_memory_format(channels_last):
    from gitune.trainables.classifier import build_trial

    cfg = _config(channels_last=channels_last)
    cfg["git"]["prob"] = 0.5
    t = build_trial(cfg, CPU, _payload())
    convs = [m.weight for m in t.gen_model.modules() if isinstance(m, torch.nn.Conv2d)
             and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]  # 1-channel or 1×1 weights are both layouts
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in convs)
    assert not any(p.requires_grad for p in t.gen_model.parameters())  # still frozen


def test_generator_lr_scaling_rules():
    from gitune.trainables.generator import generator_lr

    gc = merge_generator_config({"lr": 1e-4, "batch_size": 16}, "test")
    assert generator_lr(gc) == pytest.approx(1e-4)  # default: none, as before
    assert generator_lr({**gc, "lr_scaling": "linear"}) == pytest.approx(16e-4)
    assert generator_lr({**gc, "lr_scaling": "sqrt"}) == pytest.approx(4e-4)
    with pytest.raises(UserError, match="lr_scaling: expected one of"):
        merge_generator_config({"lr_scaling": "quadratic"}, "generator.config")
    with pytest.raises(UserError, match="precision: expected one of"):
        merge_generator_config({"precision": "fp16"}, "generator.config")


def test_generator_compute_keys_resolve_like_a_trials():
    from gitune.trainables.generator import generator_compute

    gc = merge_generator_config(None, "test")
    c = generator_compute(gc, CPU)
    assert not c.bf16 and not c.channels_last  # CPU defaults: the fp32 NCHW path as before
    c = generator_compute({**gc, "precision": "bf16", "channels_last": True}, CPU)
    assert c.bf16 and c.channels_last


def test_generator_cache_key_ignores_compute_keys_left_at_default():
    from gitune.pretrain import generator_key

    block = {"config": merge_generator_config(None, "test"), "space": {}, "num_samples": 1,
             "search": {"type": "random"}, "metric": "fid/nuisance_ed", "mode": "min"}
    old = {**block, "config": {k: v for k, v in block["config"].items()
                               if k not in ("precision", "channels_last", "lr_scaling")}}
    data = {"name": "glyphs"}
    assert generator_key(data, block) == generator_key(data, old)  # caches made before these keys still hit
    changed = {**block, "config": {**block["config"], "lr_scaling": "sqrt"}}
    assert generator_key(data, changed) != generator_key(data, block)


def test_munit_step_in_bf16_channels_last_trains():
    """The generator stage's compute on CPU: bf16 autocast around the forward passes, channels_last
    weights and input; fp32 losses and an update of both networks."""
    from gitune.models.munit import build_munit
    from gitune.training.compute import Compute
    from gitune.training.munit import build_munit_optimizers, munit_step

    torch.manual_seed(0)
    compute = Compute(CPU, bf16=True, channels_last=True)
    arch = {"dim": 4, "style_dim": 2, "n_downsample": 1, "n_res": 1, "mlp_dim": 4, "mlp_layers": 2,
            "disc_dim": 4, "disc_layers": 2, "disc_scales": 1}
    gen, dis = (compute.prepare(m) for m in build_munit(arch, 1, 16))
    before = [p.detach().clone() for p in (*gen.parameters(), *dis.parameters())]
    opt_g, opt_d, _, _ = build_munit_optimizers(gen, dis)
    x = compute.input(torch.rand(4, 1, 16, 16) * 2 - 1)
    losses = munit_step(gen, dis, opt_g, opt_d, x, torch.Generator().manual_seed(0), autocast=compute.autocast)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    after = [p.detach() for p in (*gen.parameters(), *dis.parameters())]
    assert all(p.dtype == torch.float32 for p in after)
    assert sum(not torch.equal(a, b) for a, b in zip(before, after)) > len(before) // 2
