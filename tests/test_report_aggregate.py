"""Seed and instance aggregation of `python -m gitune.report`: group means with Student-t intervals and paired
differences against a baseline group. The statistics are checked against numbers worked out by hand here
(t_{0.975,2} = 4.303, t_{0.975,3} = 3.182, t_{0.975,5} = 2.571; for 2 degrees of freedom the two-sided t-test
p is 1 − t/√(t² + 2)), on a constructed git.prob × aug.oracle_prob × seed design, first on plain objects, then
end to end through a real MLflow sqlite store."""

import csv
import math
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

import gitune.report.stats as rs
from gitune.report.analysis import grouping
from gitune.report.cli import main
from gitune.report.load import Sweep, Trial, parse_value

T2, T3, T5 = 4.303, 3.182, 2.571  # t_{0.975, df}, from a printed table


def p_df2(t):
    """Two-sided p of a t statistic with 2 degrees of freedom, in closed form."""
    return 1 - abs(t) / math.sqrt(t * t + 2)


# The design: test/bal_acc per (git.prob, aug.oracle_prob) arm and seed. Seeds move every arm together (0.1 per
# seed), so unpaired intervals are wide while the paired differences are tight:
#   GIT − baseline, oracle off: 0.04, 0.05, 0.06 (mean 0.05, sd 0.01)
#   GIT − baseline, oracle on:  0.07, 0.10, 0.13 (mean 0.10, sd 0.03)
# Pairing across oracle arms instead (GIT+oracle − plain baseline) would give 0.09, 0.12, 0.15.
BAL = {(0.0, 0.0): [0.50, 0.60, 0.70], (0.5, 0.0): [0.54, 0.65, 0.76],
       (0.0, 0.5): [0.52, 0.62, 0.72], (0.5, 0.5): [0.59, 0.72, 0.85]}
EXTRA = (0.5, 0.0, 3, 0.90)  # GIT, oracle off, seed 3: no baseline trial with seed 3 -> unpaired


def ekld_few(git):
    return 0.8 if git else 1.0  # every GIT trial 0.2 below its partner: sd 0, p 0


def design():
    """(git.prob, aug.oracle_prob, train.seed, test/bal_acc) of every finished trial."""
    rows = [(g, o, seed, v) for (g, o), vals in BAL.items() for seed, v in enumerate(vals)]
    return rows + [EXTRA]


def fake(params, metrics, parent="p1"):
    return SimpleNamespace(params=params, metrics=metrics, parent_id=parent)


def fake_trials():
    return [fake({"git.prob": g, "aug.oracle_prob": o, "train.seed": s, "data.instance": 0},
                 {"test/bal_acc": v, "inv/ekld_few": ekld_few(g)}) for g, o, s, v in design()]


# --------------------------------------------------------------------------------------------------- statistics


def test_summary_of_three_seeds_by_hand():
    s = rs.summarize([0.70, 0.72, 0.74])
    assert s.n == 3
    assert s.mean == pytest.approx(0.72, abs=1e-12)
    assert s.sd == pytest.approx(0.02, abs=1e-12)  # sqrt((0.02² + 0 + 0.02²) / 2)
    half = T2 * 0.02 / math.sqrt(3)  # 0.04969
    assert s.low == pytest.approx(0.72 - half, abs=1e-4) and s.high == pytest.approx(0.72 + half, abs=1e-4)
    assert rs.t_quantile(3) == pytest.approx(T2, abs=5e-4) and rs.t_quantile(4) == pytest.approx(T3, abs=5e-4)


def test_summary_of_one_or_no_value_and_missing_values():
    one = rs.summarize([0.7, float("nan"), None])  # NaN and missing values do not count
    assert one.n == 1 and one.mean == 0.7
    assert all(math.isnan(x) for x in (one.sd, one.low, one.high))  # one draw: no spread, no interval
    none = rs.summarize([])
    assert none.n == 0 and math.isnan(none.mean)


