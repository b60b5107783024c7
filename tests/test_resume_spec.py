"""--resume after the spec changed: the run folder keeps the resolved spec it started with; a changed value is one
line naming the key (exit 2) unless --force accepts it, --resume picks the run of the same spec, and a restored
generator stage is never cached under a key it was not trained for."""

import json
import textwrap

import pytest
from mlflow.tracking import MlflowClient

from gitune import pretrain, run_folder, spaces, sweep
from gitune.errors import UserError

SPEC = """
name: rs
num_samples: 1
description: first
scheduler: {type: fifo}
resources: {cpu: 1}
config:
  data: {name: glyphs, num_classes: 3, image_size: 16, profile: exp, n_max: 30, ratio: 3, val_per_class: 5,
         test_per_class: 4}
  model: {arch: small_cnn}
  optim: {lr: 0.05, warmup_epochs: 0, milestones: [1], gamma: 0.1}
  train: {epochs: 1, batch_size: 16, threads: 1}
  eval: {inv_interval: 0, extra_invariance: false, batch_size: 64}
space:
  train.seed: {grid: [0]}
"""
GENERATOR = """
generator:
  config: {dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 2, batch_size: 4,
           report_every: 2, grid_every: 0, threads: 1, fid_images: 6, fid_draws: 2}
"""


def space_file(tmp_path, extra=""):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(SPEC) + textwrap.dedent(extra))
    return path


def resolved(path, *overrides, num_samples=None):
    return spaces.describe(spaces.load_spec(path, list(overrides), num_samples))


def started_run(tmp_path, spec_yaml, tune_state=True):
    """A run folder as `sweep` leaves it: spec.yaml, and (with `tune_state`) what Tuner.can_restore looks for."""
    run_dir = run_folder.new_run_dir(str(tmp_path / "rr"), "rs")
    run_folder.write_spec(run_dir, spec_yaml)
    if tune_state:
        (tmp_path / "rr" / "rs" / run_dir.rsplit("/", 1)[1] / "tuner.pkl").write_bytes(b"")
    return run_dir


# ---------------------------------------------------------------------------------------- the comparison


def test_an_unchanged_spec_has_no_changes_and_the_file_path_is_not_compared(tmp_path):
    path = space_file(tmp_path)
    copy = tmp_path / "elsewhere.yaml"
    copy.write_text(path.read_text())
    assert run_folder.spec_changes(resolved(path), resolved(path)) == []
    assert run_folder.spec_changes(resolved(path), resolved(copy)) == []  # `source` differs only


def test_changes_are_named_by_dotted_key_with_both_values(tmp_path):
    path = space_file(tmp_path)
    changes = run_folder.spec_changes(
        resolved(path), resolved(path, "optim.lr=0.1", "space.train.seed={grid: [0, 1]}",
                                  "space.train.loss={choice: [ce, focal]}"))
    by_key = {k: (old, new) for k, old, new in changes}
    assert by_key["config.optim.lr"] == (0.05, 0.1)
    assert by_key["space.train.seed"] == ({"grid": [0]}, {"grid": [0, 1]})  # a distribution is one value
    assert by_key["space.train.loss"][1] == {"choice": ["ce", "focal"]}
    assert repr(by_key["space.train.loss"][0]) == "(absent)"
    assert len(changes) == 3


def test_a_changed_value_is_refused_in_one_line_naming_key_old_and_new(tmp_path):
    path = space_file(tmp_path)
    run_dir = started_run(tmp_path, resolved(path))
    with pytest.raises(UserError) as e:
        run_folder.check_resume(run_dir, resolved(path, "optim.lr=0.1"), None)
    msg = str(e.value)
    assert "\n" not in msg and run_dir in msg
    assert "config.optim.lr: 0.05 → 0.1" in msg and "--force config.optim.lr" in msg


def test_long_values_are_cut_and_many_changes_counted(tmp_path):
    path = space_file(tmp_path)
    run_dir = started_run(tmp_path, resolved(path))
    long = "x" * 200
    with pytest.raises(UserError) as e:
        run_folder.check_resume(run_dir, resolved(path, f"description={long}"), None)
    msg = str(e.value)
    assert long not in msg and 'description: "first" → "xxxxx' in msg and "…" in msg
    new = resolved(path, "optim.lr=0.1", "optim.momentum=0.5", "train.batch_size=8", "optim.gamma=0.2",
                   "train.beta=0.99", "optim.weight_decay=0.001", "train.focal_gamma=2")
    with pytest.raises(UserError) as e:
        run_folder.check_resume(run_dir, new, None)
    msg = str(e.value)
    assert "and 1 more;" in msg and "\n" not in msg
    assert "--force config.optim.lr," in msg and msg.count("config.train.focal_gamma") == 1  # counted, still forceable


