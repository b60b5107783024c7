"""Credentials in URIs are masked in what gitune prints, tags in MLflow and writes into reports."""

import pytest
from mlflow.tracking import MlflowClient

from gitune import tracking, trial_run
from gitune.errors import UserError, run_cli
from gitune.redact import redact, redact_any


@pytest.mark.parametrize("text, shown", [
    ("s3://AKIAKEY:se/cr+et@bucket/gitune", "s3://***@bucket/gitune"),
    ("--tracking-uri http://alice:pa55@mlflow:5000: not reachable", "--tracking-uri http://***@mlflow:5000: not reachable"),
    ("http://alice@mlflow:5000", "http://***@mlflow:5000"),
    ("https://h/o.npz?X-Amz-Signature=abcd&X-Amz-Credential=AK/2026&x=1",
     "https://h/o.npz?X-Amz-Signature=***&X-Amz-Credential=***&x=1"),
    ("gs://b/p?access_token=zz#frag", "gs://b/p?access_token=***#frag"),
])
def test_credentials_are_masked(text, shown):
    assert redact(text) == shown
    assert redact(redact(text)) == shown  # stable: masking twice changes nothing


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/mlflow.db", "http://host:5000/a@b", "runs:/0123abcd/generator", "models:/gen/3",
    "file:///data/k49.npz", "alice@example.org", "data.name=npz", "s3://bucket/path/x.npz",
])
def test_plain_uris_and_text_are_unchanged(text):
    assert redact(text) == text


def test_redact_any_walks_nested_values():
    value = {"data": {"path": "s3://K:S@b/x.npz", "n": 3}, "uris": ["http://u:p@h", 1.5]}
    assert redact_any(value) == {"data": {"path": "s3://***@b/x.npz", "n": 3}, "uris": ["http://***@h", 1.5]}


def test_cli_error_line_is_masked(capsys):
    def run(args):
        raise UserError("--tracking-uri http://alice:pa55@127.0.0.1:9: MLflow server not reachable")

    assert run_cli(run, None) == 2
    err = capsys.readouterr().err
    assert "pa55" not in err and "alice" not in err and "http://***@127.0.0.1:9" in err


def test_tags_params_and_spec_stored_masked(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    space = tmp_path / "space.yaml"
    space.write_text("config: {data: {path: 's3://KEY:SECRET@b/x.npz'}}\n")
    run_dir = "s3://KEY:SECRET@bucket/gitune/demo/20261204-000000"
    ctx = tracking.start_sweep("demo", uri, run_dir, space.read_text(), space,
                               {"data.path": "s3://KEY:SECRET@b/x.npz"}, resume=False)
    trial = trial_run.TrialRun.open(ctx, "t1", "trial-1", {"data.path": "http://u:SECRET@h/x.npz"},
                                   tags={"gitune.generator_source": "s3://KEY:SECRET@b/g.pt"})
    trial.set_tags({"gitune.error": "cannot read s3://KEY:SECRET@b/x.npz"})
    assert trial.flush()
    tracking.end_sweep(ctx, "KILLED", {"best.data.path": "s3://KEY:SECRET@b/x.npz"})
    client = MlflowClient(uri)
    stored = []
    for run_id in (ctx.parent_run_id, trial.run_id):
        run = client.get_run(run_id)
        stored += [*run.data.tags.values(), *run.data.params.values()]
    for path in ("spec/resolved.yaml", "spec/space.yaml"):
        with open(client.download_artifacts(ctx.parent_run_id, path, str(tmp_path))) as f:
            stored.append(f.read())
    assert stored and not any("SECRET" in s or "KEY:" in s for s in stored)
    assert any("s3://***@bucket/gitune/demo/20261204-000000" == s for s in stored)
    # --resume still finds the run of that folder from the real (unmasked) path
    again = tracking.start_sweep("demo", uri, run_dir, space.read_text(), space, {}, resume=True)
    assert again.parent_run_id == ctx.parent_run_id
