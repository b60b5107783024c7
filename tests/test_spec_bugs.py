"""The spec bugs of issue 13 ("Bugs that come from this shape"), each provoked through the command line.

Run in-process through `gitune.sweep.main` (the code path of `python -m gitune.sweep`), in an empty working
directory, as tests/test_cli_errors.py does. Each test failed before its fix.
"""

import textwrap
from pathlib import Path

import pytest
import yaml

from gitune import sweep

GOOD = """
name: spec-bugs
num_samples: 2
scheduler: {type: asha, max_t: 3, grace_period: 1, reduction_factor: 2}
config:
  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}
  model: {arch: small_cnn}
  train: {epochs: 3}
  optim: {warmup_epochs: 1, milestones: [2]}
space:
  optim.lr: {loguniform: [0.01, 0.1]}
"""
GLYPHS = "  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}\n"


def _run(tmp_path: Path, monkeypatch, capsys, text: str, *args: str) -> tuple[int, str, str]:
    """sweep.main on a space file holding `text`; returns (exit status, stdout, stderr). Nothing may be
    written in the working directory."""
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(text))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    rc = sweep.main(["--space", str(space), *args])
    out, err = capsys.readouterr()
    assert list(work.iterdir()) == []
    return rc, out, err.strip()


def _one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("gitune: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def _resolved(out: str) -> dict:
    """The resolved spec --dry-run prints (YAML, then a `# valid: …` comment)."""
    return yaml.safe_load(out)


# --------------------------------------------------------------------------- 1. --set adds or changes a tuned key


def test_set_adds_a_tuned_key(tmp_path, monkeypatch, capsys):
    rc, out, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--dry-run", "--set", "space.train.seed={grid: [0, 1, 2]}")
    assert rc == 0, err
    spec = _resolved(out)
    assert spec["space"] == {"optim.lr": {"loguniform": [0.01, 0.1]}, "train.seed": {"grid": [0, 1, 2]}}
    assert spec["config"]["train"]["seed"] == 0  # the fixed value stays, as the default the space shadows


def test_set_replaces_and_removes_a_tuned_key(tmp_path, monkeypatch, capsys):
    rc, out, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--dry-run", "--set", "space.optim.lr={choice: [0.05]}",
                        "--set", "space.train.loss={choice: [ce, focal]}", "--set", "space.train.loss=null")
    assert rc == 0, err
    assert _resolved(out)["space"] == {"optim.lr": {"choice": [0.05]}}


@pytest.mark.parametrize("value, needles", [
    ("{grid: [0, -1]}", ["--set space.train.seed.grid", "-1"]),
    ("{normal: [0, 1]}", ["--set space.train.seed", "normal"]),
    ("5", ["--set space.train.seed", "one distribution"]),
])
def test_set_tuned_key_is_validated_like_a_space_entry(value, needles, tmp_path, monkeypatch, capsys):
    rc, _, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--dry-run", "--set", f"space.train.seed={value}")
    _one_line_error(rc, err, *needles)


def test_set_unknown_tuned_key(tmp_path, monkeypatch, capsys):
    rc, _, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--dry-run", "--set", "space.train.sed={grid: [0, 1]}")
    _one_line_error(rc, err, "--set space.train.sed", "unknown key", "train.seed")


# --------------------------------------------------------------------------- 2. shadowed fixed values are checked


def test_shadowed_fixed_value_is_validated(tmp_path, monkeypatch, capsys):
    text = GOOD.replace("train: {epochs: 3}", "train: {epochs: 3, loss: hinge-of-doom}") + \
        "  train.loss: {choice: [ce, focal]}\n"
    rc, _, err = _run(tmp_path, monkeypatch, capsys, text, "--dry-run")
    _one_line_error(rc, err, "space.yaml", "config.train.loss", "hinge-of-doom")


# --------------------------------------------------------------------------- 3. preflight_git reads sampled values

