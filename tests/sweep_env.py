"""The environment of the `python -m gitune.sweep` subprocesses the tests start. They stay on this machine: no
cluster that RAY_ADDRESS points at, no usage stats, no telemetry; and each Ray keeps its files in a private
temp folder (RAY_TMPDIR, which Ray reads), where no other process's plain ray.init() finds it: Ray records the
running instance in <RAY_TMPDIR>/ray/ray_current_cluster."""

import os
import shutil
import tempfile

import pytest


def local_env(ray_tmpdir: str, **extra: str) -> dict[str, str]:
    """os.environ without RAY_ADDRESS, with Ray's files under `ray_tmpdir` and reporting off, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmpdir, RAY_USAGE_STATS_ENABLED="0", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true", RAY_ENABLE_UV_RUN_RUNTIME_ENV="0", **extra)
    return env


def private_ray_tmpdir() -> str:
    """A new short folder under /tmp: Ray's Unix sockets live below it, and their paths may not pass 107 bytes."""
    return tempfile.mkdtemp(prefix="gt-", dir="/tmp")


@pytest.fixture
def sweep_env():
    """local_env for one test, with the sweep's output unbuffered and in the classic table; its Ray folder is
    removed afterwards."""
    temp = private_ray_tmpdir()
    yield local_env(temp, RAY_AIR_NEW_OUTPUT="0", PYTHONUNBUFFERED="1")
    shutil.rmtree(temp, ignore_errors=True)
