import pytest

from gitune.data.dataset import target_counts
from gitune.data.profiles import PROFILES, class_counts
from gitune.errors import UserError


def test_cifar10_lt_exp_counts_exact():
    counts = class_counts("exp", 10, 5000, ratio=100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


def test_cifar100_lt_exp_first_and_last():
    counts = class_counts("exp", 100, 500, ratio=100)
    assert len(counts) == 100
    assert counts[0] == 500 and counts[-1] == 5
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == 10847  # the standard CIFAR-100-LT (rho=100) training-set size


def test_step_counts():
    assert class_counts("step", 10, 5000, ratio=100) == [5000] * 5 + [50] * 5
    assert class_counts("step", 5, 100, ratio=10) == [100, 100, 10, 10, 10]


def test_zipf_k49_total_and_floor():
    counts = class_counts("zipf", 49, 4800, alpha=2.0)
    assert sum(counts) == 7822
    assert counts[:4] == [4800, 1200, 533, 300]
    assert min(counts) == 5 and all(c >= 5 for c in counts)


def test_none_and_single_class():
    assert class_counts("none", 4, 37) == [37] * 4
    assert class_counts("exp", 1, 123, ratio=100) == [123]
    assert set(PROFILES) == {"exp", "step", "zipf", "none"}


def test_bad_profile_names_key():
    with pytest.raises(UserError, match="data.profile"):
        class_counts("linear", 10, 100)


def _cfg(**kw):
    cfg = {"profile": "zipf", "ratio": 100.0, "alpha": 2.0, "n_min": 5, "instance": 0}
    cfg.update(kw)
    return cfg


def test_zipf_instances_reproducible_and_different():
    a = target_counts(_cfg(instance=3), 49, 4800)
    assert a == target_counts(_cfg(instance=3), 49, 4800)
    assert sorted(a, reverse=True) == class_counts("zipf", 49, 4800)
    others = [target_counts(_cfg(instance=i), 49, 4800) for i in (0, 1, 2)]
    assert all(o != a for o in others) and others[0] != others[1]
    # every instance, 0 included, is a permutation rather than the identity rank order
    assert others[0] != class_counts("zipf", 49, 4800)


def test_exp_order_is_class_index_order():
    assert target_counts(_cfg(profile="exp", instance=5), 10, 5000) == class_counts("exp", 10, 5000)