def test_paired_summary_by_hand_and_against_scipy():
    from scipy import stats

    base, git = [0.50, 0.60, 0.70], [0.52, 0.64, 0.73]  # differences 0.02, 0.04, 0.03
    s = rs.paired_summary([g - b for g, b in zip(git, base)])
    assert s.n == 3 and s.mean == pytest.approx(0.03, abs=1e-12) and s.sd == pytest.approx(0.01, abs=1e-12)
    half = T2 * 0.01 / math.sqrt(3)  # 0.02484
    assert s.low == pytest.approx(0.03 - half, abs=1e-4) and s.high == pytest.approx(0.03 + half, abs=1e-4)
    t = 0.03 / (0.01 / math.sqrt(3))  # 5.196
    assert s.p == pytest.approx(p_df2(t), rel=1e-6)  # 0.0351
    assert s.p == pytest.approx(stats.ttest_rel(git, base).pvalue, rel=1e-9)
    assert rs.paired_summary([-0.2, -0.2, -0.2]).p == 0.0  # identical nonzero differences: t is infinite
    assert rs.paired_summary([0.0, 0.0]).p == 1.0
    assert math.isnan(rs.paired_summary([0.1]).p)


def test_replicate_keys_and_headline_metrics():
    for key in ("train.seed", "data.seed", "generator.seed", "data.instance", "seed"):
        assert rs.is_replicate_key(key), key
    for key in ("git.prob", "data.seeds", "train.rule", "aug.oracle_prob"):
        assert not rs.is_replicate_key(key), key
    only_val = [fake({}, {"val/bal_acc": 0.5, "val/acc_few": 0.1, "inv/ekld_few": 1.0})]
    assert rs.headline_metrics(only_val) == ["val/bal_acc", "val/acc_few", "inv/ekld_few"]
    # test/ wins as soon as one trial has it (never a mix of splits within one metric)
    mixed = only_val + [fake({}, {"test/bal_acc": 0.6, "val/bal_acc": 0.6})]
    assert rs.headline_metrics(mixed) == ["test/bal_acc", "val/acc_few", "inv/ekld_few"]


# --------------------------------------------------------------------------------------------------- pairing


def test_groups_of_the_2x2_design():
    keys = ["git.prob", "aug.oracle_prob"]
    groups = rs.aggregate(fake_trials(), keys, ["test/bal_acc"])
    assert [g.values for g in groups] == [(0.0, 0.0), (0.0, 0.5), (0.5, 0.0), (0.5, 0.5)]
    base = groups[0].stats["test/bal_acc"]
    assert (base.n, base.mean, base.sd) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert base.high - base.mean == pytest.approx(T2 * 0.1 / math.sqrt(3), abs=1e-4)  # 0.2484
    four = groups[2].stats["test/bal_acc"]  # 0.54, 0.65, 0.76, 0.90
    assert four.n == 4 and four.mean == pytest.approx(0.7125)
    sd = math.sqrt((0.1725**2 + 0.0625**2 + 0.0475**2 + 0.1875**2) / 3)  # 0.1539
    assert four.sd == pytest.approx(sd) and four.high - four.mean == pytest.approx(T3 * sd / 2, abs=1e-4)


def test_pairs_match_seeds_and_the_other_factor():
    keys = ["git.prob", "aug.oracle_prob"]
    groups = rs.aggregate(fake_trials(), keys, ["test/bal_acc"])
    pairings = rs.compare(groups, keys, "git.prob", 0, ["train.seed"], ["test/bal_acc", "inv/ekld_few"])
    assert [(p.group.values, p.baseline.values) for p in pairings] == [((0.5, 0.0), (0.0, 0.0)),
                                                                        ((0.5, 0.5), (0.0, 0.5))]
    off, on = pairings
    assert len(off.pairs) == 3 and [t.params["train.seed"] for t in off.unpaired] == [3]
    assert all(t.params["train.seed"] == b.params["train.seed"] for t, b in off.pairs)
    s = off.stats["test/bal_acc"]
    assert (s.n, s.mean, s.sd) == (3, pytest.approx(0.05), pytest.approx(0.01))
    assert s.high - s.mean == pytest.approx(T2 * 0.01 / math.sqrt(3), abs=1e-4)
    assert s.p == pytest.approx(p_df2(0.05 / (0.01 / math.sqrt(3))), rel=1e-6)  # t = 8.66, p = 0.0131
    s = on.stats["test/bal_acc"]  # 0.07, 0.10, 0.13 (across oracle arms it would be 0.12 on average)
    assert (s.n, s.mean, s.sd, len(on.unpaired)) == (3, pytest.approx(0.10), pytest.approx(0.03), 0)
    assert s.p == pytest.approx(p_df2(0.10 / (0.03 / math.sqrt(3))), rel=1e-6)  # t = 5.77, p = 0.0287
    e = off.stats["inv/ekld_few"]
    assert e.mean == pytest.approx(-0.2) and e.sd == 0 and e.p == 0.0