# Glyphs with 120, 84 and 60 training images per class (smallest 60), and a generator stage to pretrain.
GIT = GOOD.replace(GLYPHS, "  data: {name: glyphs, n_max: 120, ratio: 2.0, num_classes: 3, image_size: 16, "
                           "val_per_class: 5, test_per_class: 5}\n") + \
    "generator:\n  config: {iterations: 2}\n"


def _until_resume(tmp_path, monkeypatch, capsys, text):
    """Run past preflight_git without starting anything: --resume with no earlier run is refused right after."""
    return _run(tmp_path, monkeypatch, capsys, text, "--resume", "--storage", str(tmp_path / "rr"))


def test_class_threshold_step_is_not_a_threshold(tmp_path, monkeypatch, capsys):
    # quniform [100, 1000, 50] samples 100, 150, …, 1000: all above the smallest class (60). The step 50 is not
    # a threshold ("50 is not above the smallest class size" before the fix).
    text = GIT + "space:\n  git.class_threshold: {quniform: [100, 1000, 50]}\n"
    rc, _, err = _until_resume(tmp_path, monkeypatch, capsys, text)
    _one_line_error(rc, err, "--resume", "no interrupted run")
    assert "git.class_threshold" not in err


def test_class_threshold_low_bound_is_still_checked(tmp_path, monkeypatch, capsys):
    text = GIT + "space:\n  git.class_threshold: {quniform: [50, 1000, 50]}\n"
    rc, _, err = _until_resume(tmp_path, monkeypatch, capsys, text)
    _one_line_error(rc, err, "git.class_threshold", "50", "smallest class size (60)")


def test_generator_size_check_uses_sampled_values(tmp_path, monkeypatch, capsys):
    # An integer key sampled with quniform: Ray samples the ints 4 and 8 (qrandint), not the raw 4.0 / 8.0.
    text = GIT.replace("config: {iterations: 2}", "config: {iterations: 2}\n  space:\n"
                                                  "    dim: {quniform: [4.0, 8.0, 4.0]}")
    rc, _, err = _until_resume(tmp_path, monkeypatch, capsys, text)
    _one_line_error(rc, err, "--resume", "no interrupted run")


def test_values_or_bounds_of_q_distributions():
    from gitune.spaces import _values_or_bounds

    assert _values_or_bounds({"quniform": [100, 1000, 50]}, "git.class_threshold") == [100, 1000]
    assert _values_or_bounds({"quniform": [10, 100, 50]}, "git.class_threshold") == [50, 100]  # multiples of q
    assert _values_or_bounds({"quniform": [1, 3, 1]}, "train.seed") == [1, 3]  # high is sampled (bug 9c)
    assert _values_or_bounds({"quniform": [0.1, 0.3, 0.1]}, "optim.lr") == [0.1, 0.3]
    assert _values_or_bounds({"randint": [0, 5]}) == [0, 4]
    assert _values_or_bounds({"choice": [2, 7]}) == [2, 7]


# --------------------------------------------------------------------------- 4. --dry-run checks data paths


def _data(name: str, path) -> str:
    return GOOD.replace(GLYPHS, f"  data: {{name: {name}, path: '{path}'}}\n")


@pytest.mark.parametrize("case", ["npz missing", "npz is a folder", "imagefolder missing", "imagefolder is a file",
                                  "choice of paths", "relative path"])
def test_dry_run_checks_data_paths(case, tmp_path, monkeypatch, capsys):
    present = tmp_path / "present.npz"
    present.write_text("not read by --dry-run")
    folder = tmp_path / "images"
    folder.mkdir()
    absent = tmp_path / "absent"
    text, needles = {
        "npz missing": (_data("npz", f"{absent}.npz"), ["config.data.path", "absent.npz", "file not found"]),
        "npz is a folder": (_data("npz", folder), ["config.data.path", "images", "not a file"]),
        "imagefolder missing": (_data("imagefolder", absent), ["config.data.path", "absent", "folder not found"]),
        "imagefolder is a file": (_data("imagefolder", present), ["config.data.path", "present.npz", "not a folder"]),
        "choice of paths": (_data("npz", present) + f"  data.path: {{choice: ['{present}', '{absent}.npz']}}\n",
                            ["space.data.path", "absent.npz", "file not found"]),
        "relative path": (_data("npz", "present.npz"), ["work/present.npz", "file not found"]),  # from the cwd
    }[case]
    rc, _, err = _run(tmp_path, monkeypatch, capsys, text, "--dry-run")
    _one_line_error(rc, err, "space.yaml", *needles)


