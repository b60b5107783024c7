"""Generator fidelity metrics on known answers: the true nuisance T wrapped as a generator, the identity
collapse, noise, a wrong nuisance, affine intensity changes; unbiasedness of the energy distance."""

import itertools

import pytest
import torch

from gitune.config import DEFAULTS
from gitune.data.augment import to_float
from gitune.data.dataset import build_dataset
from gitune.metrics import generator_fidelity as gf
from gitune.metrics.generator_fidelity import (CONTENT, CONTENT_TRUE, NUISANCE_ED, NUISANCE_ED_FEAT, STYLE_EFFECT,
                                               STYLE_EFFECT_TRUE, STYLE_X_CONTENT, energy_distance,
                                               identity_synthesizer, measure_fidelity, nuisance_synthesizer,
                                               random_features)

NUISANCE = {"background": 200, "rotation": 180, "stroke": True, "translate": 3}
WRONG = {"background": "rotation", "rotation": "background", "stroke": "translate"}


def clean_val(nuisance: str, per_class: int = 10):
    """Held-out clean glyphs of a dataset that carries `nuisance`, and that nuisance as T."""
    cfg = {**DEFAULTS["data"], "name": "glyphs", "download": False, "num_classes": 10, "image_size": 16,
           "n_max": 20, "val_per_class": per_class, "test_per_class": 2, "nuisance": {nuisance: NUISANCE[nuisance]}}
    data = build_dataset(cfg)
    return to_float(data.clean_val.images), nuisance_synthesizer(data.nuisance)


def noise(x01, rng):
    return torch.rand(x01.shape, generator=rng, device=x01.device)


def affine(x01, rng):
    """A per-image contrast and brightness change: spatial structure untouched."""
    n = x01.shape[0]
    a = 0.5 + torch.rand(n, 1, 1, 1, generator=rng)
    b = 0.2 * torch.rand(n, 1, 1, 1, generator=rng)
    return x01 * a + b


def fid(synth, x, truth=None, seed=0, draws=4, batch_size=256):
    return measure_fidelity(synth, x, torch.Generator().manual_seed(seed), truth=truth, draws=draws,
                            batch_size=batch_size)


@pytest.fixture(scope="module")
def background():
    return clean_val("background")


@pytest.mark.parametrize("true", ["background", "rotation", "stroke"])
def test_the_true_nuisance_scores_best_in_pixels_and_features(true):
    x, truth = clean_val(true)
    candidates = {"T": truth, "identity": identity_synthesizer(), "noise": noise,
                  "wrong": nuisance_synthesizer({WRONG[true]: NUISANCE[WRONG[true]]})}
    scores = {name: fid(s, x, truth) for name, s in candidates.items()}
    for key in (NUISANCE_ED, NUISANCE_ED_FEAT):
        assert abs(scores["T"][key]) < 0.05, (true, key, scores["T"][key])
        for other in ("identity", "noise", "wrong"):
            assert scores[other][key] > scores["T"][key] + 0.05, (true, key, other, scores[other][key])


def test_a_half_learned_background_lies_between_t_and_the_identity(background):
    x, truth = background
    ed = {name: fid(s, x, truth)[NUISANCE_ED] for name, s in
          (("T", truth), ("half", nuisance_synthesizer({"background": 100})), ("identity", identity_synthesizer()))}
    assert ed["T"] + 0.05 < ed["half"] < ed["identity"] - 0.05, ed


def test_identity_has_no_style_effect_and_full_content(background):
    x, truth = background
    m = fid(identity_synthesizer(), x, truth)
    assert m[STYLE_EFFECT] == 0.0
    assert m[CONTENT] == pytest.approx(1.0, abs=1e-9)
    assert m[STYLE_X_CONTENT] == 0.0
    # T's references: a generator that learned the background changes images, and keeps most structure.
    assert m[STYLE_EFFECT_TRUE] > 0.1 and 0.5 < m[CONTENT_TRUE] < 0.95


def test_noise_has_the_worst_content(background):
    x, truth = background
    others = {"T": truth, "identity": identity_synthesizer(), "rotation": nuisance_synthesizer({"rotation": 180}),
              "translate": nuisance_synthesizer({"translate": 3}), "affine": affine}
    m_noise = fid(noise, x)
    assert abs(m_noise[CONTENT]) < 0.03
    assert m_noise[STYLE_EFFECT] > 0.25  # noise changes a lot: style effect alone would reward it
    for name, s in others.items():
        m = fid(s, x)
        assert m[CONTENT] > m_noise[CONTENT] + 0.1, name
    assert fid(truth, x)[STYLE_X_CONTENT] > 10 * m_noise[STYLE_X_CONTENT]


