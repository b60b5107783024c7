"""`python -m gitune.report` on a real MLflow store written by a real tiny sweep (Optuna + ASHA, two train rules,
two Zipf instances, so class sizes differ between trials). Every number checked here is read back from MLflow
or recomputed from the report's own CSV files."""

import csv
import math
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

import gitune.report.cli as report
from gitune import sweep

NAME = "report-test"
SPACE = f"""
name: {NAME}
metric: val/bal_acc
mode: max
num_samples: 4
scheduler: {{type: asha, max_t: 2, grace_period: 1, reduction_factor: 2}}
search: {{type: optuna, seed: 4}}  # seed 4: the 4 trials sample both rules and both instances
resources: {{cpu: 1}}
config:
  data: {{name: glyphs, num_classes: 5, image_size: 16, profile: zipf, alpha: 1.5, n_max: 120, n_min: 5,
         val_per_class: 8, test_per_class: 8, nuisance: {{rotation: 180}}}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [1], gamma: 0.1}}
  train: {{epochs: 2, batch_size: 64, threads: 1}}
  eval: {{inv_interval: 1, inv_images_per_class: 4, inv_transforms: 2, batch_size: 256}}
space:
  optim.lr: {{loguniform: [0.005, 0.2]}}
  train.rule: {{choice: [erm, resample]}}
  data.instance: {{choice: [0, 1]}}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory, ray_session):
    """One real sweep for the whole module: (tmp folder, tracking URI, client, parent run, trial runs)."""
    tmp = tmp_path_factory.mktemp("report")
    space = tmp / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp}/mlflow.db"
    assert sweep.main(["--space", str(space), "--tracking-uri", uri, "--storage", str(tmp / "rr")]) == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    trials = {r.data.tags["gitune.trial_id"]: r for r in runs if r.data.tags.get("gitune.role") == "trial"}
    assert len(trials) == 4
    return tmp, uri, client, parent, trials


@pytest.fixture(scope="module")
def default_report(store):
    """The report with default options, written once: (out folder, stdout)."""
    tmp, uri, *_ = store
    out = tmp / "out" / "default"
    cap = _Capture()
    with cap:
        rc = report.main([NAME, "--tracking-uri", uri, "--out", str(out)])
    assert rc == 0, cap.err
    return out, cap.out


class _Capture:
    """Module-scoped fixtures cannot use capsys: swap sys.stdout/sys.stderr by hand."""

    def __enter__(self):
        import io
        import sys

        self._old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._out, self._err = io.StringIO(), io.StringIO()
        return self

    def __exit__(self, *exc):
        import sys

        sys.stdout, sys.stderr = self._old
        self.out, self.err = self._out.getvalue(), self._err.getvalue()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def ranks(a):
    """Average ranks (ties share the mean rank), written independently of gitune.metrics."""
    a = np.asarray(a, float)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and a[order[j + 1]] == a[order[i]]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def class_counts(client, run, tmp):
    path = client.download_artifacts(run.info.run_id, "class_counts.csv", str(tmp / "cc" / run.info.run_id))
    return {row[0]: int(row[2]) for row in csv.reader(open(path))}


def md_rows(text, header_start):
    """Rows of the Markdown table whose header begins with `header_start`, as lists of cells."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {header_start} |"))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows


