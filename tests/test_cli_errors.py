"""Bad input: every user mistake ends in one line naming the file/key/path, exit status 2, nothing written.

Run in-process through `gitune.sweep.main` (the same code path as the command line), in an empty working
directory so we can assert that no MLflow store or Ray results were created.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sweep_env import sweep_env  # noqa: F401 (a fixture: private Ray temp folder, nothing leaves this machine)

from gitune import sweep

GOOD = """
name: bad-input
num_samples: 2
scheduler: {type: asha, max_t: 3, grace_period: 1, reduction_factor: 2}
config:
  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}
  model: {arch: small_cnn}
  train: {epochs: 3}
  optim: {warmup_epochs: 1, milestones: [2]}
space:
  optim.lr: {loguniform: [0.01, 0.1]}
"""


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _cases(tmp: Path):
    """(name, file text or None, extra CLI args, substrings the error line must contain)."""
    imgs = np.zeros((6, 8, 8), np.uint8)
    bad_labels = _npz(tmp / "bad_labels.npz", images=imgs, labels=np.array([0, 1, 2, 3, 4, 99]))
    no_labels = _npz(tmp / "no_labels.npz", images=imgs)
    float_imgs = _npz(tmp / "float.npz", images=imgs.astype(np.float32), labels=np.arange(6) % 2)
    npz_cfg = "  data: {{name: npz, path: {p}}}\n"
    labels12 = np.arange(12) % 3
    five_channels = _npz(tmp / "five_channels.npz", images=np.zeros((12, 8, 8, 5), np.uint8), labels=labels12)
    flat_images = _npz(tmp / "flat.npz", images=np.zeros((12, 64), np.uint8), labels=labels12)
    class_gap = _npz(tmp / "gap.npz", images=np.zeros((12, 8, 8), np.uint8), labels=np.array([0, 2] * 6),
                     class_names=np.array(["zero", "one", "two"]))
    short_labels = _npz(tmp / "short.npz", images=np.zeros((12, 8, 8), np.uint8), labels=labels12[:10])
    test_shape = _npz(tmp / "test_shape.npz", images=np.zeros((12, 8, 8), np.uint8), labels=labels12,
                      test_images=np.zeros((3, 9, 9), np.uint8), test_labels=np.arange(3))
    (tmp / "text.npz").write_text("images,labels\n")
    empty_folder, bad_image_folder = _image_folders(tmp)

    gen_dir = tmp / "gens"
    gen_dir.mkdir(exist_ok=True)
    good_gen, truncated_gen, wrong_gen, rgb_gen = (gen_dir / f"{n}.pt" for n in ("good", "trunc", "wrong", "rgb"))
    _generator_file(good_gen, 1)
    truncated_gen.write_bytes(good_gen.read_bytes()[:1500])
    _generator_file(wrong_gen, 1, declared_dim=8)
    _generator_file(rgb_gen, 3)
    flipped = bytearray(good_gen.read_bytes())
    for i in range(len(flipped) // 2, len(flipped) // 2 + 64):  # corrupted in the middle, same length
        flipped[i] ^= 0xFF
    (gen_dir / "flipped.pt").write_bytes(bytes(flipped))
    import torch

    torch.save({"model": {}, "epoch": 3}, gen_dir / "state.pt")  # a classifier checkpoint, not a generator

    def gen_block(body: str) -> str:
        return GOOD + "generator:\n  " + body + "\n"

    def with_config(extra: str) -> str:
        return GOOD.replace("config:\n", "config:\n" + extra) if extra else GOOD

    def npz(p):
        return GOOD.replace("  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, "
                            "test_per_class: 5}\n", npz_cfg.format(p=p))

    return [
        ("missing file", None, ["--space", str(tmp / "nope.yaml")], ["nope.yaml", "no such file"]),
        ("invalid yaml", "name: [unclosed\n", [], ["invalid YAML", "line"]),
        ("not a mapping", "- a\n- b\n", [], ["expected a mapping"]),
        ("unknown top key", GOOD + "epochs: 3\n", [], ["epochs", "unknown key"]),
        ("unknown config key", GOOD.replace("train: {epochs: 3}", "train: {epochs: 3, lossx: ce}"), [],
         ["train.lossx", "unknown key"]),
        ("unknown group", GOOD.replace("model: {arch: small_cnn}", "modle: {arch: small_cnn}"), [],
         ["modle", "unknown group"]),
        ("unknown loss", GOOD.replace("train: {epochs: 3}", "train: {epochs: 3, loss: cee}"), [],
         ["train.loss", "cee"]),
        ("unknown rule in space", GOOD + "  train.rule: {choice: [erm, drx]}\n", [], ["train.rule", "drx"]),
        ("unknown dataset", GOOD.replace("name: glyphs", "name: mnist"), [], ["data.name", "mnist"]),
        ("unknown model", GOOD.replace("arch: small_cnn", "arch: resnet33"), [], ["model.arch", "resnet33"]),
        ("bad loguniform", GOOD.replace("loguniform: [0.01, 0.1]", "loguniform: [0, 0.1]"), [],
         ["space.optim.lr", "loguniform"]),
        ("reversed bounds", GOOD.replace("loguniform: [0.01, 0.1]", "uniform: [0.1, 0.01]"), [],
         ["space.optim.lr", "low < high"]),
        ("unknown distribution", GOOD.replace("loguniform: [0.01, 0.1]", "normal: [0.01, 0.1]"), [],
         ["space.optim.lr", "normal"]),
        ("optuna with grid", GOOD.replace("num_samples: 2", "num_samples: 2\nsearch: {type: optuna}")
         + "  train.seed: {grid: [0, 1]}\n", [], ["space.train.seed", "Optuna"]),
        ("grid search with uniform", GOOD.replace("num_samples: 2", "num_samples: 2\nsearch: {type: grid}"), [],
         ["space.optim.lr", "grid"]),
        ("grace above max_t", GOOD.replace("grace_period: 1", "grace_period: 9"), [], ["scheduler.grace_period"]),
        ("reduction factor 1", GOOD.replace("reduction_factor: 2", "reduction_factor: 1"), [],
         ["scheduler.reduction_factor", "> 1"]),
        ("metric not per-epoch", GOOD + "metric: inv/ekld_few\n", [], ["metric", "inv/ekld_few"]),
        ("negative momentum", GOOD.replace("milestones: [2]}", "milestones: [2], momentum: -0.5}"), [],
         ["optim.momentum", "-0.5"]),
        ("zero samples", GOOD.replace("num_samples: 2", "num_samples: 0"), [], ["num_samples"]),
        ("gpu 1.5", GOOD + "resources: {cpu: 1, gpu: 1.5}\n", [], ["resources.gpu"]),
        ("unsorted milestones", GOOD.replace("milestones: [2]", "milestones: [2, 1]"), [], ["optim.milestones"]),
        ("--set without =", GOOD, ["--set", "train.epochs"], ["--set train.epochs", "KEY=VALUE"]),
        ("--set unknown key", GOOD, ["--set", "train.epoch=3"], ["train.epoch", "unknown key"]),
        ("--set bad value", GOOD, ["--set", "train.epochs=abc"], ["train.epochs", "abc"]),
        ("npz without path", GOOD.replace("name: glyphs", "name: npz"), [], ["data.path"]),
        ("npz missing file", npz(tmp / "absent.npz"), [], ["absent.npz"]),
        ("npz labels out of range", npz(bad_labels), [], ["bad_labels.npz", "labels"]),
        ("npz missing labels", npz(no_labels), [], ["no_labels.npz", "labels"]),
        ("npz float images", npz(float_imgs), [], ["float.npz", "uint8"]),
        ("cifar missing, no download", GOOD.replace(
            "name: glyphs, n_max: 50, num_classes: 3, image_size: 16,", f"name: cifar10, root: {tmp}/cifar, "
            "download: false,"), [], ["data.root", "cifar"]),
        ("imagefolder missing", GOOD.replace("name: glyphs,", f"name: imagefolder, path: {tmp}/nofolder,"), [],
         ["nofolder"]),
        ("resume without a run", GOOD, ["--resume", "--storage", str(tmp / "rr")], ["--resume", "bad-input"]),
        ("unreachable server", GOOD, ["--tracking-uri", "http://127.0.0.1:9"], ["http://127.0.0.1:9",
                                                                                "not reachable"]),
        ("git without generator", GOOD + "  git.prob: {uniform: [0.0, 0.5]}\n", [], ["git.prob", "generator"]),
        ("generator unknown key", gen_block("config: {dims: 8}"), [], ["generator.config.dims", "unknown key"]),
        ("generator bad value", gen_block("config: {iterations: 0}"), [], ["generator.config.iterations"]),
        ("generator bad metric", gen_block("metric: val/bal_acc"), [], ["generator.metric"]),
        ("generator unknown fidelity metric", gen_block("metric: fid/nuisance"), [],
         ["generator.metric", "fid/nuisance", "fid/nuisance_ed"]),
        ("generator nuisance metric without a nuisance", gen_block("metric: fid/nuisance_ed_feat"), [],
         ["generator.metric", "fid/nuisance_ed_feat", "config.data.nuisance"]),
        ("generator bad mode", gen_block("metric: fid/content\n  mode: maximum"), [], ["generator.mode", "maximum"]),
        ("generator too deep", gen_block("config: {n_downsample: 4}"), [], ["generator.n_downsample"]),
        ("generator tuned data", gen_block("config: {iterations: 2}") + "space:\n  data.instance: {choice: [0, 1]}\n",
         [], ["space.data.instance", "generator"]),
        ("git threshold too small", gen_block("config: {iterations: 2}").replace(
            "train: {epochs: 3}", "train: {epochs: 3}\n  git: {class_threshold: 1}"), [], ["git.class_threshold"]),
        ("generator checkpoint missing", gen_block(f"checkpoint: {gen_dir}/absent.pt"), [],
         ["generator.checkpoint", "absent.pt", "no such file"]),
        ("generator checkpoint truncated", gen_block(f"checkpoint: {truncated_gen}"), [],
         ["generator.checkpoint", "trunc.pt", "not a readable"]),
        ("generator checkpoint wrong architecture", gen_block(f"checkpoint: {wrong_gen}"), [],
         ["wrong.pt", "do not match"]),
        ("generator checkpoint other images", gen_block(f"checkpoint: {rgb_gen}"), [],
         ["rgb.pt", "3-channel"]),
        ("generator run URI without a store", gen_block("checkpoint: runs:/0123456789abcdef"), [],
         ["runs:/0123456789abcdef", "MLflow"]),
        ("oracle without a nuisance", GOOD + "  aug.oracle_prob: {choice: [0.0, 0.5]}\n", [],
         ["aug.oracle_prob", "data.nuisance"]),
        ("nuisance rank beyond the classes", GOOD.replace("test_per_class: 5}", "test_per_class: 5, "
                                                          "nuisance: {rotation: 90}, nuisance_rank: 4}"), [],
         ["data.nuisance_rank", "1..3"]),
        ("unknown latent layer", GOOD.replace("train: {epochs: 3}", "train: {epochs: 3}\n  eval: {latent_layer: "
                                              "conv9}"), [], ["eval.latent_layer", "conv9"]),
        # datasets: wrong shapes, channels, empty classes, unreadable files
        ("npz with 5 channels", npz(five_channels), [], ["five_channels.npz", "5 channels"]),
        ("npz with 2-D images", npz(flat_images), [], ["flat.npz", "(12, 64)", "N×H×W"]),
        ("npz with an empty class", npz(class_gap), [], ["gap.npz", "no image of class 1"]),
        ("npz with fewer labels than images", npz(short_labels), [], ["short.npz", "10 entries", "12 images"]),
        ("npz test images of another shape", npz(test_shape), [], ["test_shape.npz", "test_images"]),
        ("npz that is not an archive", npz(tmp / "text.npz"), [], ["text.npz", "not an npz archive"]),
        ("imagefolder with an empty class", GOOD.replace("name: glyphs,", f"name: imagefolder, path: {empty_folder},"),
         [], [f"{empty_folder}/b", "no images"]),
        ("imagefolder with an unreadable image", GOOD.replace("name: glyphs,",
                                                              f"name: imagefolder, path: {bad_image_folder},"),
         [], [f"{bad_image_folder}/b/2.png", "cannot read image"]),
        # checkpoints
        ("generator checkpoint corrupted in the middle", gen_block(f"checkpoint: {gen_dir}/flipped.pt"), [],
         ["generator.checkpoint", "flipped.pt", "corrupted"]),
        ("generator checkpoint is a classifier state", gen_block(f"checkpoint: {gen_dir}/state.pt"), [],
         ["generator.checkpoint", "state.pt", "not a gitune generator file"]),
        # CLI flags
        ("--num-samples -1", GOOD, ["--num-samples", "-1"], ["num_samples", "-1"]),
        ("--address garbage", GOOD, ["--address", "garbage"], ["--address garbage", "HOST:PORT"]),
        ("--address nobody answers", GOOD, ["--address", "127.0.0.1:1"], ["--address 127.0.0.1:1",
                                                                          "no Ray cluster answers"]),
        ("--tracking-uri sqlite in a missing folder", GOOD, ["--tracking-uri", f"sqlite:///{tmp}/absent/m.db"],
         [f"{tmp}/absent", "does not exist"]),
    ]


def _image_folders(tmp: Path) -> tuple[Path, Path]:
    """Two ImageFolder trees: one with an empty class folder, one with a file that is not an image."""
    from PIL import Image

    empty, bad = tmp / "folder_empty_class", tmp / "folder_bad_image"
    for root in (empty, bad):
        for c in "ab":
            (root / c).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(empty / "a" / "0.png")
    for c in "ab":
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(bad / c / f"{i}.png")
    (bad / "b" / "2.png").write_bytes(b"this is not a png")
    return empty, bad


def _generator_file(path: Path, channels: int, declared_dim: int | None = None) -> None:
    """A real generator file (tiny network) for the checkpoint cases."""
    from gitune.models.munit import MunitGenerator
    from gitune.generator_file import export_generator

    arch = {"dim": 4, "style_dim": 2, "n_downsample": 1, "n_res": 1, "mlp_dim": 4, "mlp_layers": 2}
    net = MunitGenerator(channels, **arch)
    export_generator(str(path), net.state_dict(), {**arch, "dim": declared_dim or 4}, channels, 16)


def test_case_list_matches_parametrization(tmp_path):
    assert len(_cases(tmp_path)) == 66  # keep in step with range(66) below; ≥ 30 bad inputs


@pytest.mark.parametrize("index", range(66))
def test_bad_input_one_line_exit_2_nothing_written(index, tmp_path, monkeypatch, capsys):
    cases = _cases(tmp_path)
    name, text, extra, needles = cases[index]
    space = tmp_path / "space.yaml"
    if text is not None:
        space.write_text(textwrap.dedent(text))
    args = extra if "--space" in extra else ["--space", str(space), *extra]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rc = sweep.main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (name, err)
    assert len(err.splitlines()) == 1, (name, err)
    assert err.startswith("gitune: error: "), (name, err)
    for needle in needles:
        assert needle in err, (name, needle, err)
    assert "Traceback" not in err
    assert list(work.iterdir()) == [], (name, list(work.iterdir()))  # no mlflow.db, no ray_results


def test_real_command_line_exits_2_without_traceback(tmp_path, sweep_env):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("loss: ce", "").replace("train: {epochs: 3}", "train: {epochs: 3, loss: nope}"))
    out = subprocess.run([sys.executable, "-m", "gitune.sweep", "--space", str(bad)], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120, env=sweep_env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"gitune: error: {bad}: config.train.loss: expected one of: ce, ldam, focal, logit_adjusted, got 'nope'"]
    assert not (tmp_path / "mlflow.db").exists()


def test_argparse_errors_are_one_line(tmp_path, sweep_env):
    out = subprocess.run([sys.executable, "-m", "gitune.sweep", "--bogus"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, env=sweep_env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
