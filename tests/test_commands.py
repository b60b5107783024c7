"""The commands researchers type: `python -m gitune.sweep --space search_spaces/cifar_lt.yaml`, `--list`,
`--version`, a mistyped --space, the `gitune` console script and `python -m gitune`, and what the CIFAR-LT
command does without and with the CIFAR files."""

import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)
from test_data_cifar_format import write_cifar10

REPO = Path(__file__).resolve().parent.parent
SPACES = REPO / "search_spaces"
CIFAR_LT = SPACES / "cifar_lt.yaml"
GITUNE = Path(sys.executable).parent / "gitune"  # the console script pip installs beside the interpreter
OFFLINE = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def run(args, cwd=REPO, env=None, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def gitune_sweep(*args, **kw):
    return run([sys.executable, "-m", "gitune.sweep", *args], **kw)


# ------------------------------------------------------------------------------------------- --space, --list


def test_missing_space_file_suggests_the_closest_bundled_ones():
    out = gitune_sweep("--space", "search_spaces/cifar.yaml")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "gitune: error: --space search_spaces/cifar.yaml: no such file; did you mean search_spaces/cifar_lt.yaml, "
        "search_spaces/cifar10_lt.yaml, search_spaces/cifar100_lt.yaml? (python -m gitune.sweep --list shows "
        "them all)"]


