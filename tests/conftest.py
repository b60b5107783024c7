"""Shared test set-up: one small local Ray instance per session, started only by tests that need it."""

import os
import shutil
import tempfile

import pytest

# Tests stay on this machine: no usage reports from Ray, no telemetry from MLflow, and no joining a cluster
# that RAY_ADDRESS in the caller's environment points at.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ.pop("RAY_ADDRESS", None)
# Ray swaps 127.0.0.1 for the machine's routable address (and listens on every interface) unless its
# multi-machine support is off; with it off, the test Ray listens on the loopback only.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    temp = None
    if not ray.is_initialized():  # on the loopback address, with its own temp folder (short: socket paths)
        temp = tempfile.mkdtemp(prefix="gt-ray-", dir="/tmp")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
                 _temp_dir=temp)
    yield ray
    ray.shutdown()
    if temp:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def one_thread():
    """Tiny networks: one torch thread avoids oversubscription on a shared 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
