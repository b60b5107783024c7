"""`python -m gitune.report A B`: two sweeps side by side, on two real experiments in one MLflow sqlite store
(written the way tests/test_report_aggregate.py writes its sweep: a parent run and one child run per trial).
The numbers are worked out by hand: CE+DRS ± GIT and LDAM+DRW ± GIT, 3 seeds each; and `--help` stays light
(no torch, MLflow or matplotlib imported to print it)."""

import csv
import math
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from gitune.report.cli import main

T2 = 4.303  # t_{0.975, 2}, from a printed table

# test/bal_acc per (git.prob, seed). CE+DRS: GIT − baseline = 0.04, 0.05, 0.06 (mean 0.05, sd 0.01);
# LDAM+DRW: 0.01, 0.03, 0.05 (mean 0.03, sd 0.02).
EXPERIMENTS = {
    "cmp-ce-drs": {0.0: [0.50, 0.60, 0.70], 0.5: [0.54, 0.65, 0.76]},
    "cmp-ldam-drw": {0.0: [0.62, 0.64, 0.66], 0.5: [0.63, 0.67, 0.71]},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(uri)
    parents = {}
    for name, arms in EXPERIMENTS.items():
        exp = client.create_experiment(name, artifact_location=(tmp / name).as_uri())
        parent = client.create_run(exp, tags={"gitune.role": "sweep"}).info.run_id
        for k, v in {"metric": "val/bal_acc", "mode": "max", "search": "grid", "scheduler": "fifo",
                     "space.git.prob": "{'grid': [0.0, 0.5]}", "space.train.seed": "{'grid': [0, 1, 2]}"}.items():
            client.log_param(parent, k, v)
        i = 0
        for g, values in arms.items():
            for seed, bal in enumerate(values):
                run = client.create_run(exp, tags={"mlflow.parentRunId": parent, "gitune.role": "trial",
                                                   "gitune.trial_id": f"t{i:02d}", "stage": "classifier"}).info.run_id
                for k, v in {"git.prob": str(g), "train.seed": str(seed), "train.loss": name.split("-")[1],
                             "optim.lr": "0.1"}.items():
                    client.log_param(run, k, v)
                client.log_metric(run, "test/bal_acc", bal, step=1)
                client.log_metric(run, "test/acc_few", bal / 2, step=1)
                client.log_metric(run, "inv/ekld_few", 0.8 if g else 1.0, step=1)
                client.set_terminated(run, "FINISHED")
                i += 1
        client.set_terminated(parent, "FINISHED")
        parents[name] = parent
    return tmp, uri, client, parents


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


@pytest.mark.timeout(180)
def test_two_experiments_side_by_side(store, capsys):
    tmp, uri, client, parents = store
    out = tmp / "cmp"
    t0 = time.monotonic()
    assert main(["cmp-ce-drs", "cmp-ldam-drw", "--tracking-uri", uri, "--out", str(out)]) == 0
    took = time.monotonic() - t0
    printed = capsys.readouterr().out
    print(f"comparison of 2 experiments: {took:.1f} s")

    groups = read_csv(out / "compare_groups.csv")
    assert {r["experiment"] for r in groups} == set(EXPERIMENTS)
    assert {r["metric"] for r in groups} == {"test/bal_acc", "test/acc_few", "inv/ekld_few"}
    for name, arms in EXPERIMENTS.items():
        for g, values in arms.items():
            r = one(groups, experiment=name, group=f"git.prob={g:g}", metric="test/bal_acc")
            mean = sum(values) / 3
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
            assert (r["trials"], r["n"], r["baseline"]) == ("3", "3", "yes" if g == 0 else "")
            assert float(r["mean"]) == pytest.approx(mean) and float(r["sd"]) == pytest.approx(sd)
            assert float(r["ci_high"]) - mean == pytest.approx(T2 * sd / math.sqrt(3), abs=1e-4)

    paired = read_csv(out / "compare_paired.csv")
    ce = one(paired, experiment="cmp-ce-drs", metric="test/bal_acc")
    ldam = one(paired, experiment="cmp-ldam-drw", metric="test/bal_acc")
    assert (ce["group"], ce["baseline_group"], ce["pairs"]) == ("git.prob=0.5", "git.prob=0", "3")
    assert float(ce["mean_diff"]) == pytest.approx(0.05) and float(ce["sd"]) == pytest.approx(0.01)
    assert float(ldam["mean_diff"]) == pytest.approx(0.03) and float(ldam["sd"]) == pytest.approx(0.02)
    t = 0.03 / (0.02 / math.sqrt(3))
    assert float(ldam["p"]) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-6)  # 2 df, closed form

    md = (out / "report.md").read_text()
    for text in ("# Sweep comparison: cmp-ce-drs, cmp-ldam-drw", "`cmp-ce-drs`", "`cmp-ldam-drw`",
                 parents["cmp-ce-drs"], parents["cmp-ldam-drw"], "baseline `git.prob=0` (default)",
                 "| cmp-ce-drs | git.prob=0 (baseline) | 3 | 0.6 ± 0.1 [0.3516, 0.8484] ",
                 "| cmp-ldam-drw | git.prob=0 (baseline) | 3 | 0.64 ± 0.02 ", "|  | git.prob=0.5 | 3 | 0.67 ± 0.04 ",
                 "Paired differences against each experiment's baseline"):
        assert text in md, text
    # printed: both experiments, their group means and their paired differences
    assert "comparison of 2 experiments (cmp-ce-drs, cmp-ldam-drw)" in printed
    lines = printed.splitlines()
    ce_line = next(line for line in lines if line.startswith("cmp-ce-drs ") and "git.prob=0 (baseline)" in line)
    assert "0.6 ± 0.1" in ce_line
    ldam_line = next(line for line in lines if line.startswith("cmp-ldam-drw ") and "git.prob=0 (baseline)" in line)
    assert "0.64 ± 0.02" in ldam_line
    delta = [line for line in lines if "test bal. acc" in line and "+0.0" in line]
    assert any("+0.05" in line for line in delta) and any("+0.03" in line for line in delta)
    # a comparison belongs to no single sweep: nothing uploaded
    assert not [a for p in parents.values() for a in client.list_artifacts(p)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, expect", [
    (["cmp-ce-drs", "cmp-nope"], ["experiment 'cmp-nope' not found", "cmp-ce-drs", "cmp-ldam-drw"]),
    (["cmp-ce-drs", "cmp-ce-drs"], ["experiment 'cmp-ce-drs' named twice"]),
    (["cmp-ce-drs", "cmp-ldam-drw", "--parent", "abc"], ["--parent abc", "single experiment"]),
    (["cmp-ce-drs", "cmp-ldam-drw", "--baseline", "git.prob=0.3"],
     ["experiment 'cmp-ce-drs'", "no reported trial has git.prob = 0.3"]),
])
def test_bad_comparison_is_one_line_exit_2(store, tmp_path, monkeypatch, capsys, args, expect):
    _, uri, *_ = store
    monkeypatch.chdir(tmp_path)
    assert main([*args, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gitune: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for text in expect:
        assert text in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t = time.perf_counter(); import gitune.report.cli as c\n"
            "try:\n    c.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'mlflow', 'matplotlib', 'numpy', 'scipy', 'ray') if m in sys.modules]\n"
            "print('HEAVY', heavy, time.perf_counter() - t, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    assert "HEAVY [] " in out.stderr, out.stderr
    assert "EXPERIMENT [EXPERIMENT ...]" in out.stdout
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "gitune.report", "--help"], capture_output=True,
                         text=True, timeout=50)
    took = time.monotonic() - t0
    assert out.returncode == 0 and "usage: python -m gitune.report" in out.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "mlflow", "matplotlib", "numpy", "ray"}, sorted(imported)
    assert took < 5, took  # ~0.1 s here; the bound leaves room for a loaded machine
