"""Losses, train rules and the LR schedule against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from gitune.errors import UserError
from gitune.training import (LOSSES, RULES, build_loss, build_optimizer, build_scheduler,
                             effective_number_weights, lr_factor, needs_cosine_head, rule_at_epoch)


def _batch(seed=0, n=16, c=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


# ---------------------------------------------------------------- losses

def test_ce_matches_torch():
    logits, target = _batch()
    loss = build_loss("ce", [10, 5, 3, 1])
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target))
    w = torch.tensor([0.5, 1.0, 2.0, 4.0])
    loss_w = build_loss("ce", [10, 5, 3, 1], weight=w)
    torch.testing.assert_close(loss_w(logits, target), F.cross_entropy(logits, target, weight=w))


def test_set_weight_changes_loss_without_rebuild():
    logits, target = _batch()
    loss = build_loss("ce", [10, 5, 3, 1])
    w = torch.tensor([0.1, 1.0, 3.0, 9.0])
    loss.set_weight(w)
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target, weight=w))
    loss.set_weight(None)
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target))


def test_class_tensors_are_buffers():
    loss = build_loss("ldam", [100, 1], weight=torch.tensor([1.0, 2.0]))
    names = dict(loss.named_buffers())
    assert {"margins", "weight", "class_counts"} <= set(names)
    assert "log_prior" in dict(build_loss("logit_adjusted", [3, 1]).named_buffers())


def test_ldam_margins():
    loss = build_loss("ldam", [100, 1], ldam_max_m=0.5)
    torch.testing.assert_close(loss.margins, torch.tensor([0.5 / 100 ** 0.25, 0.5]))
    loss = build_loss("ldam", [10000, 16, 1], ldam_max_m=0.3)
    torch.testing.assert_close(loss.margins, torch.tensor([0.3 / 10, 0.3 / 2, 0.3]))


def test_ldam_hand_computed():
    loss = build_loss("ldam", [100, 1], ldam_max_m=0.5, ldam_s=30.0)
    logits = 30.0 * torch.tensor([[0.2, 0.1], [0.3, 0.4]])  # the cosine head's output: s · cos
    target = torch.tensor([0, 1])
    m0, m1 = 0.5 / 100 ** 0.25, 0.5
    # sample 0: target 0 -> z = 30*[0.2-m0, 0.1]; sample 1: target 1 -> z = 30*[0.3, 0.4-m1]
    z0 = [30 * (0.2 - m0), 30 * 0.1]
    z1 = [30 * 0.3, 30 * (0.4 - m1)]
    l0 = -z0[0] + math.log(math.exp(z0[0]) + math.exp(z0[1]))
    l1 = -z1[1] + math.log(math.exp(z1[0]) + math.exp(z1[1]))
    assert loss(logits, target).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    loss.set_weight(torch.tensor([1.0, 3.0]))
    assert loss(logits, target).item() == pytest.approx((l0 + 3 * l1) / 4, rel=1e-5)


def test_focal_gamma0_is_ce():
    logits, target = _batch(1)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    torch.testing.assert_close(build_loss("focal", [4, 3, 2, 1], focal_gamma=0.0)(logits, target),
                               F.cross_entropy(logits, target))
    torch.testing.assert_close(build_loss("focal", [4, 3, 2, 1], w, focal_gamma=0.0)(logits, target),
                               F.cross_entropy(logits, target, weight=w))


def test_focal_gamma1_hand_computed():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p = [0.75, 0.25] and [0.5, 0.5]
    target = torch.tensor([0, 1])
    l0 = 0.25 * -math.log(0.75)
    l1 = 0.5 * -math.log(0.5)
    assert build_loss("focal", [5, 5])(logits, target).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    weighted = build_loss("focal", [5, 5], torch.tensor([2.0, 1.0]), focal_gamma=1.0)(logits, target)
    assert weighted.item() == pytest.approx((2 * l0 + l1) / 3, rel=1e-6)
    gamma2 = build_loss("focal", [5, 5], focal_gamma=2.0)(logits, target)
    assert gamma2.item() == pytest.approx((0.25 * l0 + 0.5 * l1) / 2, rel=1e-6)


def test_logit_adjusted_equal_priors_is_ce():
    logits, target = _batch(2)
    torch.testing.assert_close(build_loss("logit_adjusted", [7, 7, 7, 7])(logits, target),
                               F.cross_entropy(logits, target))


def test_logit_adjusted_hand_computed():
    logits = torch.tensor([[0.0, 0.0]])
    target = torch.tensor([1])
    # prior [0.75, 0.25], tau = 1: z = [log .75, log .25] -> softmax = prior -> loss = -log .25
    loss = build_loss("logit_adjusted", [3, 1], la_tau=1.0)
    assert loss(logits, target).item() == pytest.approx(-math.log(0.25), rel=1e-6)
    # tau = 2: z = 2*log prior -> p ∝ prior^2 = [9, 1]/10
    loss2 = build_loss("logit_adjusted", [3, 1], la_tau=2.0)
    assert loss2(logits, target).item() == pytest.approx(-math.log(0.1), rel=1e-6)
    w = torch.tensor([1.0, 2.0])
    both = torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    expected = (1 * -math.log(0.75) + 2 * -math.log(0.25)) / 3
    assert build_loss("logit_adjusted", [3, 1], w)(*both).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_flow(name):
    logits, target = _batch(3)
    logits = (logits.tanh() * 0.9).detach().requires_grad_(True)
    loss = build_loss(name, [50, 20, 5, 1], weight=torch.tensor([1.0, 1.5, 2.0, 2.5]))
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_needs_cosine_head_and_unknown_loss():
    assert needs_cosine_head("ldam") and not needs_cosine_head("ce")
    with pytest.raises(UserError, match=r"train\.loss: unknown loss 'hinge'"):
        build_loss("hinge", [1, 2])


# ---------------------------------------------------------------- rules

def test_effective_number_weights():
    counts = [5000, 500, 50, 5]
    w = effective_number_weights(counts, beta=0.9999)
    assert w.sum().item() == pytest.approx(4.0, rel=1e-6)
    assert all(w[i] < w[i + 1] for i in range(3))
    raw = [(1 - 0.9999) / (1 - 0.9999 ** n) for n in counts]
    expected = torch.tensor([r * 4 / sum(raw) for r in raw])
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(effective_number_weights(counts, beta=1e-9), torch.ones(4))
    with pytest.raises(UserError):
        effective_number_weights(counts, beta=1.0)


def test_rules_before_and_after_deferred_epoch():
    counts = [100, 10, 1]
    w = effective_number_weights(counts)
    expected = {  # rule: (before, after)
        "erm": (("uniform", None), ("uniform", None)),
        "resample": (("balanced", None), ("balanced", None)),
        "reweight": (("uniform", w), ("uniform", w)),
        "drw": (("uniform", None), ("uniform", w)),
        "drs": (("uniform", None), ("balanced", None)),
    }
    assert set(expected) == set(RULES)
    for rule, phases in expected.items():
        for epoch, (sampler, weight) in zip((159, 160), phases):
            got_sampler, got_weight = rule_at_epoch(rule, epoch, counts, deferred_epoch=160)
            assert got_sampler == sampler, (rule, epoch)
            if weight is None:
                assert got_weight is None, (rule, epoch)
            else:
                torch.testing.assert_close(got_weight, weight)
    with pytest.raises(UserError, match=r"train\.rule: unknown rule 'ldam'"):
        rule_at_epoch("ldam", 0, counts, 160)


# ---------------------------------------------------------------- schedule

def test_lr_factor_reference_recipe():
    expected = {0: 0.2, 4: 1.0, 5: 1.0, 159: 1.0, 160: 1e-2, 179: 1e-2, 180: 1e-4, 199: 1e-4}
    for epoch, factor in expected.items():
        assert lr_factor(epoch, 5, [160, 180], 0.01) == pytest.approx(factor), epoch
    assert lr_factor(0, 0, [1], 0.1) == 1.0 and lr_factor(1, 0, [1], 0.1) == pytest.approx(0.1)


def test_scheduler_sets_optimizer_lr():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=2e-4)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 2e-4
    sched = build_scheduler(opt, warmup_epochs=5, milestones=[160, 180], gamma=0.01)
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02)
    assert lrs[4] == pytest.approx(0.1)
    assert lrs[159] == pytest.approx(0.1)
    assert lrs[160] == pytest.approx(1e-3)
    assert lrs[180] == pytest.approx(1e-5)
    assert lrs[199] == pytest.approx(1e-5)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_moves_with_to_and_set_weight_follows(name, device):
    logits, target = _batch(4)
    loss = build_loss(name, [50, 20, 5, 1]).to(device)
    loss.set_weight(effective_number_weights([50, 20, 5, 1]))  # a CPU tensor, as rule_at_epoch returns
    assert loss.weight.device.type == device
    on_device = loss(logits.to(device), target.to(device))
    on_cpu = build_loss(name, [50, 20, 5, 1], effective_number_weights([50, 20, 5, 1]))(logits, target)
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-4, atol=1e-5)
