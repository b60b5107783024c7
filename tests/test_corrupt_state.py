"""Corrupt Tune state and corrupt checkpoints ("nothing lost"):

- a trial whose latest checkpoint's state.pt is truncated or garbled restores from the next older checkpoint
  Tune kept (`checkpoint.num_to_keep`), with a warning naming both; none readable: an error naming each;
- a real sweep, kill -9'd with its Ray, whose trials' latest checkpoints are then corrupted, resumes from the
  older ones (not from epoch 0), one MLflow run per trial, none left RUNNING;
- `--resume` on a run whose Tune experiment state is unreadable (tuner.pkl, experiment_state-*.json, the
  search algorithm's state) says so in one line, exit 2, before Ray or MLflow change anything.
"""

import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)
from test_faults import (EPOCHS, _alive, _check_one_run_per_trial_none_running, _command, _descendants, _runs,
                         _session, _wait_for)

from gitune.trainables.checkpoint import PROGRESS_FILE, STATE_FILE, newest_checkpoint, restore_state, save_state

SLOW = pytest.mark.slow  # the sweeps (in `make test`; `make test-fast` leaves them out), not the unit tests


# ---------------------------------------------------------------- unit level: restore_state's fallback

def _parts(value: float):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}


def _trial_folder(tmp_path) -> Path:
    """A trial folder with checkpoint_000001..3 written by save_state: checkpoint k holds epoch k and
    parameters filled with k."""
    trial = tmp_path / "train_classifier_abc_00000"
    for k in (1, 2, 3):
        folder = trial / f"checkpoint_{k:06d}"
        folder.mkdir(parents=True)
        save_state(str(folder), _parts(float(k)), {"train": torch.Generator().manual_seed(k)}, epoch=k)
    return trial


def _restore(folder: Path):
    from ray.tune import Checkpoint

    parts, gens = _parts(0.0), {"train": torch.Generator().manual_seed(99)}
    epoch = restore_state(Checkpoint.from_directory(str(folder)), parts, gens, "epoch",
                          lambda step: {"train": 1000 + step})
    return epoch, parts, gens


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _garble(file: Path) -> None:
    file.write_bytes(b"\x00garbage\xff" * 50)


def test_restores_from_a_newer_checkpoint_than_tune_recorded(tmp_path, caplog):
    """After a driver kill, Tune's experiment state can name checkpoint 1 while the trial folder holds epochs 2
    and 3, whose MLflow points were sent: the trial takes the newest, by the epoch stored, not the folder
    number (a restored trial writes its next checkpoints over the numbers after Tune's)."""
    from ray.tune import Checkpoint

    trial = _trial_folder(tmp_path)
    chosen = newest_checkpoint(Checkpoint.from_directory(str(trial / "checkpoint_000001")), "epoch")
    assert Path(chosen.path) == trial / "checkpoint_000003"
    assert "newer than the checkpoint Tune recorded" in caplog.text
    epoch, parts, _ = _restore(Path(chosen.path))
    assert epoch == 3 and float(parts["model"].weight[0, 0]) == 3.0
    # checkpoint_000002 overwritten by the restored trial's next epoch (4): the stored epoch decides
    save_state(str(trial / "checkpoint_000002"), _parts(4.0), {"train": torch.Generator().manual_seed(4)}, epoch=4)
    chosen = newest_checkpoint(Checkpoint.from_directory(str(trial / "checkpoint_000001")), "epoch")
    assert Path(chosen.path) == trial / "checkpoint_000002"
    # the recorded one is the newest: kept as it is (same object); a half-written folder is no candidate
    (trial / "checkpoint_000005").mkdir()
    recorded = Checkpoint.from_directory(str(trial / "checkpoint_000002"))
    assert newest_checkpoint(recorded, "epoch") is recorded
    assert newest_checkpoint(None, "epoch") is None


@pytest.mark.parametrize("corrupt", [_truncate, _garble, Path.unlink], ids=["truncated", "garbled", "missing"])
def test_corrupt_latest_checkpoint_falls_back_to_the_older_one(tmp_path, caplog, corrupt):
    trial = _trial_folder(tmp_path)
    corrupt(trial / "checkpoint_000003" / STATE_FILE)
    with caplog.at_level(logging.WARNING, logger="gitune.trainables.checkpoint"):
        epoch, parts, gens = _restore(trial / "checkpoint_000003")
    assert epoch == 2
    assert all(torch.equal(p, torch.full_like(p, 2.0)) for p in parts["model"].parameters())
    assert torch.equal(gens["train"].get_state(), torch.Generator().manual_seed(2).get_state())  # not reseeded
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(trial / "checkpoint_000003" / STATE_FILE) in warning
    assert str(trial / "checkpoint_000002") in warning and "epoch 2" in warning