def test_dry_run_does_not_open_data(tmp_path, monkeypatch, capsys):
    present = tmp_path / "present.npz"
    present.write_text("not an npz archive: --dry-run only checks that the path exists")
    folder = tmp_path / "images"
    folder.mkdir()
    text = _data("npz", present) + f"  data.path: {{choice: ['{present}']}}\n"
    rc, out, err = _run(tmp_path, monkeypatch, capsys, text, "--dry-run")
    assert rc == 0, err
    assert "data paths exist" in out
    rc, _, err = _run(tmp_path, monkeypatch, capsys, _data("imagefolder", folder), "--dry-run")
    assert rc == 0, err


# --------------------------------------------------------------------------- 5. the sweep name is one folder name

BAD_NAMES = ["..", ".", "", "  ", "../escape", "/abs", "a/b", "a\\b", "-rf", "a\0b", "line\nbreak", "x" * 201]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_unsafe_name_in_space_file_is_refused(name, tmp_path, monkeypatch, capsys):
    text = GOOD.replace("name: spec-bugs", "name: " + yaml.safe_dump(name, default_style='"').strip())
    rc, _, err = _run(tmp_path, monkeypatch, capsys, text, "--dry-run")
    _one_line_error(rc, err, "space.yaml: name", "one plain folder name")


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if "\0" not in n], ids=repr)  # argv cannot hold NUL
def test_unsafe_name_flag_is_refused(name, tmp_path, monkeypatch, capsys):
    rc, _, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--dry-run", f"--name={name}")
    _one_line_error(rc, err, "--name", "one plain folder name")


def test_unsafe_name_does_not_reach_storage(tmp_path, monkeypatch, capsys):
    """Without --dry-run: refused before --storage is looked at (--resume would look for the sweep's runs in
    --storage/.., i.e. outside --storage; before the fix, that was the error)."""
    storage = tmp_path / "store" / "inner"
    storage.mkdir(parents=True)
    rc, _, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--name", "..", "--storage", str(storage), "--resume")
    _one_line_error(rc, err, "--name")
    assert list(storage.iterdir()) == [] and sorted(p.name for p in (tmp_path / "store").iterdir()) == ["inner"]


@pytest.mark.parametrize("name", ["my-sweep_1.2", "cifar10 lt", "sweep.v2", "ünïcode"])
def test_plain_names_are_accepted(name, tmp_path, monkeypatch, capsys):
    rc, out, err = _run(tmp_path, monkeypatch, capsys, GOOD, "--dry-run", "--name", name)
    assert rc == 0, err
    assert _resolved(out)["name"] == name


def test_resume_command_keeps_a_tuned_set_value_whole():
    """The `continue with:` line printed on Ctrl-C must give the shell back the same --set values."""
    import shlex

    args = sweep.parse_args(["--space", "my space.yaml", "--set", "space.train.seed={grid: [0, 1]}",
                             "--storage", "/tmp/a b"])
    words = shlex.split(sweep._resume_command(args))
    assert words[words.index("--set") + 1] == "space.train.seed={grid: [0, 1]}"
    assert words[words.index("--space") + 1] == "my space.yaml"
    assert words[words.index("--storage") + 1] == "/tmp/a b"