def test_pooled_factor_is_matched_and_duplicates_stay_unpaired():
    keys = ["git.prob"]  # aug.oracle_prob pooled over: it must still match within a pair
    groups = rs.aggregate(fake_trials(), keys, ["test/bal_acc"])
    (pr,) = rs.compare(groups, keys, "git.prob", 0.0, ["aug.oracle_prob", "train.seed"], ["test/bal_acc"])
    s = pr.stats["test/bal_acc"]  # 0.04, 0.05, 0.06, 0.07, 0.10, 0.13
    assert (len(pr.pairs), len(pr.unpaired), s.n) == (6, 1, 6)
    assert s.mean == pytest.approx(0.075)
    sd = math.sqrt((0.035**2 + 0.025**2 + 0.015**2 + 0.005**2 + 0.025**2 + 0.055**2) / 5)
    assert s.sd == pytest.approx(sd) and s.high - s.mean == pytest.approx(T5 * sd / math.sqrt(6), abs=1e-4)

    # The same seed in two parent runs (--all): pairs stay within their run; two of a kind in one run do not pair.
    two_runs = [fake({"g": g, "s": 0}, {"m": v}, parent) for parent, g, v in
                (("p1", 0, 0.5), ("p1", 1, 0.6), ("p2", 0, 0.4), ("p2", 1, 0.7))]
    (pr,) = rs.compare(rs.aggregate(two_runs, ["g"], ["m"]), ["g"], "g", 0, ["s"], ["m"])
    assert sorted(pr.diffs["m"]) == [pytest.approx(0.1), pytest.approx(0.3)]
    dup = [fake({"g": g, "s": 0}, {"m": 0.5}) for g in (0, 1, 1)]
    (pr,) = rs.compare(rs.aggregate(dup, ["g"], ["m"]), ["g"], "g", 0, ["s"], ["m"])
    assert pr.pairs == [] and len(pr.unpaired) == 2


def test_default_grouping_and_baseline():
    def trial(i, **params):
        raw = {k: str(v) for k, v in params.items()}
        return Trial(f"r{i}", f"t{i}", "p", "FINISHED", "finished", "", None, "",
                     {k: parse_value(v) for k, v in raw.items()}, raw, {})

    trials = [trial(i, **{"git.prob": g, "train.seed": s, "data.instance": s % 2, "optim.lr": 0.05})
              for i, (g, s) in enumerate((g, s) for g in (0.0, 0.5) for s in range(3))]

    def sweep(space):
        return Sweep("uri", "x", "1", [], trials, "val/bal_acc", "max", "grid", space)

    grid = sweep({"git.prob": "{'grid': [0.0, 0.5]}", "train.seed": "{'grid': [0, 1, 2]}"})
    # seeds and instances are replicates, optim.lr does not vary: git.prob alone, with GIT off as baseline
    assert grouping(None, None, grid, trials) == (["git.prob"], ("git.prob", 0.0), True)
    assert grouping(None, "none", grid, trials) == (["git.prob"], None, False)
    ranged = sweep({"git.prob": "{'uniform': [0.0, 1.0]}"})  # 0 drawn from a range is no designed baseline
    assert grouping(None, None, ranged, trials) == (["git.prob"], None, False)
    # an explicit baseline key joins the grouping; its value is parsed like the stored params
    keys, base, auto = grouping("data.instance", "git.prob=0", grid, trials)
    assert (keys, base, auto) == (["git.prob", "data.instance"], ("git.prob", 0), False)


# --------------------------------------------------------------------------------------------------- end to end

