"""TinyImageNet-LT: the `tinyimagenet` source on a generated folder of Tiny ImageNet's exact layout (wnids.txt,
words.txt, train/<wnid>/images/*.JPEG with the boxes file beside them, val/images/*.JPEG named by
val/val_annotations.txt), the long tail built from it, search_spaces/tinyimagenet_lt.yaml validated and run as a
tiny real sweep, and one line (exit 2) for each malformed layout."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)

from gitune.config import DEFAULTS
from gitune.data.dataset import build_dataset
from gitune.data.profiles import class_counts
from gitune.data.sources import check_source, load_source
from gitune.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SPACE = REPO / "search_spaces" / "tinyimagenet_lt.yaml"
WNIDS = ["n01443537", "n01629819", "n01641577", "n01644900", "n01698640"]
WORDS = ["goldfish, Carassius auratus", "European fire salamander", "bullfrog", "tailed frog", "American alligator"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 16, 3


def make_tiny(root: Path, train_per_class: int = TRAIN_PER_CLASS, val_per_class: int = VAL_PER_CLASS) -> Path:
    """root/tiny-imagenet-200 with 5 classes of small 64×64 JPEGs, each class its own colour plus noise."""
    base = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)  # unlabelled in the real archive: must be ignored
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in WNIDS))
    (base / "words.txt").write_text("".join(f"{w}\t{t}\n" for w, t in zip(WNIDS, WORDS)) + "n00000001\tentity\n")

    def jpeg(path: Path, c: int) -> None:
        colour = np.array([(c * 50) % 256, (255 - c * 40) % 256, (c * 90) % 256], np.int16)
        a = np.clip(colour + rng.integers(-20, 21, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(path, quality=90)

    for c, w in enumerate(WNIDS):
        images = base / "train" / w / "images"
        images.mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
        for i in range(train_per_class):
            jpeg(images / f"{w}_{i}.JPEG", c)
    lines, k = [], 0
    for c, w in enumerate(WNIDS):
        for _ in range(val_per_class):
            jpeg(base / "val" / "images" / f"val_{k}.JPEG", c)
            lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63")
            k += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    jpeg(base / "test" / "images" / "test_0.JPEG", 0)
    return base


def data_cfg(root, **kw):
    return {**DEFAULTS["data"], "name": "tinyimagenet", "root": str(root), "download": False, "profile": "exp",
            "ratio": 10.0, "n_max": 12, "val_per_class": 2, "nuisance": {}, **kw}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_tiny(root)
    return root


def test_source_reads_the_layout(tiny):
    raw = load_source(data_cfg(tiny))
    assert raw.num_classes == 5 and raw.natural is True
    assert raw.class_names == [f"{w} {t.split(',')[0]}" for w, t in zip(WNIDS, WORDS)]  # words.txt
    assert raw.train_images.shape == (5 * TRAIN_PER_CLASS, 3, 64, 64) and raw.train_images.dtype == torch.uint8
    assert raw.train_labels.tolist() == [c for c in range(5) for _ in range(TRAIN_PER_CLASS)]
    assert raw.test_images.shape == (5 * VAL_PER_CLASS, 3, 64, 64)  # val/ annotations: the test split
    assert raw.test_labels.tolist() == [c for c in range(5) for _ in range(VAL_PER_CLASS)]
    # each class's colour survives JPEG: class c's mean red is about (c * 50) % 256
    red = raw.train_images[:, 0].float().mean(dim=(1, 2))
    assert all(abs(float(red[c * TRAIN_PER_CLASS]) - (c * 50) % 256) < 12 for c in range(5))
    check_source(data_cfg(tiny))
    # data.root may also be the tiny-imagenet-200 folder itself
    assert load_source(data_cfg(tiny / "tiny-imagenet-200")).num_classes == 5


def test_long_tail_counts_and_image_shape(tiny):
    ds = build_dataset(data_cfg(tiny))
    expected = class_counts("exp", 5, 12, 10.0)  # 12·0.1^(i/4), floored
    assert expected == [12, 6, 3, 2, 1]
    assert ds.class_counts == expected and len(ds.train) == sum(expected)
    assert ds.image_shape == (3, 64, 64) and ds.natural
    assert torch.bincount(ds.val.labels, minlength=5).tolist() == [2] * 5  # from the images the tail left unused
    assert torch.bincount(ds.test.labels, minlength=5).tolist() == [VAL_PER_CLASS] * 5
    # train and validation are disjoint images of the training folder
    flat = lambda x: {bytes(v.numpy().tobytes()) for v in x}  # noqa: E731
    assert not flat(ds.train.images) & flat(ds.val.images)


def _break(base: Path, case: str) -> None:
    if case == "no wnids":
        (base / "wnids.txt").unlink()
    elif case == "unknown class":
        ann = base / "val" / "val_annotations.txt"
        ann.write_text(ann.read_text() + "val_0.JPEG\tn99999999\t0\t0\t63\t63\n")
    elif case == "no images":
        for f in (base / "train" / WNIDS[2] / "images").iterdir():
            f.unlink()
    elif case == "missing class folder":
        for f in (base / "train" / WNIDS[1] / "images").iterdir():
            f.unlink()
        (base / "train" / WNIDS[1] / "images").rmdir()
        for f in (base / "train" / WNIDS[1]).iterdir():
            f.unlink()
        (base / "train" / WNIDS[1]).rmdir()
    elif case == "no annotations":
        (base / "val" / "val_annotations.txt").unlink()
    elif case == "missing val image":
        (base / "val" / "images" / "val_4.JPEG").unlink()
    elif case == "bad line":
        ann = base / "val" / "val_annotations.txt"
        ann.write_text("val_0.JPEG\n" + ann.read_text())
    elif case == "extra train folder":
        (base / "train" / "n12345678" / "images").mkdir(parents=True)
    elif case == "no tiny imagenet":
        import shutil

        shutil.rmtree(base)


BROKEN = [
    ("no wnids", ["missing wnids.txt"]),
    ("unknown class", ["val_annotations.txt line 16", "class 'n99999999' is not in wnids.txt"]),
    ("no images", [f"train/{WNIDS[2]}/images", "no images"]),
    ("missing class folder", [f"train/{WNIDS[1]}", "missing class folder"]),
    ("no annotations", ["missing val/val_annotations.txt"]),
    ("missing val image", ["line 5", "val_4.JPEG not found"]),
    ("bad line", ["line 1", "expected 'file<TAB>wnid'"]),
    ("extra train folder", ["n12345678", "not listed in wnids.txt"]),
    ("no tiny imagenet", ["Tiny ImageNet not found", "tiny-imagenet-200"]),
]


@pytest.mark.parametrize("case, expect", BROKEN, ids=[c for c, _ in BROKEN])
def test_malformed_layout_is_one_user_error(tmp_path, case, expect):
    base = make_tiny(tmp_path, train_per_class=2, val_per_class=1 if case != "unknown class" else 3)
    _break(base, case)
    with pytest.raises(UserError) as e:
        check_source(data_cfg(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("data.root: ")
    for text in expect:
        assert text in msg, msg


SMALL = ["--set", "generator=null", "--set", "git.prob=0", "--set", "train.seed=0", "--set", "data.n_max=12",
         "--set", "data.ratio=10", "--set", "data.val_per_class=2", "--set", "train.epochs=1",
         "--set", "optim.warmup_epochs=0", "--set", "optim.milestones=[]", "--set", "train.deferred_epoch=0",
         "--set", "train.batch_size=16", "--set", "train.threads=1", "--set", "model.arch=resnet20",
         "--set", "eval.inv_interval=1", "--set", "eval.inv_images_per_class=2", "--set", "eval.inv_transforms=2",
         "--set", "eval.batch_size=64", "--set", "resources={cpu: 1, gpu: 0}", "--set", "checkpoint.num_to_keep=1"]


def _sweep(args, env, cwd, timeout):
    return subprocess.run([sys.executable, "-m", "gitune.sweep", "--space", str(SPACE), *args], capture_output=True,
                          text=True, env={**env, "OMP_NUM_THREADS": "1"}, cwd=cwd, timeout=timeout)


@pytest.mark.timeout(120)
def test_space_dry_run_validates(tiny, tmp_path, sweep_env):  # noqa: F811
    out = _sweep(["--dry-run", "--set", f"data.root={tiny}"], sweep_env, tmp_path, 100)
    assert out.returncode == 0, out.stderr
    assert "name: tinyimagenet" in out.stdout and "# valid: 2 tuned key(s)" in out.stdout
    assert "ratio: 100" in SPACE.read_text() and "arch: resnet32" in out.stdout and "loss: ldam" in out.stdout
    small = _sweep(["--dry-run", "--set", f"data.root={tiny}", *SMALL], sweep_env, tmp_path, 100)
    assert small.returncode == 0, small.stderr


@pytest.mark.timeout(120)
def test_malformed_layout_stops_the_sweep_in_one_line(tmp_path, sweep_env):  # noqa: F811
    base = make_tiny(tmp_path / "data", train_per_class=2, val_per_class=1)
    (base / "wnids.txt").unlink()
    work = tmp_path / "work"
    work.mkdir()
    out = _sweep(["--set", f"data.root={tmp_path / 'data'}", *SMALL, "--storage", str(work / "rr"),
                  "--tracking-uri", f"sqlite:///{work}/mlflow.db"], sweep_env, work, 100)
    assert out.returncode == 2, out.stderr
    err = out.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("gitune: error: data.root: ") and "missing wnids.txt" in err
    assert "Traceback" not in out.stderr and not (work / "rr").exists()


@pytest.mark.slow  # a real sweep: in `make test`, not `make test-fast`
@pytest.mark.timeout(240)
def test_tiny_real_sweep(tiny, tmp_path, sweep_env):  # noqa: F811
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    t0 = time.monotonic()
    out = _sweep(["--set", f"data.root={tiny}", *SMALL, "--storage", str(tmp_path / "rr"), "--tracking-uri", uri],
                 sweep_env, tmp_path, 220)
    took = time.monotonic() - t0
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tinyimagenet-lt")
    (trial,) = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("gitune.role") == "trial"]
    assert trial.info.status == "FINISHED"
    assert trial.data.params["data.name"] == "tinyimagenet" and trial.data.params["train.loss"] == "ldam"
    assert "test/bal_acc" in trial.data.metrics and "val/bal_acc" in trial.data.metrics
    print(f"tiny TinyImageNet-LT sweep: {took:.1f} s")
    assert os.path.isdir(tmp_path / "rr")