# --------------------------------------------------------------------------- 6. issue 13, one typed configuration layer


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9999, 0.99999999, 1.0, 1.5])
def test_beta_check_agrees_with_the_rule(beta):
    """a. Every β the config check accepts, the rule computes weights for (β = 1 passed the check, then divided
    by zero in the trial); β = 1 is refused by both: β = (N−1)/N for a finite N (Cui et al. 2019)."""
    from gitune.config import schema
    from gitune.errors import UserError
    from gitune.training.rules import effective_number_weights

    accepted = schema()["train.beta"].test(beta)
    try:
        effective_number_weights([100, 10, 1], beta)
        computed = True
    except UserError:
        computed = False
    assert accepted == computed == (beta < 1.0)


def test_beta_one_is_refused_before_the_trial(tmp_path, monkeypatch, capsys):
    rc, _, err = _run(tmp_path, monkeypatch, capsys, GOOD.replace("train: {epochs: 3}",
                                                                  "train: {epochs: 3, rule: reweight, beta: 1.0}"),
                      "--dry-run")
    _one_line_error(rc, err, "space.yaml", "config.train.beta", "< 1")


def test_tuned_data_path_satisfies_the_path_rule(tmp_path, monkeypatch, capsys):
    """b. data.name npz fixed with only data.path tuned: the tuned values give the path (the fixed
    data.path was demanded before)."""
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for p in (a, b):
        p.write_text("not read by --dry-run")
    text = GOOD.replace(GLYPHS, "  data: {name: npz}\n") + f"  data.path: {{choice: ['{a}', '{b}']}}\n"
    rc, out, err = _run(tmp_path, monkeypatch, capsys, text, "--dry-run")
    assert rc == 0, err
    assert _resolved(out)["space"]["data.path"] == {"choice": [str(a), str(b)]}
    rc, _, err = _run(tmp_path, monkeypatch, capsys, text.replace(f"'{b}'", "null"), "--dry-run")
    _one_line_error(rc, err, "space.data.path=None", "data.path: required when data.name is npz")  # no path


@pytest.mark.parametrize("key, dist, values", [
    ("train.seed", [0, 2, 1], {0, 1, 2}),
    ("git.class_threshold", [100, 200, 50], {100, 150, 200}),
    ("train.seed", [0, 4.5, 2], {0, 2, 4}),
])
def test_integer_quniform_samples_both_bounds(key, dist, values, tmp_path):
    """c. An integer quniform [a, b, q] samples every multiple of q in [a, b], b included (q = 1 went through
    Ray's qrandint, which excludes b for q = 1 only)."""
    from gitune import spaces
    from gitune.config import get_dotted

    raw = yaml.safe_load(GOOD)
    raw["space"][key] = {"quniform": dist}
    spec = spaces.build_spec(raw, "space.yaml")
    domain = get_dotted(spaces.param_space(spec), key)
    assert set(domain.sample(size=400, random_state=0)) == values
    assert spaces._values_or_bounds(spec.space[key], key) == [min(values), max(values)]


@pytest.mark.parametrize("change, needle", [({"git": {"prob": 0.5}}, "git.prob"),
                                            ({"aug": {"oracle_prob": 0.5}}, "aug.oracle_prob")])
def test_spec_and_trial_refuse_with_one_rule(change, needle, tmp_path):
    """2. GIT without a generator and the oracle without a nuisance: the spec parser and the trial call one
    function, so they refuse the same config with the same words."""
    import torch

    from gitune import spaces
    from gitune.config import merge_config
    from gitune.errors import UserError
    from gitune.trainables.classifier import build_trial

    raw = yaml.safe_load(GOOD)
    for group, values in change.items():
        raw["config"].setdefault(group, {}).update(values)
    with pytest.raises(UserError) as spec_error:
        spaces.build_spec(raw, "space.yaml")
    with pytest.raises(UserError) as trial_error:
        build_trial(merge_config(raw["config"], "config"), torch.device("cpu"), None)
    assert str(spec_error.value) == f"space.yaml: {trial_error.value}"
    assert str(trial_error.value).startswith(needle)