def test_two_corrupt_checkpoints_fall_back_to_the_oldest(tmp_path, caplog):
    trial = _trial_folder(tmp_path)
    _truncate(trial / "checkpoint_000003" / STATE_FILE)
    _garble(trial / "checkpoint_000002" / STATE_FILE)
    with caplog.at_level(logging.WARNING, logger="gitune.trainables.checkpoint"):
        epoch, parts, _ = _restore(trial / "checkpoint_000003")
    assert epoch == 1
    assert all(torch.equal(p, torch.full_like(p, 1.0)) for p in parts["model"].parameters())
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(trial / "checkpoint_000002" / STATE_FILE) in warning  # named as unreadable too


def test_a_newer_checkpoint_is_never_used(tmp_path):
    """Only checkpoints older than the one Tune hands over are candidates (a newer folder may be one the
    experiment state never recorded)."""
    trial = _trial_folder(tmp_path)
    _garble(trial / "checkpoint_000002" / STATE_FILE)
    assert _restore(trial / "checkpoint_000002")[0] == 1


def test_no_readable_checkpoint_is_a_clear_error(tmp_path):
    trial = _trial_folder(tmp_path)
    for k in (1, 2, 3):
        _truncate(trial / f"checkpoint_{k:06d}" / STATE_FILE)
    from ray.tune import Checkpoint

    parts = _parts(7.0)
    with pytest.raises(RuntimeError, match="no readable checkpoint") as err:
        restore_state(Checkpoint.from_directory(str(trial / "checkpoint_000003")), parts,
                      {"train": torch.Generator()}, "epoch", lambda s: {"train": s})
    for k in (1, 2, 3):
        assert str(trial / f"checkpoint_{k:06d}" / STATE_FILE) in str(err.value)
    assert all(torch.equal(p, torch.full_like(p, 7.0)) for p in parts["model"].parameters())  # untouched


def test_a_state_without_the_expected_keys_counts_as_unreadable(tmp_path):
    trial = _trial_folder(tmp_path)
    torch.save({"epoch": 3}, trial / "checkpoint_000003" / STATE_FILE)  # e.g. another trainable's state
    epoch, _, _ = _restore(trial / "checkpoint_000003")
    assert epoch == 2


def test_a_checkpoint_without_path_still_restores_and_fails_clearly(tmp_path):
    """restore_state stays Ray-free: any object with as_directory() works; one that cannot be read, without a
    path and filesystem to look for older ones beside it, is a clear error."""
    import contextlib

    class Plain:
        def __init__(self, folder):
            self.folder = folder

        @contextlib.contextmanager
        def as_directory(self):
            yield str(self.folder)

    trial = _trial_folder(tmp_path)
    parts = _parts(0.0)
    assert restore_state(Plain(trial / "checkpoint_000003"), parts, {"train": torch.Generator()}, "epoch",
                         lambda s: {"train": s}) == 3
    _truncate(trial / "checkpoint_000003" / STATE_FILE)
    with pytest.raises(RuntimeError, match="no older checkpoint"):
        restore_state(Plain(trial / "checkpoint_000003"), parts, {"train": torch.Generator()}, "epoch",
                      lambda s: {"train": s})



# ---------------------------------------------------------------- a real sweep: kill -9, corrupt, resume

def _kill_sweep(args, cwd, env, log, client, name, pred):
    """Start the sweep, wait until pred(children) holds, kill -9 its process group and every process it
    started; returns the epochs reached per trial id."""
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    tree: set[int] = set()
    try:
        _wait_for(client, name, proc, log, pred, timeout=300)
        tree = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.5)
    finally:
        for p in tree | _session(proc.pid):
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _, children = _runs(client, name)
    return {c.data.tags["gitune.trial_id"]: int(c.data.metrics["epoch"]) for c in children}


def _epoch_of(folder: Path) -> int:
    return int(json.loads((folder / PROGRESS_FILE).read_text())["epoch"])


def _restored_checkpoints(run_dir: Path) -> dict[str, Path]:
    """Per trial id, the checkpoint folder Tune will restore the trial from: its last registered result's
    checkpoint in the newest experiment state (plain JSON, read as a user would)."""
    state = json.loads(Path(max(glob.glob(f"{run_dir}/experiment_state-*.json"))).read_text())
    found = {}
    for _, metadata in state["trial_data"]:
        last = json.loads(metadata)["last_result"]
        (trial_dir,) = [d for d in run_dir.iterdir() if d.is_dir() and last["trial_id"] in d.name]
        found[last["trial_id"]] = trial_dir / last["checkpoint_dir_name"]
    return found