def test_force_accepts_the_harmless_keys_alone_and_named_keys_with_their_children(tmp_path, capsys):
    path = space_file(tmp_path)
    run_dir = started_run(tmp_path, resolved(path))
    harmless = resolved(path, "description=second", "resources.cpu=2", num_samples=3)
    with pytest.raises(UserError, match=r"num_samples: 1 → 3.*--force \("):
        run_folder.check_resume(run_dir, harmless, None)  # without --force nothing passes
    run_folder.check_resume(run_dir, harmless, "")  # bare --force
    out = capsys.readouterr().out
    assert "accepted changes: " in out and "num_samples: 1 → 3" in out and 'description: "first" → "second"' in out

    changed = resolved(path, "optim.lr=0.1", "optim.gamma=0.2", num_samples=3)
    with pytest.raises(UserError, match="config.optim.lr: 0.05 → 0.1") as e:
        run_folder.check_resume(run_dir, changed, "")  # the harmless list does not cover optim
    assert "num_samples" not in str(e.value).split("; resume")[0]  # a bare --force accepted it
    with pytest.raises(UserError, match="config.optim.gamma"):
        run_folder.check_resume(run_dir, changed, "config.optim.lr")
    run_folder.check_resume(run_dir, changed, "config.optim")  # a key covers the keys under it
    run_folder.check_resume(run_dir, changed, "config.optim.lr, config.optim.gamma")
    run_folder.check_resume(run_dir, changed, "optim.lr,optim.gamma")  # config keys as --set writes them
    assert "config.optim.lr: 0.05 → 0.1" in capsys.readouterr().out


def test_a_run_folder_without_a_stored_spec_is_resumed_with_a_note(tmp_path, capsys):
    run_dir = tmp_path / "rr" / "rs" / "20261204-000000"
    run_dir.mkdir(parents=True)
    run_folder.check_resume(str(run_dir), resolved(space_file(tmp_path)), None)
    assert "holds no spec.yaml" in capsys.readouterr().out


def test_the_stored_spec_is_masked(tmp_path):
    path = space_file(tmp_path)
    text = resolved(path, "data.name=npz", "data.path=s3://KEY:SECRET@bucket/x.npz")
    run_dir = started_run(tmp_path, text, tune_state=False)
    stored = (tmp_path / "rr" / "rs" / run_dir.rsplit("/", 1)[1] / "spec.yaml").read_text()
    assert "SECRET" not in stored and "s3://***@bucket/x.npz" in stored
    assert run_folder.spec_changes(stored, text) == []  # compared masked on both sides


# ---------------------------------------------------------------------------------- the CLI, before Ray