NAME = "aggregate-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sweep written straight into an MLflow sqlite store: a parent run and one child run per trial of the
    design, plus an errored trial whose numbers must not count. Returns (tmp, uri, client, parent run id)."""
    tmp = tmp_path_factory.mktemp("aggregate")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(NAME, artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(exp, tags={"gitune.role": "sweep"}).info.run_id
    for k, v in {"metric": "val/bal_acc", "mode": "max", "search": "grid", "scheduler": "fifo",
                 "space.git.prob": "{'grid': [0.0, 0.5]}", "space.aug.oracle_prob": "{'grid': [0.0, 0.5]}",
                 "space.train.seed": "{'grid': [0, 1, 2, 3]}"}.items():
        client.log_param(parent, k, v)
    trials = [(*row, "FINISHED") for row in design()] + [(0.0, 0.0, 0, 0.0, "FAILED")]
    for i, (g, o, seed, bal, status) in enumerate(trials):
        run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "gitune.role": "trial",
                                           "gitune.trial_id": f"t{i:02d}", "stage": "classifier"}).info.run_id
        params = {"git.prob": str(g), "aug.oracle_prob": str(o), "train.seed": str(seed), "data.instance": "0",
                  "optim.lr": "0.05", "data/train_images": "1000"}
        for k, v in params.items():
            client.log_param(run, k, v)
        client.log_metric(run, "test/bal_acc", 0.0, step=0)  # an earlier epoch: the last value counts
        client.log_metric(run, "test/bal_acc", bal, step=1)
        client.log_metric(run, "val/bal_acc", bal - 0.01, step=1)
        client.log_metric(run, "val/acc_few", bal / 2, step=1)  # no test/acc_few: falls back to val/
        client.log_metric(run, "inv/ekld_few", ekld_few(g), step=1)
        client.set_terminated(run, status)
    client.set_terminated(parent, "FINISHED")
    return tmp, uri, client, parent


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def row(rows, group, metric):
    found = [r for r in rows if r["group"] == group and r["metric"] == metric]
    assert len(found) == 1, (group, metric, rows)
    return found[0]


@pytest.mark.timeout(180)
def test_end_to_end_groups_and_paired_csv(store):
    tmp, uri, client, parent = store
    out = tmp / "explicit"
    assert main([NAME, "--tracking-uri", uri, "--out", str(out), "--baseline", "git.prob=0"]) == 0

    groups = read_csv(out / "groups.csv")
    assert {r["metric"] for r in groups} == {"test/bal_acc", "val/acc_few", "inv/ekld_few"}
    assert {r["group"] for r in groups} == {f"git.prob={g}, aug.oracle_prob={o}" for g in ("0", "0.5")
                                            for o in ("0", "0.5")}  # train.seed and data.instance pooled
    base = row(groups, "git.prob=0, aug.oracle_prob=0", "test/bal_acc")
    assert (base["trials"], base["n"], base["baseline"]) == ("3", "3", "yes")  # the errored trial left out
    assert float(base["mean"]) == pytest.approx(0.6) and float(base["sd"]) == pytest.approx(0.1)
    half = T2 * 0.1 / math.sqrt(3)
    assert float(base["ci_low"]) == pytest.approx(0.6 - half, abs=1e-4)
    assert float(base["ci_high"]) == pytest.approx(0.6 + half, abs=1e-4)
    four = row(groups, "git.prob=0.5, aug.oracle_prob=0", "test/bal_acc")
    assert four["n"] == "4" and float(four["mean"]) == pytest.approx(0.7125) and four["baseline"] == ""

    paired = read_csv(out / "paired.csv")
    assert {r["group"] for r in paired} == {"git.prob=0.5, aug.oracle_prob=0", "git.prob=0.5, aug.oracle_prob=0.5"}
    off = row(paired, "git.prob=0.5, aug.oracle_prob=0", "test/bal_acc")
    assert off["baseline_group"] == "git.prob=0, aug.oracle_prob=0"
    assert (off["pairs"], off["unpaired"], off["n"]) == ("3", "1", "3")
    assert float(off["mean_diff"]) == pytest.approx(0.05) and float(off["sd"]) == pytest.approx(0.01)
    assert float(off["ci_high"]) - 0.05 == pytest.approx(T2 * 0.01 / math.sqrt(3), abs=1e-4)
    assert float(off["p"]) == pytest.approx(p_df2(0.05 / (0.01 / math.sqrt(3))), rel=1e-6)
    on = row(paired, "git.prob=0.5, aug.oracle_prob=0.5", "test/bal_acc")
    assert on["baseline_group"] == "git.prob=0, aug.oracle_prob=0.5" and on["unpaired"] == "0"
    assert float(on["mean_diff"]) == pytest.approx(0.10) and float(on["sd"]) == pytest.approx(0.03)
    assert float(on["p"]) == pytest.approx(p_df2(0.10 / (0.03 / math.sqrt(3))), rel=1e-6)
    ekld = row(paired, "git.prob=0.5, aug.oracle_prob=0", "inv/ekld_few")
    assert float(ekld["mean_diff"]) == pytest.approx(-0.2) and float(ekld["p"]) == 0.0

    md = (out / "report.md").read_text()
    assert "## Groups pooled over seeds and instances" in md and "![group means" in md
    assert "Paired differences against `git.prob=0` (`--baseline`)" in md
    assert "`val/acc_few`" in md and "validation split" in md  # says which split the accuracy is from
    assert (out / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    uploaded = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/groups.csv", "report/paired.csv", "report/groups.png"} <= uploaded


@pytest.mark.timeout(180)
def test_default_baseline_group_by_and_none(store):
    tmp, uri, *_ = store
    explicit = tmp / "explicit-again"
    assert main([NAME, "--tracking-uri", uri, "--out", str(explicit), "--no-upload", "--baseline",
                 "git.prob=0.0"]) == 0
    auto = tmp / "auto"
    assert main([NAME, "--tracking-uri", uri, "--out", str(auto), "--no-upload"]) == 0
    # git.prob is a grid with 0 in it: the default baseline is git.prob=0, the same as asking for it
    assert (auto / "paired.csv").read_text() == (explicit / "paired.csv").read_text()
    assert "chosen by default" in (auto / "report.md").read_text()

    none = tmp / "none"
    assert main([NAME, "--tracking-uri", uri, "--out", str(none), "--no-upload", "--baseline", "none"]) == 0
    assert (none / "groups.csv").exists() and not (none / "paired.csv").exists()
    assert "Paired differences" not in (none / "report.md").read_text()

    coarse = tmp / "coarse"  # aug.oracle_prob pooled over, but still matched within each pair
    assert main([NAME, "--tracking-uri", uri, "--out", str(coarse), "--no-upload", "--group-by",
                 "git.prob", "--baseline", "git.prob=0"]) == 0
    (r,) = [r for r in read_csv(coarse / "paired.csv") if r["metric"] == "test/bal_acc"]
    assert (r["group"], r["pairs"], r["unpaired"]) == ("git.prob=0.5", "6", "1")
    assert float(r["mean_diff"]) == pytest.approx(0.075)
    g = row(read_csv(coarse / "groups.csv"), "git.prob=0", "test/bal_acc")
    assert g["n"] == "6" and float(g["mean"]) == pytest.approx(0.61)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, expect", [
    (["--baseline", "train.nope=0"], ["--baseline train.nope", "not a parameter"]),
    (["--baseline", "git.prob=0.3"], ["no reported trial has git.prob = 0.3", "0, 0.5"]),
    (["--baseline", "git.prob"], ["expected KEY=VALUE"]),
    (["--group-by", "git.prob,nope"], ["--group-by nope"]),
])
def test_bad_aggregation_input_is_one_line_exit_2(store, tmp_path, monkeypatch, capsys, args, expect):
    _, uri, client, parent = store
    monkeypatch.chdir(tmp_path)  # default --out is reports/<experiment> here
    before = {a.path for a in client.list_artifacts(parent, "report")}
    assert main([NAME, "--tracking-uri", uri, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gitune: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for text in expect:
        assert text in err
    assert list(tmp_path.iterdir()) == []
    assert {a.path for a in client.list_artifacts(parent, "report")} == before