@pytest.mark.timeout(300)
def test_files_best_trials_and_trials_table(store, default_report):
    tmp, uri, client, parent, trials = store
    out, stdout = default_report
    assert str(out) in stdout and "4 trials" in stdout
    for name in ("report.md", "best_trials.md", "best_trials.csv", "trials.csv", "ekld_vs_class_size.png",
                 "ekld_vs_class_size.csv", "few_shot_vs_optim_lr.png", "param_importances.png",
                 "param_importances.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left

    best = read_csv(out / "best_trials.csv")
    assert len(best) == len(trials) and {r["trial_id"] for r in best} == set(trials)
    values = [float(r["val/bal_acc"]) for r in best]
    assert values == sorted(values, reverse=True)  # metric val/bal_acc, mode max (the parent's params)
    assert [int(r["rank"]) for r in best] == list(range(1, len(best) + 1))
    for r in best:
        run = trials[r["trial_id"]]
        assert r["run_id"] == run.info.run_id
        for key in ("val/bal_acc", "val/acc_few", "inv/ekld_few", "inv/ekld_many", "inv/ekld_size_spearman"):
            assert float(r[key]) == run.data.metrics[key], key
        if "test/bal_acc" in run.data.metrics:
            assert float(r["test/bal_acc"]) == run.data.metrics["test/bal_acc"]
        assert r["train.rule"] == run.data.params["train.rule"]
        assert float(r["optim.lr"]) == float(run.data.params["optim.lr"])
        assert int(r["data.instance"]) == int(run.data.params["data.instance"])
        stopped = "gitune.stopped_early" in run.data.tags
        assert r["state"].startswith("stopped early") == stopped

    every = read_csv(out / "trials.csv")
    assert {r["trial_id"] for r in every} == set(trials)
    for r in every:
        run = trials[r["trial_id"]]
        assert r["status"] == run.info.status
        assert r["stopped_early"] == run.data.tags.get("gitune.stopped_early", "")
    md = (out / "report.md").read_text()
    assert parent.info.run_id in md and uri in md and "## Best trials" in md
    assert "![eKLD vs class size](ekld_vs_class_size.png)" in md


@pytest.mark.timeout(300)
def test_pooled_scatter_sizes_and_spearman(store, default_report):
    tmp, uri, client, parent, trials = store
    out, _ = default_report
    rows = read_csv(out / "ekld_vs_class_size.csv")
    expected = sum(1 for run in trials.values() for k in run.data.metrics if k.startswith("inv/ekld/c"))
    assert expected > 0 and len(rows) == expected
    counts = {tid: class_counts(client, run, tmp) for tid, run in trials.items()}
    # Two Zipf instances assign classes to ranks differently: sizes must come from each trial's own counts.
    instances = {tid: run.data.params["data.instance"] for tid, run in trials.items()}
    assert len(set(instances.values())) == 2, "the sweep should have sampled both Zipf instances"
    assert len({tuple(sorted(c.items())) for c in counts.values()}) == 2
    for r in rows:
        run = trials[r["trial_id"]]
        assert int(r["class_size"]) == counts[r["trial_id"]][r["class"]]
        assert float(r["ekld"]) == run.data.metrics[f"inv/ekld/{r['class']}"]
        # default colour: git.prob does not vary, train.rule does
        assert r["color_by"] == "train.rule" and r["color_value"] == run.data.params["train.rule"]

    md = (out / "report.md").read_text()
    table = md_rows(md, "train.rule")
    by_label = {row[0]: row for row in table}
    pooled = spearman([int(r["class_size"]) for r in rows], [float(r["ekld"]) for r in rows])
    assert by_label["all trials"][2] == str(len(rows))
    assert float(by_label["all trials"][3]) == pytest.approx(pooled, abs=6e-4)
    for rule in {r["color_value"] for r in rows}:
        sel = [r for r in rows if r["color_value"] == rule]
        if len(sel) > 2:
            assert float(by_label[rule][3]) == pytest.approx(
                spearman([int(r["class_size"]) for r in sel], [float(r["ekld"]) for r in sel]), abs=6e-4)


@pytest.mark.timeout(300)
def test_importances_and_uploaded_artifacts(store, default_report):
    tmp, uri, client, parent, trials = store
    out, _ = default_report
    imp = read_csv(out / "param_importances.csv")
    assert {r["param"] for r in imp} <= {"optim.lr", "train.rule", "data.instance"} and "optim.lr" in {
        r["param"] for r in imp}
    assert math.isclose(sum(float(r["importance"]) for r in imp), 1.0, abs_tol=1e-6)
    assert all(r["metric"] == "val/bal_acc" for r in imp)
    uploaded = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {f"report/{p.name}" for p in out.iterdir()} == uploaded


@pytest.mark.timeout(300)
def test_chosen_param_colour_and_replacing_the_folder(store, default_report, tmp_path):
    tmp, uri, client, parent, trials = store
    out = tmp_path / "r"
    assert report.main([NAME, "--tracking-uri", uri, "--out", str(out), "--no-upload"]) == 0
    assert (out / "few_shot_vs_optim_lr.png").exists()
    rc = report.main([NAME, "--tracking-uri", uri, "--out", str(out), "--no-upload", "--param", "train.rule",
                      "--color-by", "data.instance", "--top", "2", "--finished-only"])
    assert rc == 0
    assert (out / "few_shot_vs_train_rule.png").exists()
    assert not (out / "few_shot_vs_optim_lr.png").exists()  # the folder is replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    rows = read_csv(out / "ekld_vs_class_size.csv")
    assert {r["color_by"] for r in rows} == {"data.instance"}
    finished = {tid for tid, run in trials.items() if "gitune.stopped_early" not in run.data.tags}
    assert {r["trial_id"] for r in rows} == finished
    assert len(read_csv(out / "best_trials.csv")) == min(2, len(finished))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args, expect", [
    (["no-such-sweep"], ["experiment 'no-such-sweep' not found", NAME]),
    ([NAME, "--param", "train.nope"], ["--param train.nope", "optim.lr"]),
    ([NAME, "--color-by", "nope"], ["--color-by nope"]),
    ([NAME, "--parent", "0123abcd"], ["--parent 0123abcd", "expected one of"]),
    ([NAME, "--top", "0"], ["--top"]),
])
def test_bad_input_is_one_line_exit_2_nothing_written(store, tmp_path, monkeypatch, capsys, args, expect):
    _, uri, *_ = store
    monkeypatch.chdir(tmp_path)  # default --out is reports/<experiment> here
    assert report.main([*args, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gitune: error: ") and err.count("\n") == 1 and "Traceback" not in err
    for text in expect:
        assert text in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
def test_out_replaces_only_a_folder_a_report_wrote(store, tmp_path, capsys):
    """A typo such as `--out ~/code` must not delete anything: a non-empty folder without the report's
    marker is refused before any work; an empty folder is used; a report folder is replaced."""
    _, uri, *_ = store
    code = tmp_path / "code"
    (code / "src").mkdir(parents=True)
    (code / "src" / "main.py").write_text("print('precious')\n")
    assert report.main([NAME, "--tracking-uri", uri, "--out", str(code), "--no-upload"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gitune: error: --out {code}: ") and err.count("\n") == 1 and ".gitune-report" in err
    assert (code / "src" / "main.py").read_text() == "print('precious')\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code"]  # no temporary folder left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main([NAME, "--tracking-uri", uri, "--out", str(empty), "--no-upload"]) == 0
    assert (empty / ".gitune-report").is_file() and (empty / "report.md").is_file()
    (empty / "report.md").write_text("stale")
    assert report.main([NAME, "--tracking-uri", uri, "--out", str(empty), "--no-upload", "--top", "1"]) == 0
    assert (empty / "report.md").read_text() != "stale"


@pytest.mark.timeout(60)
def test_unreachable_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for uri in (f"sqlite:///{tmp_path}/missing/mlflow.db", f"sqlite:///{tmp_path}/mlflow.db",
                "http://127.0.0.1:9"):
        assert report.main([NAME, "--tracking-uri", uri]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gitune: error: --tracking-uri {uri}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no empty mlflow.db, no reports/