def test_force_without_resume_is_refused(tmp_path, capsys):
    assert sweep.main(["--space", str(space_file(tmp_path)), "--force", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force: only with --resume" in err


def test_resume_with_a_changed_value_exits_2_before_ray_starts(tmp_path, capsys):
    path = space_file(tmp_path)
    started_run(tmp_path, resolved(path))
    common = ["--space", str(path), "--storage", str(tmp_path / "rr"), "--tracking-uri",
              f"sqlite:///{tmp_path}/mlflow.db", "--resume"]
    assert sweep.main(common + ["--set", "optim.lr=0.2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.optim.lr: 0.05 → 0.2" in err and err.startswith("gitune: error: --resume")
    assert not (tmp_path / "mlflow.db").exists()  # nothing started


def test_resume_picks_the_newest_run_of_the_same_spec(tmp_path):
    path = space_file(tmp_path)
    a, b = resolved(path), resolved(path, "optim.lr=0.1")
    run_a = started_run(tmp_path, a)
    run_b = started_run(tmp_path, b)  # newer (or same second: compared by name below)
    newest = max(run_a, run_b)
    root = str(tmp_path / "rr")
    assert sweep.latest_run_dir(root, "rs", a) == run_a
    assert sweep.latest_run_dir(root, "rs", b) == run_b
    assert sweep.latest_run_dir(root, "rs", resolved(path, "optim.lr=0.3")) == newest  # then item 7's error
    assert sweep.latest_run_dir(root, "rs") == newest


# ------------------------------------------------------------------------------ generator cache key


def test_a_restored_generator_stage_trained_with_another_spec_is_not_cached(tmp_path):
    path = space_file(tmp_path, GENERATOR)
    old = resolved(path)
    run_dir = started_run(tmp_path, old, tune_state=False)
    stage = tmp_path / "rr" / "rs" / run_dir.rsplit("/", 1)[1] / pretrain.GENERATOR_STAGE
    same = spaces.load_spec(path)
    other = spaces.load_spec(path, ["generator.config.lr=0.001"])
    assert pretrain.restored_for_other_key(other, run_dir, resume=True) is None  # nothing to restore yet
    stage.mkdir()
    (stage / "tuner.pkl").write_bytes(b"")
    assert pretrain.restored_for_other_key(same, run_dir, resume=True) is None
    assert pretrain.restored_for_other_key(other, run_dir, resume=False) is None  # a new stage: trained now
    assert "another data or generator spec" in pretrain.restored_for_other_key(other, run_dir, resume=True)
    # only the generator's part counts: a classifier key that --force let change keeps the key
    assert pretrain.restored_for_other_key(spaces.load_spec(path, ["optim.lr=0.2"]), run_dir, resume=True) is None
    (stage.parent / "spec.yaml").unlink()
    assert "no recorded spec" in pretrain.restored_for_other_key(same, run_dir, resume=True)


# ------------------------------------------------------------------------------------ for real (Ray)


def _parents(uri, name):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`gitune.role` = 'sweep'")


@pytest.mark.timeout(400)
def test_a_finished_sweep_resumed_with_a_changed_value_is_refused_then_forced(tmp_path, ray_session, capsys):
    path = space_file(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--space", str(path), "--storage", str(tmp_path / "rr"), "--tracking-uri", uri]
    assert sweep.main(common) == 0, capsys.readouterr()
    (run_dir,) = (tmp_path / "rr" / "rs").iterdir()
    assert (run_dir / "spec.yaml").is_file()
    capsys.readouterr()

    assert sweep.main(common + ["--resume", "--set", "optim.lr=0.2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.optim.lr: 0.05 → 0.2" in err and str(run_dir) in err
    assert len(_parents(uri, "rs")) == 1  # refused before anything was tracked

    assert sweep.main(common + ["--resume", "--set", "optim.lr=0.2", "--force", "config.optim.lr"]) == 0
    out = capsys.readouterr().out
    assert "accepted changes: config.optim.lr: 0.05 → 0.2" in out
    (parent,) = _parents(uri, "rs")  # the same run folder and parent run, continued
    assert parent.data.tags.get("gitune.resumed") == "true" and parent.info.status == "FINISHED"
    assert [p.name for p in (tmp_path / "rr" / "rs").iterdir()] == [run_dir.name]


@pytest.mark.timeout(500)
def test_a_forced_generator_change_does_not_poison_the_cache(tmp_path, ray_session, capsys):
    """The generator stage of the first run is restored by a --force'd resume whose spec hashes to another key:
    that key stays empty (a later sweep of the new spec trains its own generator)."""
    path = space_file(tmp_path, GENERATOR)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--space", str(path), "--storage", str(tmp_path / "rr"), "--tracking-uri", uri]
    assert sweep.main(common) == 0, capsys.readouterr()
    cache = tmp_path / "rr" / pretrain.CACHE_DIR
    (first_key,) = [p.name for p in cache.iterdir()]
    info = json.loads((cache / first_key / "info.json").read_text())
    assert info["key"] == first_key
    capsys.readouterr()

    changed = ["--set", "generator.config.lr=0.001"]
    new_spec = spaces.load_spec(path, changed[1:])
    sweep.absolutize_paths(new_spec.config)
    new_key = pretrain.generator_key(new_spec.config["data"], new_spec.generator)
    assert new_key != first_key
    assert sweep.main(common + ["--resume", *changed]) == 2
    assert "generator.config.lr" in capsys.readouterr().err
    assert sweep.main(common + ["--resume", *changed, "--force", "generator.config"]) == 0
    out = capsys.readouterr().out
    assert f"not stored in the cache under key {new_key}" in out
    assert sorted(p.name for p in cache.iterdir()) == [first_key]


def test_printed_resume_command_keeps_force():
    """A run resumed with --force needs it again at the next resume (spec.yaml is never rewritten): the
    `continue with:` line carries it, with its keys."""
    import shlex

    from gitune import sweep

    for force, expected in (([], None), (["--force"], ""), (["--force", "config.optim.lr,num_samples"],
                                                            "config.optim.lr,num_samples")):
        args = sweep.parse_args(["--space", "s.yaml", "--resume", *force])
        words = shlex.split(sweep._resume_command(args))
        assert words[0:3] == ["python", "-m", "gitune.sweep"] and "--resume" in words
        if expected is None:
            assert "--force" not in words
        else:
            assert "--force" in words
            following = words[words.index("--force") + 1:]
            assert (following[0] if following else "") == expected


def test_a_key_added_later_with_a_null_default_is_no_change():
    """A run folder whose spec.yaml predates a key (e.g. search.points_to_evaluate, time_budget_s: null by
    default) resumes without --force; a non-null value for it is still a change."""
    from gitune.run_folder import spec_changes

    old = "name: x\nsearch: {type: random}\n"
    assert spec_changes(old, "name: x\nsearch: {type: random, points_to_evaluate: null}\ntime_budget_s: null\n") == []
    (change,) = spec_changes(old, "name: x\nsearch: {type: random}\ntime_budget_s: 60\n")
    assert change[0] == "time_budget_s" and change[2] == 60
