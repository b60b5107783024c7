"""Spec keys passed to Ray Tune: `search.points_to_evaluate` (checked, then handed to OptunaSearch or
BasicVariantGenerator, which run them first) and `time_budget_s` (checked, then TuneConfig(time_budget_s=...));
and the project stands alone: no text in it points outside the repository."""

import re
import textwrap
import time
from pathlib import Path

import pytest

from gitune import spaces, sweep
from gitune.stage import run_stage
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
name: tune-keys
num_samples: 3
scheduler: {type: fifo}
search: {type: random, seed: 0}
config:
  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}
  model: {arch: small_cnn}
  train: {epochs: 3}
  optim: {warmup_epochs: 1, milestones: [2]}
space:
  optim.lr: {loguniform: [0.01, 0.1]}
  train.loss: {choice: [ce, focal]}
  train.batch_size: {quniform: [32, 128, 32]}
"""


def _write(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _with(search=None, extra=""):
    text = GOOD if search is None else GOOD.replace("search: {type: random, seed: 0}", search)
    return text + extra


# (name, file text, substrings of the one error line)
BAD = [
    ("not a list", _with("search: {type: random, points_to_evaluate: {optim.lr: 0.05}}"),
     ["search.points_to_evaluate: expected a non-empty list of mappings"]),
    ("empty list", _with("search: {type: random, points_to_evaluate: []}"),
     ["search.points_to_evaluate: expected a non-empty list"]),
    ("a point not a mapping", _with("search: {type: random, points_to_evaluate: [0.05]}"),
     ["search.points_to_evaluate: expected"]),
    ("fixed key", _with("search: {type: random, points_to_evaluate: [{optim.momentum: 0.9}]}"),
     ["search.points_to_evaluate[0].optim.momentum: not a tuned key", "optim.lr, train.loss, train.batch_size"]),
    ("unknown key", _with("search: {type: random, points_to_evaluate: [{optim.lrr: 0.05}]}"),
     ["search.points_to_evaluate[0].optim.lrr: not a tuned key"]),
    ("not a choice", _with("search: {type: random, points_to_evaluate: [{train.loss: ldam}]}"),
     ["points_to_evaluate[0].train.loss: expected one of the values of space.train.loss ('ce', 'focal')",
      "got 'ldam'"]),
    ("out of range", _with("search: {type: random, points_to_evaluate: [{optim.lr: 0.05}, {optim.lr: 0.5}]}"),
     ["points_to_evaluate[1].optim.lr: expected a number from 0.01 to 0.1", "got 0.5"]),
    ("text for a number", _with("search: {type: random, points_to_evaluate: [{optim.lr: fast}]}"),
     ["points_to_evaluate[0].optim.lr: expected a number", "got 'fast'"]),
    ("off the q grid", _with("search: {type: random, points_to_evaluate: [{train.batch_size: 40}]}"),
     ["points_to_evaluate[0].train.batch_size: expected a multiple of q=32"]),
    ("float for an int", _with("search: {type: random, points_to_evaluate: [{train.batch_size: 64.5}]}"),
     ["points_to_evaluate[0].train.batch_size: expected"]),
    ("optuna needs every key", _with("search: {type: optuna, points_to_evaluate: [{optim.lr: 0.05}]}"),
     ["points_to_evaluate[0]: Optuna needs a value for every tuned key; missing train.loss, train.batch_size"]),
    ("grid", _with("search: {type: grid, points_to_evaluate: [{train.loss: ce}]}").replace(
        "  optim.lr: {loguniform: [0.01, 0.1]}\n", "").replace("  train.batch_size: {quniform: [32, 128, 32]}\n", ""),
     ["search.points_to_evaluate: search.type grid runs every grid point already"]),
    ("more points than trials", _with("search: {type: random, points_to_evaluate: "
                                      "[{optim.lr: 0.05}, {optim.lr: 0.06}, {optim.lr: 0.07}, {optim.lr: 0.08}]}"),
     ["search.points_to_evaluate: 4 points but num_samples is 3"]),
    ("budget zero", _with(extra="time_budget_s: 0\n"), ["time_budget_s: expected a number > 0 (or null), got 0"]),
    ("budget negative", _with(extra="time_budget_s: -60\n"), ["time_budget_s: expected a number > 0"]),
    ("budget text", _with(extra="time_budget_s: 1h\n"), ["time_budget_s: expected a number > 0", "got '1h'"]),
    ("budget bool", _with(extra="time_budget_s: true\n"), ["time_budget_s: expected a number > 0", "got True"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_points_and_budget_one_line_exit_2(case, tmp_path, monkeypatch, capsys):
    name, text, needles = case
    space = _write(tmp_path, text)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc = sweep.main(["--space", str(space), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2, (name, err)
    assert len(err.splitlines()) == 1 and err.startswith("gitune: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (name, needle, err)
    assert list(work.iterdir()) == []


def test_bad_point_through_set_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = sweep.main(["--space", str(_write(tmp_path, GOOD)), "--dry-run",
                     "--set", "search.points_to_evaluate=[{train.loss: nope}]"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "points_to_evaluate[0].train.loss: expected one of the values" in err, err


def test_good_points_and_budget_are_kept(tmp_path):
    text = _with("search: {type: random, seed: 0, points_to_evaluate: "
                 "[{optim.lr: 0.05, train.batch_size: 64}, {train.loss: focal}]}", "time_budget_s: 90.5\n")
    spec = spaces.load_spec(_write(tmp_path, text))
    assert spec.search["points_to_evaluate"] == [{"optim.lr": 0.05, "train.batch_size": 64}, {"train.loss": "focal"}]
    assert spec.time_budget_s == 90.5
    assert spaces.load_spec(_write(tmp_path, GOOD)).time_budget_s is None
    assert "time_budget_s: 90.5" in spaces.describe(spec)


def test_search_algorithms_receive_the_points(tmp_path):
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    points = "[{optim.lr: 0.05, train.loss: focal, train.batch_size: 64}]"
    spec = spaces.load_spec(_write(tmp_path, _with(f"search: {{type: optuna, seed: 1, points_to_evaluate: {points}}}")))
    alg = spaces.search_algorithm(spec)
    assert isinstance(alg, OptunaSearch)
    # Optuna's parameter names are Ray's flattened ones ("group/key").
    assert alg._points_to_evaluate == [{"optim/lr": 0.05, "train/loss": "focal", "train/batch_size": 64}]

    spec = spaces.load_spec(_write(tmp_path, _with(f"search: {{type: random, points_to_evaluate: {points}}}")))
    alg = spaces.search_algorithm(spec)
    assert isinstance(alg, BasicVariantGenerator)
    assert alg._points_to_evaluate == [{"optim": {"lr": 0.05}, "train": {"loss": "focal", "batch_size": 64}}]

    alg = spaces.search_algorithm(spaces.load_spec(_write(tmp_path, GOOD)))
    assert alg._points_to_evaluate == []


def test_bundled_cifar_spaces_start_from_the_paper_recipe():
    for name in ("cifar10_lt", "cifar100_lt"):
        spec = spaces.load_spec(ROOT / "search_spaces" / f"{name}.yaml")
        first = spec.search["points_to_evaluate"][0]
        assert first == {"git.prob": 0.5, "git.start_epoch": 160, "train.rule": "drs", "train.loss": "ce",
                         "optim.lr": 0.1}, name
        assert spaces.search_algorithm(spec)._points_to_evaluate[0]["git/prob"] == 0.5


# ---------------------------------------------------------------------------------------------- real Tune runs


def _toy():
    """Reports the sampled config as its metric, a few steps of `seconds` each. Nested, so Ray ships it by value."""

    def toy(config, seconds):
        import time

        from ray import tune

        for epoch in range(1, 1000):
            time.sleep(seconds)
            tune.report({"val/acc": config["optim"]["lr"], "lr": config["optim"]["lr"],
                         "loss": config["train"]["loss"], "epoch": epoch, "done": epoch == 3})
            if epoch == 3 and seconds == 0:
                return

    return toy


def _capture_tune_config(monkeypatch):
    from ray import tune

    seen = {}
    real = tune.TuneConfig

    def capture(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(tune, "TuneConfig", capture)
    return seen


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["optuna", "random"])
def test_tune_runs_the_points_first(kind, ray_session, tmp_path, monkeypatch):
    from ray import tune

    points = "[{optim.lr: 0.0123, train.loss: focal, train.batch_size: 96}, " \
             "{optim.lr: 0.0456, train.loss: ce, train.batch_size: 32}]"
    text = _with(f"search: {{type: {kind}, seed: 0, max_concurrent: 1, points_to_evaluate: {points}}}",
                 "time_budget_s: 120\n").replace("num_samples: 3", "num_samples: 3\nmetric: val/acc")
    spec = spaces.load_spec(_write(tmp_path, text))
    seen = _capture_tune_config(monkeypatch)
    results = run_stage(spec, tune.with_parameters(_toy(), seconds=0), f"{tmp_path}/rr/{kind}", None, False,
                        {"val/acc": "val/acc"})
    assert seen["time_budget_s"] == 120
    assert len(results) == 3 and all(r.error is None for r in results)
    # Trial folders are named <trainable>_<trial id>_<creation index>_<params>: the order the searcher made them.
    by_start = sorted(results, key=lambda r: int(re.search(rf"{r.metrics['trial_id']}_(\d+)", r.path).group(1)))
    configs = [(r.config["optim"]["lr"], r.config["train"]["loss"], r.config["train"]["batch_size"])
               for r in by_start]
    assert configs[:2] == [(0.0123, "focal", 96), (0.0456, "ce", 32)], configs
    assert configs[2] not in configs[:2]  # the third trial is sampled


@pytest.mark.timeout(300)
def test_time_budget_stops_the_stage(ray_session, tmp_path, monkeypatch):
    from ray import tune

    spec = spaces.load_spec(_write(tmp_path, _with(extra="time_budget_s: 4\n").replace(
        "num_samples: 3", "num_samples: 2\nmetric: val/acc")))
    seen = _capture_tune_config(monkeypatch)
    start = time.monotonic()
    results = run_stage(spec, tune.with_parameters(_toy(), seconds=0.2), f"{tmp_path}/rr/budget", None, False,
                        {"val/acc": "val/acc"})
    took = time.monotonic() - start
    assert seen["time_budget_s"] == 4
    # Each trial would run 999 × 0.2 s; the budget ends the stage after about 4 s (Ray's start-up adds some).
    assert took < 120, took
    assert all((r.metrics or {}).get("epoch", 0) < 999 for r in results)


def test_no_budget_is_none_in_tune_config(ray_session, tmp_path, monkeypatch):
    from ray import tune

    spec = spaces.load_spec(_write(tmp_path, GOOD.replace("num_samples: 3", "num_samples: 1\nmetric: val/acc")))
    seen = _capture_tune_config(monkeypatch)
    run_stage(spec, tune.with_parameters(_toy(), seconds=0), f"{tmp_path}/rr/none", None, False,
              {"val/acc": "val/acc"})
    assert "time_budget_s" in seen and seen["time_budget_s"] is None


# -------------------------------------------------------------------------------- the project stands alone

_OUTSIDE = re.compile("|".join([re.escape("../" + "shared"), re.escape("SCIENCE" + ".md"),
                                re.escape("shared/" + "DESIGN"), r"SCIENCE\s*§"]))
_TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".json", ".txt", ".cfg", ".ini"}
_SKIP_DIRS = {".venv", ".git", "__pycache__", ".pytest_cache", "ray_results", "mlartifacts", "reports", "data",
              "build", "dist", "node_modules"}


def _project_text_files():
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts[:-1]):
            continue
        if path.is_file() and (path.suffix in _TEXT_SUFFIXES or path.name in ("Makefile", "Dockerfile")):
            yield rel, path


def test_no_text_points_outside_the_repository():
    found = []
    for rel, path in _project_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                found.append(f"{rel}:{number}: {line.strip()[:120]}")
    assert not found, "text that points outside the repository (use docs/):\n" + "\n".join(found)


def test_docs_pointers_name_existing_sections():
    """`docs/method.md, <section>` in code and docs names a section that docs/method.md has."""
    method = (ROOT / "docs" / "method.md").read_text()
    sections = {m.group(1).strip().lower() for m in re.finditer(r"^#{2,3} (.+)$", method, re.M)}
    missing = []
    for rel, path in _project_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"[ \t]*\n[ \t]*(#[ \t]*)?", " ", text)  # a pointer may wrap onto a comment's next line
        for m in re.finditer(r"docs/method\.md, ([a-zA-Z][a-zA-Z -]+?)(?=[):;,.]| and |$)", text):
            if m.group(1).strip().lower() not in sections:
                missing.append(f"{rel}: {m.group(0)!r}")
    assert not missing, f"sections not in docs/method.md ({sorted(sections)}):\n" + "\n".join(missing)


def test_a_tuned_key_pinned_with_set_leaves_the_points(tmp_path, monkeypatch, capsys):
    """`--set optim.lr=0.03` pins a key the recipe's points name: the pinned value applies to every trial and
    the points keep their other keys (before, every point was refused as naming an untuned key)."""
    from gitune.spaces import load_spec

    space = _write(tmp_path, _with("search: {type: optuna, seed: 0, points_to_evaluate: "
                                   "[{optim.lr: 0.05, train.loss: ce, train.batch_size: 64}]}"))
    spec = load_spec(space, overrides=["optim.lr=0.03"])
    assert spec.search["points_to_evaluate"] == [{"train.loss": "ce", "train.batch_size": 64}]
    assert spec.config["optim"]["lr"] == 0.03 and "optim.lr" not in spec.space
    spec = load_spec(space, overrides=["space.train.loss=null"])
    assert spec.search["points_to_evaluate"] == [{"optim.lr": 0.05, "train.batch_size": 64}]


BUDGET = """
name: budget
num_samples: 1
scheduler: {type: fifo}
resources: {cpu: 1}
time_budget_s: 15
config:
  data: {name: glyphs, n_max: 100, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}
  model: {arch: small_cnn}
  train: {epochs: 1000, threads: 1}
  optim: {warmup_epochs: 1, milestones: [2000]}
  eval: {inv_interval: 0}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_time_budget_ends_the_sweep_normally_not_as_an_interrupt(tmp_path, sweep_env):
    """Trials the budget stopped are not 'interrupted' (before: the sweep said so, exit 130, and asked for
    --resume): the sweep ends 0 with its best trial, the run FINISHED and tagged stopped early by the budget."""
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    space = _write(tmp_path, BUDGET, "budget.yaml")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = subprocess.run([sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
                          "--storage", str(tmp_path / "rr")], cwd=tmp_path, env=sweep_env, capture_output=True,
                         text=True, timeout=280)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "time_budget_s (15 s) reached: 1 trial(s) stopped before their last epoch" in text
    assert "interrupted" not in text and "Best trial" in text
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("budget").experiment_id])
    (child,) = [r for r in runs if r.data.tags.get("gitune.role") == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get("gitune.role") == "sweep"]
    assert parent.info.status == "FINISHED" and child.info.status == "FINISHED"
    assert child.data.tags["gitune.stopped_early"] == "time_budget"
    epochs = int(child.data.tags["gitune.stopped_at_epoch"])
    assert 1 <= epochs < 1000
