"""--resume reopens the parent run of the same run folder, whatever characters the sweep name holds."""

from pathlib import Path

from mlflow.tracking import MlflowClient

from gitune import tracking


def test_resume_reopens_the_parent_of_a_name_with_quotes(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    space = tmp_path / "space.yaml"
    space.write_text("name: x\n")
    for name in ("it's", 'say "GIT"', "a ` b"):
        first = f"{tmp_path}/rr/{name}/20261204-000000"
        second = f"{tmp_path}/rr/{name}/20261204-000001"
        a = tracking.start_sweep(name, uri, first, "name: x\n", space, {}, resume=False)
        tracking.end_sweep(a, "KILLED")
        b = tracking.start_sweep(name, uri, second, "name: x\n", space, {}, resume=False)
        tracking.end_sweep(b, "KILLED")
        again = tracking.start_sweep(name, uri, first, "name: x\n", space, {}, resume=True)
        assert again.parent_run_id == a.parent_run_id, name  # the run of that folder, not the newest one
        run = MlflowClient(uri).get_run(again.parent_run_id)
        assert run.info.status == "RUNNING" and run.data.tags["gitune.resumed"] == "true"
        assert Path(run.data.tags[tracking.SWEEP_PATH]) == Path(first)
