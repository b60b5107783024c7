"""GIT augmentation (training/git.py) and the generator file format (generator_file.py), on tiny real networks."""

import pytest
import torch

from gitune.errors import UserError
from gitune.models.munit import MunitGenerator
from gitune.generator_file import GENERATOR_ARCH_KEYS, export_generator, read_generator_file
from gitune.pretrain import generator_key
from gitune.training.git import GitAugmenter, generate, keep_probabilities, load_generator

ARCH = {"dim": 4, "style_dim": 3, "n_downsample": 1, "n_res": 1, "mlp_dim": 8, "mlp_layers": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def _split(counts, size=16):
    labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(counts)])
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (len(labels), 1, size, size), generator=g, dtype=torch.uint8)
    return images, labels


def _draw(labels):
    weights = (1.0 / torch.bincount(labels).double())[labels].float()

    def draw(sampler, rng):
        if sampler == "uniform":
            return torch.randperm(len(labels), generator=rng)
        return torch.multinomial(weights, len(labels), replacement=True, generator=rng)

    return draw


class Counting(torch.nn.Module):
    """Wraps a generator and records how many images each call generated."""

    def __init__(self, gen):
        super().__init__()
        self.gen, self.calls = gen, []
        self.style_dim = gen.style_dim

    def random_style(self, *a, **k):
        return self.gen.random_style(*a, **k)

    def forward(self, x, s):
        self.calls.append(x.shape[0])
        return self.gen(x, s)


def _augmenter(counts, prob, threshold=None, sampler="same", start_epoch=0, seed=0):
    images, labels = _split(counts)
    torch.manual_seed(0)
    gen = Counting(MunitGenerator(1, **ARCH))
    rng = torch.Generator().manual_seed(seed)
    aug = GitAugmenter(gen, prob, start_epoch, counts, threshold, sampler, images, labels, _draw(labels), rng)
    return aug, gen, images, labels


def test_keep_probabilities_follow_the_formula():
    p = keep_probabilities([500, 100, 50, 10], threshold=100)
    # (thr − n_c) / (thr − n_min), clipped at 0: the smallest class always 1, classes ≥ thr 0.
    assert p.tolist() == pytest.approx([0.0, 0.0, 50 / 90, 1.0])
    assert keep_probabilities([5, 3], None) is None
    with pytest.raises(UserError, match="git.class_threshold"):
        keep_probabilities([50, 10], threshold=10)


def test_generated_count_per_batch_follows_prob():
    counts = [40, 20, 10]
    aug, gen, images, labels = _augmenter(counts, prob=0.3)
    aug.begin_epoch(0, "uniform")
    for batch in (16, 16, 16, 7):
        x = torch.rand(batch, 1, 16, 16)
        y = torch.zeros(batch, dtype=torch.long)
        out, y2 = aug.apply(x, y)
        k = int(0.3 * batch + 0.5)  # 5 of 16, 2 of 7
        assert gen.calls[-1] == k
        changed = (out != x).flatten(1).any(1)
        assert changed[:k].all() and not changed[k:].any()  # exactly the first k positions replaced
        assert torch.equal(y2[k:], y[k:])
    assert aug.metrics() == {"git/generated": 17, "git/candidates": 17}


def test_generated_images_carry_the_labels_of_their_sources():
    aug, gen, images, labels = _augmenter([30, 3], prob=1.0, sampler="balanced")
    aug.begin_epoch(0, "uniform")
    x = torch.rand(32, 1, 16, 16)
    _, y = aug.apply(x, torch.full((32,), 7))
    assert set(y.tolist()) <= {0, 1}
    # Class-balanced sources: the 3-image class is about half the draws, not 3/33 of them.
    assert 8 <= int((y == 1).sum()) <= 24


