"""SIGTERM (what Slurm, Kubernetes and `ray job stop` send before a kill) on a real sweep's driver: taken like
Ctrl-C. Tune saves the experiment state, the parent and trial runs end KILLED in MLflow (none left RUNNING),
the resume hint is printed, the exit status is 143 (128 + SIGTERM), and `--resume` finishes the trials in
their own runs. On the way: a sweep without --address starts a Ray that listens on 127.0.0.1 only."""

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)

from gitune.signals import exit_status, sigterm_as_sigint
from gitune.sweep import _ray_target

EPOCHS = 12
SPACE = f"""
name: sigterm
metric: val/bal_acc
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1}}
config:
  data: {{name: glyphs, num_classes: 4, image_size: 16, n_max: 300, ratio: 10, val_per_class: 10,
         test_per_class: 10}}
  model: {{arch: small_cnn}}
  optim: {{lr: 0.05, warmup_epochs: 1, milestones: [30], gamma: 0.1}}
  train: {{epochs: {EPOCHS}, batch_size: 32, threads: 1}}
  eval: {{inv_interval: 6, inv_images_per_class: 4, inv_transforms: 2}}
space:
  train.seed: {{grid: [0, 1]}}
"""


def test_sigterm_outside_tune_is_a_keyboard_interrupt():
    """Before and between Tune's fits (generator stage set-up, packing probe) SIGINT raises KeyboardInterrupt:
    so does SIGTERM, and the exit status says which signal it was; the previous handler is back afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as outside any fit
    try:
        with pytest.raises(KeyboardInterrupt):
            with sigterm_as_sigint():
                signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert exit_status() == 143
    assert signal.getsignal(signal.SIGTERM) is before
    with sigterm_as_sigint():
        assert exit_status() == 130  # nothing received: a KeyboardInterrupt now came from Ctrl-C


def test_sigterm_goes_to_the_sigint_handler_of_the_moment():
    """During a fit, Tune's SIGINT handler is the one that must see it (it stops the trials and returns)."""
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))  # as Tune's fit does
    try:
        with sigterm_as_sigint():
            signal.raise_signal(signal.SIGTERM)
            assert seen == [signal.SIGINT] and exit_status() == 143
    finally:
        signal.signal(signal.SIGINT, previous)


def test_local_sweeps_bind_loopback_and_clusters_are_joined(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = {"address": "local", "_node_ip_address": "127.0.0.1"}
    assert _ray_target(Namespace(address=None)) == local
    assert _ray_target(Namespace(address="local")) == local
    assert _ray_target(Namespace(address="auto")) == {"address": "auto"}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # inside a Ray job: join its cluster, as Ray would
    assert _ray_target(Namespace(address=None)) == {"address": None}


def _runs(client, name="sigterm"):
    """(parent runs, trial runs) of the experiment; none while the store is still being created."""
    try:
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], max_results=100) if exp else []
    except Exception:  # noqa: BLE001 - the sqlite store may not exist yet
        return [], []
    return ([r for r in runs if r.data.tags.get("gitune.role") == "sweep"],
            [r for r in runs if r.data.tags.get("gitune.role") == "trial"])


def _session(sid: int) -> set[int]:
    """Live processes of session `sid` (the sweep is started with start_new_session: sid = its pid)."""
    out = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.add(int(d.name))
    return out


def _address(hex_ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in host (little-endian) byte order."""
    raw = b"".join(bytes.fromhex(hex_ip[i:i + 8])[::-1] for i in range(0, len(hex_ip), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of `pids` holds."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
        except OSError:  # the process ended meanwhile
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ip, port = fields[1].split(":")
                found.add((str(_address(ip)), int(port, 16)))
    return found


@pytest.mark.slow  # in `make test`; `make test-fast` leaves it out
@pytest.mark.timeout(600)
def test_sigterm_to_the_driver_is_ctrl_c_then_resume(tmp_path, sweep_env):
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent(SPACE))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [sys.executable, "-m", "gitune.sweep", "--space", str(space), "--tracking-uri", uri,
            "--storage", str(tmp_path / "rr")]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=sweep_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    client = MlflowClient(uri)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-4000:]
            _, children = _runs(client)
            if len(children) == 2 and all(c.data.metrics.get("epoch", 0) >= 2 for c in children):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no epoch reported in time: " + log.read_text()[-4000:])
        # Trials are running: the local Ray (driver, raylet, GCS, workers) listens on the loopback only.
        listening = _listening(_session(proc.pid))
        assert listening and all(ipaddress.ip_address(ip).is_loopback for ip, _ in listening), listening

        os.kill(proc.pid, signal.SIGTERM)  # the driver alone, as a scheduler's first warning does
        t0 = time.time()
        rc = proc.wait(timeout=240)
        print(f"\nSIGTERM to exit: {time.time() - t0:.1f} s")
        text = log.read_text()
        deadline = time.time() + 30  # the driver shut its Ray down on the way out
        while _session(proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        survivors = _session(proc.pid)
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 143, text[-4000:]
    assert "gitune: interrupted; continue with: python -m gitune.sweep" in text and "--resume" in text, text[-4000:]
    assert not survivors, "Ray processes outlived the driver"
    parents, children = _runs(client)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert len(children) == 2 and {c.info.status for c in children} == {"KILLED"}
    stopped = {c.data.tags["gitune.trial_id"]: int(c.data.metrics["epoch"]) for c in children}
    assert all(2 <= e < EPOCHS for e in stopped.values()), stopped

    out = subprocess.run(args + ["--resume"], cwd=tmp_path, env=sweep_env, capture_output=True, text=True,
                         timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    parents, children = _runs(client)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert len(children) == 2 and {c.data.tags["gitune.trial_id"] for c in children} == set(stopped)
    for c in children:
        assert c.info.status == "FINISHED" and c.data.metrics["epoch"] == EPOCHS
        resumed = client.get_metric_history(c.info.run_id, "trial/resumed_at_epoch")
        # up to one epoch past what MLflow showed at the signal: see tests/test_resume.py
        assert len(resumed) == 1 and 1 <= resumed[0].value <= stopped[c.data.tags["gitune.trial_id"]] + 1
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "epoch")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), steps  # every epoch once