@SLOW
@pytest.mark.timeout(600)
def test_kill_9_then_corrupt_latest_checkpoints_then_resume(tmp_path, sweep_env):
    name = "corrupt-ckpt"
    args, uri = _command(tmp_path, name)  # 2 trials × EPOCHS epochs, checkpoint.num_to_keep 2 (the default)
    client = MlflowClient(uri)
    at_kill = _kill_sweep(args, tmp_path, sweep_env, tmp_path / "first.log", client, name,
                          lambda cs: len(cs) == 2 and all(c.data.metrics.get("epoch", 0) >= 4 for c in cs))
    assert all(4 <= e < EPOCHS for e in at_kill.values()), at_kill
    (run_dir,) = (tmp_path / "rr" / name).iterdir()
    older_epoch, corrupted = {}, []
    for tid, recorded in _restored_checkpoints(run_dir).items():
        # The trial restores from the newest complete checkpoint in its folder (which may be newer than the one
        # Tune recorded, gitune.trainables.checkpoint.newest_checkpoint): that one is corrupted.
        folders = sorted(recorded.parent.glob("checkpoint_*"))
        complete = [d for d in folders if (d / PROGRESS_FILE).is_file() and (d / STATE_FILE).is_file()]
        latest = max(complete, key=_epoch_of)
        older = [d for d in folders if d.name < latest.name]
        assert older, f"trial {tid}: no older checkpoint kept beside {latest.name} ({[d.name for d in folders]})"
        older_epoch[tid] = int(torch.load(older[-1] / STATE_FILE, weights_only=True)["epoch"])
        assert 1 <= older_epoch[tid] < _epoch_of(latest)
        _truncate(latest / STATE_FILE)
        corrupted.append(latest / STATE_FILE)

    t0 = time.time()
    out = subprocess.run(args + ["--resume"], cwd=tmp_path, env=sweep_env, capture_output=True, text=True,
                         timeout=500)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert [d.name for d in (tmp_path / "rr" / name).iterdir()] == [run_dir.name]  # the same run, continued
    for file in corrupted:
        assert f"checkpoint state {file} is unreadable" in text, text[-4000:]
    _, children = _check_one_run_per_trial_none_running(client, name, once=False)  # the corrupt epoch again
    for c in children:
        tid = c.data.tags["gitune.trial_id"]
        resumed = client.get_metric_history(c.info.run_id, "trial/resumed_at_epoch")
        assert [int(m.value) for m in resumed] == [older_epoch[tid]], "not restored from the older checkpoint"
    print(f"\ncorrupt latest checkpoints: epochs at kill {sorted(at_kill.values())}, restored from epochs "
          f"{sorted(older_epoch.values())}; resumed run {time.time() - t0:.1f} s")


# ---------------------------------------------------------------- --resume on an unreadable experiment state

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real run folder of a tiny sweep (1 trial, 2 epochs), run to its end: (folder, space args, uri)."""
    from sweep_env import local_env, private_ray_tmpdir

    base = tmp_path_factory.mktemp("state")
    args, uri = _command(base, "corrupt-state")
    args += ["--set", "train.epochs=2", "--set", "space.train.seed=null"]
    ray_tmp = private_ray_tmpdir()
    try:
        out = subprocess.run(args, cwd=base, env=local_env(ray_tmp, RAY_AIR_NEW_OUTPUT="0"), capture_output=True,
                             text=True, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return base, args, uri


def _newest(folder: Path, pattern: str) -> Path:
    return Path(max(glob.glob(f"{folder}/{pattern}")))


@SLOW
@pytest.mark.timeout(300)
@pytest.mark.parametrize("file,corrupt", [
    ("experiment_state-*.json", _truncate), ("experiment_state-*.json", Path.unlink), ("tuner.pkl", _truncate),
    ("basic-variant-state-*.json", _garble)])
def test_resume_with_unreadable_experiment_state_is_one_line(finished_run, tmp_path, sweep_env, file, corrupt):
    base, args, uri = finished_run
    storage = tmp_path / "rr"
    shutil.copytree(base / "rr", storage)  # a copy per case; the original stays intact for the next one
    args = [a if a != str(base / "rr") else str(storage) for a in args]
    (run_dir,) = (storage / "corrupt-state").iterdir()
    target = _newest(run_dir, file)
    corrupt(target)
    before = sorted(str(p.relative_to(storage)) + f":{p.stat().st_mtime_ns}" for p in storage.rglob("*"))
    client = MlflowClient(uri)
    parents, children = _runs(client, "corrupt-state")
    runs_before = {r.info.run_id: (r.info.status, r.info.end_time) for r in parents + children}

    out = subprocess.run(args + ["--resume"], cwd=base, env=sweep_env, capture_output=True, text=True, timeout=200)
    assert out.returncode == 2, (out.stdout + out.stderr)[-4000:]
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-4000:]
    shown = str(target) if corrupt is not Path.unlink else str(run_dir)
    assert lines[0].startswith(f"gitune: error: --resume: {shown}: Tune's experiment state is unreadable ("), lines
    assert "start a new run without --resume" in lines[0]
    # Nothing half-written: no new run folder, no file touched, MLflow as it was (no parent run reopened).
    assert sorted(str(p.relative_to(storage)) + f":{p.stat().st_mtime_ns}" for p in storage.rglob("*")) == before
    parents, children = _runs(client, "corrupt-state")
    assert {r.info.run_id: (r.info.status, r.info.end_time) for r in parents + children} == runs_before
    print(f"\n{lines[0]}")
