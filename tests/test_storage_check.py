"""--storage must be writable: checked with a real write before anything starts (no data built, no Ray, no
MLflow store), one line, exit 2, nothing created. os.access would not do: tests run as root, where it says yes
to everything, and it knows nothing of read-only mounts or object stores."""

import errno
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from gitune import storage, sweep
from gitune.errors import UserError

SPACE = """
name: storage-check
num_samples: 1
scheduler: {type: fifo}
config:
  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}
  model: {arch: small_cnn}
  train: {epochs: 2}
  optim: {warmup_epochs: 1, milestones: [1]}
"""


def _space(tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    return space


def _refused(tmp_path, monkeypatch, capsys, where: str) -> str:
    """sweep.main with --storage `where` in an empty working directory: the one error line."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc = sweep.main(["--space", str(_space(tmp_path)), "--storage", where])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert list(work.iterdir()) == []  # no mlflow.db, no ray_results
    return err


def _read_only_location() -> Path:
    """A folder that cannot be made even as root: sysfs refuses new entries (a read-only mount would do too)."""
    where = Path(f"/sys/gitune-{uuid.uuid4().hex[:8]}")
    try:
        where.mkdir()
    except OSError:
        return where / "rr"
    where.rmdir()
    pytest.skip("/sys accepts new folders here: no read-only location to test with")


def test_storage_under_a_regular_file(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    where = blocker / "sub" / "rr"
    err = _refused(tmp_path, monkeypatch, capsys, str(where))
    assert err == f"gitune: error: --storage {where}: not writable ({os.strerror(errno.ENOTDIR)})"
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "space.yaml", "work"]


def test_storage_is_a_regular_file(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    err = _refused(tmp_path, monkeypatch, capsys, f"file://{blocker}")
    assert err == f"gitune: error: --storage file://{blocker}: not writable ({os.strerror(errno.ENOTDIR)})"


def test_storage_on_a_read_only_location(tmp_path, monkeypatch, capsys):
    where = _read_only_location()
    err = _refused(tmp_path, monkeypatch, capsys, str(where))
    assert err.startswith(f"gitune: error: --storage {where}: not writable (") and err.endswith(")"), err
    assert not where.parent.exists()


def test_writable_storage_is_left_as_it_was(tmp_path):
    """The probe makes the missing folders and a temp file, then removes them all; an existing folder keeps
    exactly its contents."""
    storage.check_writable(str(tmp_path / "new" / "deeper"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "x").write_text("1")
    storage.check_writable(f"file://{tmp_path}/kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["x"]


def test_unknown_scheme_is_one_line():
    with pytest.raises(UserError, match=r"^--storage nope://bucket/x: not writable \(.+\)$"):
        storage.check_writable("nope://bucket/x")


def test_real_command_line(tmp_path):
    """The same refusal from `python -m gitune.sweep`: exit 2, one line, nothing created."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "gitune.sweep", "--space", str(_space(tmp_path)), "--storage",
                          str(blocker / "rr")], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**env, "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        f"gitune: error: --storage {blocker / 'rr'}: not writable ({os.strerror(errno.ENOTDIR)})"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "space.yaml"]