def test_missing_space_file_elsewhere_names_the_bundled_files_by_full_path(tmp_path):
    out = gitune_sweep("--space", "cifar10_lt", cwd=tmp_path)  # the name without folder or .yaml
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith(f"gitune: error: --space cifar10_lt: no such file; did you mean {SPACES}/cifar10_lt.yaml")
    out = gitune_sweep("--space", "zzz_unrelated.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "gitune: error: --space zzz_unrelated.yaml: no such file (expected a YAML search-space file; python -m "
        "gitune.sweep --list shows the bundled ones)"]
    assert list(tmp_path.iterdir()) == []  # nothing made: no ray_results, no mlflow.db


def test_list_shows_every_bundled_space_with_its_description(tmp_path):
    out = gitune_sweep("--list", cwd=tmp_path)  # found beside the package, not in the working directory
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    files = sorted(SPACES.glob("*.yaml"))
    assert len(lines) == len(files) >= 12
    for f, line in zip(files, lines):
        first = yaml.safe_load(f.read_text())["description"].strip().splitlines()[0]
        assert line.startswith(str(f)) and line.endswith(first), line
    [cifar] = [line for line in lines if "cifar_lt.yaml" in line]
    assert "CIFAR-10-LT" in cifar and "--set data.name=cifar100" in cifar
    here = gitune_sweep("--list")  # from the repository: the paths as one types them
    assert "search_spaces/cifar_lt.yaml " in here.stdout and str(REPO) not in here.stdout


# ------------------------------------------------------------------------------------------------ versions


def test_version_from_every_entry_point():
    expected = f"gitune {version('gitune')}"
    for args in ([sys.executable, "-m", "gitune.sweep", "--version"], [sys.executable, "-m", "gitune", "--version"],
                 [str(GITUNE), "--version"], [str(GITUNE), "sweep", "--version"]):
        out = run(args)
        assert (out.returncode, out.stdout.strip()) == (0, expected), (args, out.stderr)


def test_version_falls_back_to_the_package_without_metadata(monkeypatch):
    import importlib.metadata

    import gitune
    from gitune import version_string

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", absent)
    assert version_string() == f"gitune {gitune.__version__}"


# ---------------------------------------------------------------------------------- gitune, python -m gitune


def test_console_script_help_lists_the_commands():
    assert GITUNE.is_file(), "pip install -e . (make venv) installs the gitune console script"
    out = run([str(GITUNE), "--help"])
    assert out.returncode == 0, out.stderr
    assert "sweep" in out.stdout and "report" in out.stdout and "examples:" in out.stdout
    assert "`" not in out.stdout
    same = run([sys.executable, "-m", "gitune", "--help"])
    assert same.stdout == out.stdout
    nothing = run([str(GITUNE)])
    assert nothing.returncode == 2 and len(nothing.stderr.splitlines()) == 1 and "sweep or report" in nothing.stderr


def test_sweep_help_has_metavars_and_examples_without_markdown():
    out = run([str(GITUNE), "sweep", "--help"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: gitune sweep")
    for needle in ("--space FILE", "--set KEY=VALUE", "--num-samples N", "--storage PATH", "--tracking-uri URI",
                   "--list", "--version", "examples:", "search_spaces/cifar_lt.yaml"):
        assert needle in out.stdout, needle
    assert "`" not in out.stdout
    plain = gitune_sweep("--help")
    assert plain.stdout.startswith("usage: python -m gitune.sweep")


def test_report_command_is_python_m_gitune_report():
    out = run([str(GITUNE), "report", "--help"])
    ref = run([sys.executable, "-m", "gitune.report", "--help"])
    assert out.returncode == ref.returncode == 0
    assert out.stdout.startswith("usage: gitune report") and "  gitune report demo" in out.stdout
    same = lambda text: " ".join(text.replace("python -m gitune.report", "gitune report").split())  # noqa: E731
    assert same(out.stdout) == same(ref.stdout)  # the same parser, named as it was called
    assert "experiment" in out.stdout and "`" not in out.stdout


def test_cli_starts_without_torch_or_ray():
    code = textwrap.dedent("""
        import sys
        from gitune.cli import main
        try:
            main(["--version"])
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "ray", "mlflow", "numpy") if m in sys.modules))
    """)
    out = run([sys.executable, "-c", code])
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_python_m_gitune_sweep_dry_run_of_cifar_lt():
    out = run([sys.executable, "-m", "gitune", "sweep", "--dry-run", "--space", "search_spaces/cifar_lt.yaml"])
    assert out.returncode == 0, out.stderr
    assert "name: cifar-lt" in out.stdout and "name: cifar10" in out.stdout
    assert out.stdout.rstrip().splitlines()[-1].startswith("# valid: 5 tuned key(s), 64 sample(s)")
    # the CIFAR-100-LT switch the file documents (with the cifar100_lt.yaml sizes) is valid too
    out = gitune_sweep("--dry-run", "--space", str(CIFAR_LT), "--set", "data.name=cifar100", "--name", "cifar100-lt",
                       "--set", "data.val_per_class=20", "--set", "git.class_threshold=100",
                       "--set", "eval.inv_images_per_class=20")
    assert out.returncode == 0, out.stderr
    assert "name: cifar100-lt" in out.stdout and "name: cifar100\n" in out.stdout


def test_cifar_lt_is_the_cifar10_lt_recipe():
    ours, ref = (yaml.safe_load(p.read_text()) for p in (CIFAR_LT, SPACES / "cifar10_lt.yaml"))
    for key in ("name", "description"):
        ours.pop(key), ref.pop(key)
    assert ours == ref


# ---------------------------------------------------------------------------------------- the CIFAR files


def test_cifar_lt_without_the_files_ends_in_one_line(tmp_path, sweep_env):
    """No CIFAR-10 under ./data and no network: the download fails in one line naming the folder to fill."""
    out = gitune_sweep("--space", str(CIFAR_LT), cwd=tmp_path, env={**sweep_env, **OFFLINE})
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.splitlines()
    assert line.startswith(f"gitune: error: data.root: {tmp_path}/data: CIFAR-10 not found and the download failed")
    assert "cifar-10-batches-py/" in line and "cifar-10-python.tar.gz" in line
    out = gitune_sweep("--space", str(CIFAR_LT), "--set", "data.download=false", cwd=tmp_path, env=sweep_env)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"gitune: error: data.root: {tmp_path}/data: CIFAR-10 not found (put cifar-10-python.tar.gz or the extracted "
        "cifar-10-batches-py/ folder there, or set data.download: true with network access)"]
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


# torchvision checks the published md5 of every CIFAR file; the files the test writes cannot match it. This
# sitecustomize (on PYTHONPATH, so the sweep's Ray workers load it too) turns the check off when torchvision's
# cifar module is imported, and costs nothing in processes that never import it.
NO_MD5 = textwrap.dedent("""
    import importlib.abc
    import sys


    class _NoCifarMd5(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "torchvision.datasets.cifar":
                return None
            for finder in sys.meta_path:
                spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                module.check_integrity = lambda *a, **k: True
                module.CIFAR10._check_integrity = lambda self: True

            spec.loader.exec_module = exec_module
            return spec


    sys.meta_path.insert(0, _NoCifarMd5())
""")

TINY = ["--num-samples", "1", "--set", "search.points_to_evaluate=null", "--set", "resources.cpu=1", "--set", "resources.gpu=0",
        "--set", "generator.resources.cpu=1", "--set", "generator.resources.gpu=0",
        "--set", "generator.config={dim: 4, style_dim: 2, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, "
                 "iterations: 2, batch_size: 4, report_every: 2, grid_every: 0, fid_images: 8, fid_draws: 2, "
                 "threads: 1}",
        "--set", "data.n_max=30", "--set", "data.ratio=10", "--set", "data.val_per_class=5",
        "--set", "model.arch=small_cnn", "--set", "train.epochs=1", "--set", "train.batch_size=32",
        "--set", "train.threads=1", "--set", "optim.warmup_epochs=0", "--set", "optim.milestones=[]",
        "--set", "scheduler.max_t=1", "--set", "scheduler.grace_period=1", "--set", "git.start_epoch=0",
        "--set", "eval.inv_interval=1", "--set", "eval.inv_images_per_class=2", "--set", "eval.inv_transforms=2"]


@pytest.mark.timeout(300)
def test_cifar_lt_with_the_files_runs_the_sweep(tmp_path, sweep_env):
    """CIFAR-10 in its real format under ./data: the mission's command, made tiny with --set, runs the
    generator stage and a classifier trial to the end (the files are there: nothing is downloaded)."""
    write_cifar10(tmp_path / "data", per_class_train=30, per_class_test=4)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_MD5)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**sweep_env, "PYTHONPATH": path}
    out = gitune_sweep("--space", str(CIFAR_LT), *TINY, "--storage", str(tmp_path / "rr"),
                       "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path, env=env, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "gitune: sweep 'cifar-lt': results and checkpoints in" in out.stdout
    assert "gitune: generator: trained; stored as" in out.stdout
    assert "gitune: 1 trials, 0 errored. Best trial" in out.stdout
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]