def test_threshold_generates_only_for_small_classes():
    counts = [200, 100, 10]
    aug, gen, images, labels = _augmenter(counts, prob=1.0, threshold=100)
    aug.begin_epoch(0, "uniform")
    total, kept_labels = 0, []
    for _ in range(9):
        x = torch.rand(32, 1, 16, 16)
        out, y = aug.apply(x, torch.full((32,), 9))
        changed = (out != x).flatten(1).any(1)
        total += int(changed.sum())
        kept_labels += y[changed].tolist()
    # Classes at or above the threshold (200, 100) never get generated images; class 2 (p = 1) always.
    assert set(kept_labels) == {2}
    assert total == aug.generated == sum(gen.calls)
    assert aug.candidates == 9 * 32
    assert total == pytest.approx(9 * 32 * 10 / 310, rel=0.5)  # sources ~ uniform over images


def test_zero_prob_and_start_epoch_draw_nothing():
    aug, gen, *_ = _augmenter([20, 5], prob=0.0)
    state = aug.rng.get_state()
    aug.begin_epoch(0, "uniform")
    x = torch.rand(8, 1, 16, 16)
    out, _ = aug.apply(x, torch.zeros(8, dtype=torch.long))
    assert out is x and gen.calls == [] and torch.equal(aug.rng.get_state(), state)
    late, gen2, *_ = _augmenter([20, 5], prob=0.5, start_epoch=3)
    late.begin_epoch(2, "uniform")
    assert late.apply(x, torch.zeros(8, dtype=torch.long))[0] is x and gen2.calls == []
    late.begin_epoch(3, "uniform")
    assert not torch.equal(late.apply(x, torch.zeros(8, dtype=torch.long))[0], x)


def test_generate_is_in_pixel_range_and_style_dependent():
    torch.manual_seed(0)
    gen = MunitGenerator(3, **ARCH).eval()
    x = torch.rand(4, 3, 16, 16)
    a = generate(gen, x, torch.Generator().manual_seed(0))
    b = generate(gen, x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, b)


def test_generator_file_round_trip_and_checks(tmp_path):
    torch.manual_seed(0)
    gen = MunitGenerator(1, **ARCH)
    path = tmp_path / "generator.pt"
    export_generator(str(path), gen.state_dict(), ARCH, 1, 16, {"iterations": 5})
    payload = read_generator_file(tmp_path, "where")  # a folder holding generator.pt works too
    assert payload["arch"] == {k: ARCH[k] for k in GENERATOR_ARCH_KEYS} and payload["meta"]["iterations"] == 5
    loaded = load_generator(payload, torch.device("cpu"), (1, 16, 16))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.rand(2, 1, 16, 16)
    style = gen.random_style(2, "cpu", torch.Generator().manual_seed(0))
    assert torch.allclose(loaded(x, style), gen.eval()(x, style))
    with pytest.raises(UserError, match="3-channel 16 px"):
        load_generator(payload, torch.device("cpu"), (3, 16, 16))

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(UserError, match="not a readable generator checkpoint"):
        read_generator_file(truncated, "where")
    wrong = tmp_path / "wrong.pt"
    export_generator(str(wrong), gen.state_dict(), {**ARCH, "dim": 8}, 1, 16)
    with pytest.raises(UserError, match="do not match the architecture"):
        read_generator_file(wrong, "where")
    other = tmp_path / "other.pt"
    torch.save({"model": gen.state_dict()}, other)
    with pytest.raises(UserError, match="not a gitune generator file"):
        read_generator_file(other, "where")
    with pytest.raises(UserError, match="no such file"):
        read_generator_file(tmp_path / "missing.pt", "where")


def test_generator_key_ignores_logging_keys_only():
    from gitune.config import DEFAULTS, GENERATOR_DEFAULTS

    block = {"config": dict(GENERATOR_DEFAULTS), "space": {}, "num_samples": 1, "search": {"type": "random"},
             "metric": "loss/recon_x", "mode": "min"}
    key = generator_key(DEFAULTS["data"], block)
    assert generator_key(DEFAULTS["data"], {**block, "config": {**block["config"], "report_every": 7}}) == key
    assert generator_key(DEFAULTS["data"], {**block, "config": {**block["config"], "lr": 1e-3}}) != key
    assert generator_key({**DEFAULTS["data"], "instance": 3}, block) != key
