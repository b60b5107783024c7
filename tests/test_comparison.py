"""The sweep's closing comparison: arms pooled over seeds, paired against the git.prob = 0 arm, with values
computed by hand."""

import math

from gitune.comparison import Result, baseline_of, comparison_lines


def trial(prob, seed, few, ekld, oracle=None):
    params = {"git.prob": prob, "train.seed": seed}
    if oracle is not None:
        params["aug.oracle_prob"] = oracle
    return Result(params, {"test/acc_few": few, "inv/ekld_few": ekld})


def test_arms_and_paired_differences_by_hand():
    # baseline few-shot acc 0.80, 0.84, 0.82; GIT 0.90, 0.91, 0.89 -> paired differences 0.10, 0.07, 0.07.
    trials = [trial(0.0, 0, 0.80, 0.5), trial(0.0, 1, 0.84, 0.4), trial(0.0, 2, 0.82, 0.6),
              trial(0.5, 0, 0.90, 0.2), trial(0.5, 1, 0.91, 0.1), trial(0.5, 2, 0.89, 0.3)]
    lines = comparison_lines(["git.prob", "train.seed"], trials)
    text = "\n".join(lines)
    assert "pooled over train.seed" in lines[0]
    # Baseline mean 0.82, sd 0.02, 95 % t interval 0.82 ± 4.303 · 0.02 / √3 = [0.770, 0.870].
    half = 4.302653 * 0.02 / math.sqrt(3)
    base_line = next(line for line in lines if line.startswith("  git.prob=0 "))
    assert f"few acc 0.820 [{0.82 - half:.3f}, {0.82 + half:.3f}]" in base_line
    # Paired: mean 0.08, sd 0.017321, half width 4.303 · 0.017321 / √3 = 0.0430; t = 8 → p = 0.0153.
    diff = next(line for line in lines[lines.index(next(l for l in lines if "paired" in l)):]
                if line.startswith("  git.prob=0.5"))
    assert "pairs=3" in diff
    half = 4.302653 * math.sqrt(0.0003) / math.sqrt(3)
    assert f"few acc +0.080 [{0.08 - half:+.3f}, {0.08 + half:+.3f}] p=0.015" in diff
    assert "eKLD few -0.300 [-0.300, -0.300] p=0.000" in diff  # identical differences: sd 0, p 0
    assert "paired differences against git.prob=0" in text


def test_oracle_arms_pair_within_their_oracle_value():
    trials = [trial(p, s, 0.8 + p / 10 + o / 5 + s / 100, 0.3, oracle=o)
              for p in (0.0, 0.5) for o in (0.0, 0.5) for s in (0, 1)]
    lines = comparison_lines(["git.prob", "aug.oracle_prob", "train.seed"], trials)
    rows = [line for line in lines[lines.index(next(l for l in lines if "paired" in l)) + 1:]]
    # GIT adds exactly 0.05 in both oracle arms: pairing across oracle values would give 0.15 or -0.05.
    assert len(rows) == 2 and all("few acc +0.050 [+0.050, +0.050]" in r for r in rows), rows


def test_nothing_to_compare_without_replicates_or_arms():
    assert comparison_lines(["git.prob"], [trial(0.0, 0, 0.8, 0.3), trial(0.5, 0, 0.9, 0.2)]) == []
    assert comparison_lines(["train.seed"], [trial(0.0, 0, 0.8, 0.3), trial(0.0, 1, 0.9, 0.2)]) == []
    no_zero = [trial(0.25, 0, 0.8, 0.3), trial(0.5, 0, 0.9, 0.2)]
    assert baseline_of(["git.prob"], no_zero) is None
    lines = comparison_lines(["git.prob", "train.seed"], no_zero)
    assert lines and not any("paired" in line for line in lines)