def test_content_ignores_affine_intensity_changes_but_not_moved_strokes(background):
    x, truth = background
    m = fid(affine, x)
    assert m[CONTENT] == pytest.approx(1.0, abs=1e-9) and m[STYLE_EFFECT] > 0.03
    moved = fid(nuisance_synthesizer({"translate": 3}), x)
    assert moved[CONTENT] < 0.6 < fid(truth, x)[CONTENT]
    inverted = fid(lambda x01, rng: 1.0 - affine(x01, rng), x)  # anti-correlated: no credit in the proxy
    assert inverted[CONTENT] == pytest.approx(-1.0, abs=1e-9) and inverted[STYLE_EFFECT] > 0.03
    assert inverted[STYLE_X_CONTENT] == 0.0


def test_energy_distance_is_the_u_statistic():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3, 4, 10, generator=g, dtype=torch.float64)
    b = torch.randn(3, 3, 10, generator=g, dtype=torch.float64) + 0.5

    def d(u, v):
        return float((u - v).norm()) / 10 ** 0.5

    for r in range(3):
        cross = sum(d(u, v) for u in a[r] for v in b[r]) / (4 * 3)
        within_a = sum(d(u, v) for u, v in itertools.permutations(a[r], 2)) / (4 * 3)
        within_b = sum(d(u, v) for u, v in itertools.permutations(b[r], 2)) / (3 * 2)
        assert float(energy_distance(a, b)[r]) == pytest.approx(2 * cross - within_a - within_b, abs=1e-9)


def test_t_against_itself_is_zero_in_expectation():
    x, truth = clean_val("background", per_class=40)  # 400 images
    for draws in (2, 4):
        values = [fid(truth, x, truth, seed=s, draws=draws) for s in range(3)]
        spread = sum(v[STYLE_EFFECT_TRUE] for v in values) / 3
        for key in (NUISANCE_ED, NUISANCE_ED_FEAT):
            mean = sum(v[key] for v in values) / 3
            # A biased (V-statistic) within-set mean would add about 2·spread/draws ≥ 0.1 here.
            assert abs(mean) < 0.01, (draws, key, mean, spread)


def test_deterministic_given_the_seed(background):
    x, truth = background
    assert fid(truth, x, truth, seed=3) == fid(truth, x, truth, seed=3)
    assert fid(truth, x, truth, seed=3)[NUISANCE_ED] != fid(truth, x, truth, seed=4)[NUISANCE_ED]
    # Batches only bound memory: deterministic synthesizers score the same in any batch size.
    def flip(x01, rng):
        return x01.flip(-1)

    small, large = fid(identity_synthesizer(), x, flip, batch_size=8), fid(identity_synthesizer(), x, flip)
    assert small == pytest.approx(large, abs=1e-12) and small[NUISANCE_ED] > 0.1
    # Identical draws: no within-set spread, so the energy distance is twice the mean distance of x to its
    # mirror image, in pixels and in the random net's features.
    pixels = (x - flip(x, None)).flatten(1).norm(dim=1) / x[0].numel() ** 0.5
    feats = random_features(x) - random_features(flip(x, None))
    assert large[NUISANCE_ED] == pytest.approx(2 * float(pixels.mean()), rel=1e-5)
    assert large[NUISANCE_ED_FEAT] == pytest.approx(2 * float((feats.norm(dim=1) / feats.shape[1] ** 0.5).mean()),
                                                    rel=1e-5)


def test_the_feature_net_is_fixed_and_leaves_the_global_rng_alone(background):
    x, _ = background
    gf._feature_weights.cache_clear()
    torch.manual_seed(1)
    state = torch.get_rng_state()
    first = random_features(x)
    assert torch.equal(torch.get_rng_state(), state)
    gf._feature_weights.cache_clear()
    torch.manual_seed(2)
    assert torch.equal(random_features(x), first)
    assert first.shape == (x.shape[0], 64 + 64 * 4)
    assert random_features(x.repeat(1, 3, 1, 1)).shape == first.shape  # RGB: a net of its own, same size


def test_reported_keys_cover_the_selectable_metrics(background):
    from gitune.spaces import GENERATOR_METRICS

    x, truth = background
    with_truth, without = fid(truth, x, truth), fid(truth, x)
    assert {k for k in GENERATOR_METRICS if k.startswith("fid/")} <= set(with_truth)
    assert set(without) == {STYLE_EFFECT, CONTENT, STYLE_X_CONTENT}
    line = gf.fidelity_summary(with_truth)
    assert f"{STYLE_EFFECT}=" in line and "(T: " in line and f"{NUISANCE_ED_FEAT}=" in line
    with pytest.raises(ValueError):
        fid(truth, x, draws=1)
