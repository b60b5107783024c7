"""gitune/stage.py: one best-trial choice and one Tune start/restore for both stages; and the sweep's
preflight builds the driver's dataset once per data config."""

import math
import textwrap
from types import SimpleNamespace

import pytest

from gitune import sweep
from gitune.errors import UserError
from gitune.spaces import SweepSpec, load_spec
from gitune.stage import best_result, run_stage


def _result(value, error=None, checkpoint="ckpt", metric="score"):
    metrics = {} if value is None else {metric: value, "trial_id": f"t{value}"}
    return SimpleNamespace(error=error, metrics=metrics, checkpoint=checkpoint)


def test_best_result_max_and_min():
    results = [_result(0.2), _result(0.9), _result(0.5)]
    assert best_result(results, "score", "max").metrics["score"] == 0.9
    assert best_result(results, "score", "min").metrics["score"] == 0.2


def test_best_result_never_picks_errored_or_non_finite():
    results = [_result(math.nan), _result(0.3), _result(5.0, error=RuntimeError("boom")), _result(math.inf),
               _result(None), _result(True), _result("0.9"), _result(0.4)]
    assert best_result(results, "score", "max").metrics["score"] == 0.4
    assert best_result(list(reversed(results)), "score", "max").metrics["score"] == 0.4
    assert best_result(results, "score", "min").metrics["score"] == 0.3


def test_best_result_needs_checkpoint_when_asked():
    results = [_result(0.9, checkpoint=None), _result(0.1)]
    assert best_result(results, "score", "max").metrics["score"] == 0.9
    assert best_result(results, "score", "max", need_checkpoint=True).metrics["score"] == 0.1


def test_best_result_none_when_nothing_qualifies():
    assert best_result([], "score", "max") is None
    assert best_result([_result(math.nan), _result(1.0, error=ValueError()), _result(None)], "score", "min") is None
    assert best_result([SimpleNamespace(error=None, metrics=None, checkpoint=None)], "score", "max") is None


# ------------------------------------------------------------------------------------------------ run_stage


def _spec(config):
    return SweepSpec(name="stage", trainable="toy", metric="score", mode="max", num_samples=1,
                     scheduler={"type": "fifo"}, search={"type": "random", "seed": 0, "max_concurrent": 0},
                     resources={"cpu": 1, "gpu": 0}, checkpoint={"num_to_keep": 1}, failure={"max_failures": 0},
                     config=config)


def _trainable():
    """Counts to 4, one checkpoint a step; the first time it runs it dies after step 2 (a crash mid-trial).
    Nested, so that Ray ships it by value to workers that cannot import this test module."""

    def count(config, marker):
        import os
        import tempfile

        from ray import tune

        start = 0
        if tune.get_checkpoint() is not None:
            with tune.get_checkpoint().as_directory() as d:
                start = int(open(os.path.join(d, "step")).read())
        for step in range(start + 1, 5):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "step"), "w") as f:
                    f.write(str(step))
                tune.report({"score": float(step), "started_at": start, "done": step == 4},
                            checkpoint=tune.Checkpoint.from_directory(d))
            if step == 2 and not os.path.exists(marker):
                open(marker, "w").close()
                raise RuntimeError("crashed mid-trial")

    return count


@pytest.mark.timeout(300)
def test_run_stage_restores_an_interrupted_experiment(ray_session, tmp_path):
    from ray import tune

    trainable = tune.with_parameters(_trainable(), marker=str(tmp_path / "crashed"))
    stage_dir = f"{tmp_path}/rr/stage"
    first = run_stage(_spec({"x": 1}), trainable, stage_dir, None, False, {"score": "score"})
    assert first[0].error is not None and first[0].metrics["score"] == 2.0
    assert best_result(first, "score", "max") is None

    with pytest.raises(UserError, match="--resume: .*stage: the resolved config keys differ"):
        run_stage(_spec({"x": 1, "y": 2}), trainable, stage_dir, None, True, {"score": "score"})

    resumed = run_stage(_spec({"x": 1}), trainable, stage_dir, None, True, {"score": "score"})
    (r,) = resumed
    assert r.error is None and r.metrics["score"] == 4.0
    assert r.metrics["started_at"] == 2, "the trial restarted instead of continuing from its checkpoint"
    assert r.metrics["trial_id"] == first[0].metrics["trial_id"]
    assert best_result(resumed, "score", "max", need_checkpoint=True) is r


@pytest.mark.timeout(300)
def test_run_stage_resume_without_saved_state_starts_new(ray_session, tmp_path):
    from ray import tune

    (tmp_path / "crashed").touch()  # no crash this time
    trainable = tune.with_parameters(_trainable(), marker=str(tmp_path / "crashed"))
    (r,) = run_stage(_spec({"x": 1}), trainable, f"{tmp_path}/rr/stage", None, True, {"score": "score"})
    assert r.error is None and r.metrics["score"] == 4.0 and r.metrics["started_at"] == 0
    assert sweep.latest_run_dir(str(tmp_path), "rr") == f"{tmp_path}/rr/stage"


# -------------------------------------------------------------------------------- dataset built once


GIT_SPEC = """
name: once
num_samples: 1
scheduler: {type: fifo}
config:
  data: {name: glyphs, n_max: 60, ratio: 2.0, num_classes: 3, image_size: 16, val_per_class: 5,
         test_per_class: 5, nuisance: {rotation: 90}, nuisance_rank: 2}
  model: {arch: small_cnn}
  train: {epochs: 1}
  optim: {warmup_epochs: 0, milestones: [1]}
space:
  git.prob: {grid: [0.0, 0.5]}
generator:
  config: {iterations: 2}
"""


def test_preflight_builds_the_dataset_once(tmp_path, monkeypatch):
    import gitune.data.dataset as dataset

    calls = []
    real = dataset.build_dataset

    def counting(cfg):
        calls.append(cfg)
        return real(cfg)

    monkeypatch.setattr(dataset, "build_dataset", counting)
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(GIT_SPEC))
    spec = load_spec(space)
    sweep.absolutize_paths(spec.config)
    uri, image_shape, given = sweep.preflight(spec, f"sqlite:///{tmp_path}/mlflow.db")
    assert image_shape == (1, 16, 16) and given is None
    assert len(calls) == 1, "the driver built the same dataset more than once"


def test_run_stage_puts_the_sigint_handler_back(tmp_path, ray_session):
    """Tune leaves its SIGINT handler installed after a normal fit; a stage must not, or a Ctrl-C between the
    generator and classifier stages would be swallowed."""
    import signal

    from ray import tune

    from gitune.stage import _fit

    def trainable(config):
        tune.report({"x": 1.0})

    mine = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        tuner = tune.Tuner(trainable, run_config=tune.RunConfig(name="sig", storage_path=str(tmp_path), verbose=0))
        assert not _fit(tuner).errors
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, mine)
