"""Hostile input: memory and output bombs are refused in one line, before anything large is built.

A YAML alias bomb, a megabyte value quoted in an error, an .npz whose header or zip directory claims terabytes,
a label of 2**40 and an image header of 20000 × 20000 pixels each end in `gitune: error: ...` (exit 2 through
the CLI, nothing written) or a one-line UserError, fast and without big allocations.
"""

import io
import struct
import textwrap
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset

from gitune import registry, sweep
from gitune.data import sources
from gitune.data.dataset import build_dataset
from gitune.data.raw import MAX_CLASSES, MAX_IMAGE_PIXELS, RawData
from gitune.data.sources import check_source, load_source
from gitune.errors import UserError, cut_message, shown
from gitune.spaces import MAX_YAML_NODES, load_spec, safe_load
from gitune.config import DEFAULTS

GOOD = """
name: hostile
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
GLYPHS = "  data: {name: glyphs, n_max: 50, num_classes: 3, image_size: 16, val_per_class: 5, test_per_class: 5}\n"
MIB = 2**20


def billion_laughs(levels: int = 10, key: str = "lol") -> str:
    """The classic alias bomb: 10 anchors, each a list of nine aliases of the previous one (9**10 leaves)."""
    lines = [f"{key}0: &{key}0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"{key}{i}: &{key}{i} [" + ", ".join([f"*{key}{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 10) -> str:
    """The alias bomb on one line, as a --set value: a flow list whose items alias the item before."""
    items = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


def mapping_bomb(levels: int = 12) -> str:
    """The same with mappings: every level a mapping of four aliases of the one below."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- crafted files


def _npy_bytes(shape, descr="|u1", payload=b"") -> bytes:
    """An .npy member whose header claims `shape` but holds only `payload` (no large array is ever built)."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue() + payload


def _npy_of(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, a)
    return f.getvalue()


def _zip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _good_members(**replace: bytes) -> dict[str, bytes]:
    members = {"images.npy": _npy_of(np.zeros((12, 8, 8), np.uint8)), "labels.npy": _npy_of(np.arange(12) % 3)}
    members.update(replace)
    return members


def _declare_size(path: Path, member: str, size: int) -> None:
    """Patch the uncompressed size a zip declares for `member` (local header and central directory)."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    local = data.find(b"PK\x03\x04")
    while local >= 0:
        n = struct.unpack_from("<H", data, local + 26)[0]
        if data[local + 30:local + 30 + n] == name:
            struct.pack_into("<I", data, local + 22, size)
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        n = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46:central + 46 + n] == name:
            struct.pack_into("<I", data, central + 24, size)
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid 1×1 PNG whose IHDR is patched to claim width × height (CRC recomputed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _bmp_claiming(path: Path, width: int, height: int) -> Path:
    """A 1×1 BMP whose info header is patched to claim width × height."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(buf, format="BMP")
    data = bytearray(buf.getvalue())
    struct.pack_into("<ii", data, 18, width, height)
    path.write_bytes(bytes(data))
    return path


def _folder(root: Path, bad: Path | None = None, bad_name: str = "bad.png") -> Path:
    """A two-class ImageFolder of 8×8 PNGs, with `bad` copied in as class b's last file."""
    for c in "ab":
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(root / c / f"{i}.png")
    if bad is not None:
        (root / "b" / bad_name).write_bytes(bad.read_bytes())
    return root


def data_cfg(**kw) -> dict:
    return {**DEFAULTS["data"], "download": False, "val_per_class": 1, "test_per_class": 1, **kw}


# ---------------------------------------------------------------------------------------------- CLI cases


def _cli_cases(tmp: Path):
    """(name, space-file text or None, extra CLI args, substrings the error line must contain)."""
    def with_data(line: str) -> str:
        return GOOD.replace(GLYPHS, line)

    def npz(path) -> str:
        return with_data(f"  data: {{name: npz, path: {path}}}\n")

    def folder(path) -> str:
        return with_data(f"  data: {{name: imagefolder, path: {path}, val_per_class: 1, test_per_class: 1}}\n")

    huge_shape = _zip(tmp / "huge_shape.npz", _good_members(**{"images.npy": _npy_bytes((10**6, 10**4, 10**4))}))
    short = _npy_bytes((1000, 64, 64), payload=b"\0" * 10)
    short_member = _zip(tmp / "short.npz", _good_members(**{"images.npy": short}))
    ratio = _zip(tmp / "ratio.npz", _good_members(), zipfile.ZIP_DEFLATED)
    _declare_size(ratio, "images.npy", 500 * MIB)
    far = _npy_of(np.array([0, 1, 2] * 3 + [0, 1, 2**40]))
    labels_2_40 = _zip(tmp / "labels_2_40.npz", _good_members(**{"labels.npy": far}))
    huge_labels = _zip(tmp / "huge_labels.npz", _good_members(**{"labels.npy": _npy_bytes((2**40,), "<i8")}))
    big_png = _folder(tmp / "big_png", _png_claiming(tmp / "big.png", 20000, 20000))
    return [
        ("billion laughs", billion_laughs() + GOOD, [], ["space.yaml", "invalid YAML", f"{MAX_YAML_NODES:,}"]),
        ("alias bomb inside config", GOOD.replace("model: {arch: small_cnn}", "model: {arch: *lol9}")
         .replace("name: hostile", billion_laughs() + "name: hostile"), [], ["space.yaml", "alias bomb"]),
        ("mapping bomb", mapping_bomb() + GOOD, [], ["space.yaml", "alias bomb"]),
        ("recursive alias", GOOD.replace("train: {epochs: 3}", "train: &t {epochs: 3, loss: *t}"), [],
         ["space.yaml", "recursive"]),
        ("integer of 5000 digits", GOOD.replace("epochs: 3", "epochs: " + "9" * 5000), [],
         ["space.yaml", "line 8", "cannot read this value"]),
        ("month 13", GOOD + "description: !!timestamp 2001-13-45\n", [], ["space.yaml", "cannot read this value"]),
        ("nested 100000 deep", GOOD + "description: " + "[" * 100_000 + "\n", [], ["space.yaml", "nested too deeply"]),
        ("--set alias bomb", GOOD, ["--set", "train.loss=" + flow_bomb()], ["--set train.loss=[&a0", "not valid YAML"]),
        ("megabyte string value", GOOD.replace("epochs: 3}", "epochs: 3, loss: " + "x" * MIB + "}"),
         [], ["train.loss", "1,048,576 characters"]),
        ("megabyte list value", GOOD.replace("arch: small_cnn", "arch: [" + ", ".join(["1"] * 50_000) + "]"), [],
         ["model.arch", "list of 50,000 items"]),
        ("megabyte choice value", GOOD + "  train.loss: {choice: [" + "y" * MIB + "]}\n", [],
         ["space.train.loss", "1,048,576 characters"]),
        ("megabyte distribution bounds", GOOD.replace("loguniform: [0.01, 0.1]", "uniform: [" + "z" * MIB + ", 1]"),
         [], ["space.optim.lr", "list of 2 items"]),
        ("megabyte key", GOOD + "? " + "k" * MIB + "\n: 1\n", [],
         ["unknown key", "characters cut"]),
        ("megabyte nuisance value", GOOD.replace("test_per_class: 5}", "test_per_class: 5, nuisance: {rotation: "
                                                 + "n" * MIB + "}}"), [], ["data.nuisance.rotation", "characters"]),
        ("--set megabyte value", GOOD, ["--set", "train.epochs=" + "e" * MIB], ["train.epochs", "characters"]),
        ("npz header claiming 10**14 bytes", npz(huge_shape), [], ["huge_shape.npz", "'images'", "header declares"]),
        ("npz header longer than its member", npz(short_member), [], ["short.npz", "'images'", "member holds"]),
        ("npz member declaring 500 MiB from a few bytes", npz(ratio), [], ["ratio.npz", "images.npy", "zip bomb"]),
        ("npz label 2**40", npz(labels_2_40), [], ["labels_2_40.npz", "'labels'", f"{MAX_CLASSES:,} classes"]),
        ("npz labels header of 2**40 entries", npz(huge_labels), [],
         ["huge_labels.npz", "'labels'", "header declares"]),
        ("imagefolder PNG claiming 20000×20000", folder(big_png), [], ["big_png/b/bad.png", f"{MAX_IMAGE_PIXELS:,}"]),
    ]


CLI_CASES = 21


def test_cli_case_count(tmp_path):
    assert len(_cli_cases(tmp_path)) == CLI_CASES


@pytest.mark.parametrize("index", range(CLI_CASES))
def test_hostile_cli_input_one_short_line_exit_2_nothing_written(index, tmp_path, monkeypatch, capsys):
    name, text, extra, needles = _cli_cases(tmp_path)[index]
    space = tmp_path / "space.yaml"
    if text is not None:
        space.write_text(textwrap.dedent(text))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    start = time.monotonic()
    rc = sweep.main(["--space", str(space), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2, (name, err[:500])
    assert len(err.splitlines()) == 1, (name, err[:500])
    assert err.startswith("gitune: error: "), (name, err[:500])
    assert len(err) < 2500, (name, len(err))  # no megabyte messages
    for needle in needles:
        assert needle in err, (name, needle, err)
    assert list(work.iterdir()) == [], name
    assert time.monotonic() - start < 30, name


# ---------------------------------------------------------------------------------------------- YAML bombs


def test_billion_laughs_refused_fast_and_small(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs() + "name: *lol9\n")
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        load_spec(path)
    elapsed = time.monotonic() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    msg = str(err.value)
    assert msg.startswith(f"{path}: invalid YAML") and "alias bomb" in msg and "\n" not in msg
    assert elapsed < 1.0 and peak < 20 * MIB, (elapsed, peak)


def test_safe_load_keeps_shared_small_aliases():
    """Aliases under the bound still load (a space file may reuse a block), and merge keys work."""
    text = "base: &b {lr: 0.1, wd: 5.0e-4}\na: *b\nb: {<<: *b, lr: 0.2}\nc: [*b, *b]\n"
    out = safe_load(text)
    assert out["a"] == {"lr": 0.1, "wd": 5e-4} and out["b"] == {"lr": 0.2, "wd": 5e-4}
    assert safe_load(billion_laughs(levels=5)) is not None  # 9**5 = 59,049 leaves: below the bound


@pytest.mark.parametrize("text, needle", [
    (billion_laughs(), "alias bomb"),
    (mapping_bomb(), "alias bomb"),
    ("a: &x [1, *x]", "recursive"),
    ("a: &x {b: {c: *x}}", "recursive"),
    ("a: " + "1" * 4400, "cannot read this value"),
    ("a: !!timestamp 2001-02-30", "cannot read this value"),
    ("a: " + "{b: " * 5000 + "1" + "}" * 5000, "nested too deeply"),
])
def test_safe_load_refuses_as_yaml_error(text, needle):
    import yaml

    with pytest.raises(yaml.YAMLError) as err:
        safe_load(text)
    problem = getattr(err.value, "problem", None) or str(err.value)
    assert needle in problem


# ---------------------------------------------------------------------------------------------- shown()


def test_shown_cuts_without_building_the_repr():
    assert shown("abc") == "'abc'" and shown([1, (2,), {"a": None}]) == "[1, (2,), {'a': None}]"
    assert shown(set()) == "set()" and shown(1.5) == "1.5" and shown(None) == "None"
    text = shown("x" * 10**7)
    assert len(text) < 260 and text.endswith("… (10,000,000 characters)")
    bomb = ["lol"] * 9
    for _ in range(30):  # 9**31 leaves: a full repr would never finish
        bomb = [bomb] * 9
    start = time.monotonic()
    assert shown(bomb).endswith("… (list of 9 items)") and time.monotonic() - start < 0.1
    assert shown(10**5000) == "… (an integer of 16,610 bits)"  # repr would raise beyond 4300 digits
    loop: list = []
    loop.append(loop)
    assert len(shown(loop)) < 260
    assert shown({"k": b"v" * 1000}, 50).endswith("… (dict of 1 items)")


def test_cut_message_keeps_both_ends():
    msg = "space.yaml: train." + "k" * 10**6 + ": unknown key (expected one of: a, b)"
    cut = cut_message(msg)
    assert len(cut) < 2100 and cut.startswith("space.yaml: train.k") and cut.endswith("(expected one of: a, b)")
    assert cut_message("short") == "short"


# ---------------------------------------------------------------------------------------------- npz


def _npz_error(path: Path, check=True) -> str:
    with pytest.raises(UserError) as err:
        (check_source if check else load_source)(data_cfg(name="npz", path=str(path)))
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 1000 and str(path) in msg
    return msg


@pytest.mark.parametrize("member, payload, needle", [
    ("images.npy", _npy_bytes((10**6, 10**4, 10**4)), "header declares shape (1000000, 10000, 10000)"),
    ("images.npy", _npy_bytes((2**62, 2, 2)), "header declares"),
    ("images.npy", _npy_bytes((100, 32, 32, 3), payload=b"\0" * 100), "member holds"),
    ("images.npy", _npy_bytes((10**5,), "|O"), "header declares"),  # object array bigger than the member
    ("images.npy", _npy_bytes((3, 8, 8), "|O", payload=b"\0" * 1536), "dtype object"),
    ("images.npy", b"not an npy file at all", "not a readable .npy array"),
    ("images.npy", b"\x93NUMPY\x03\x00" + b"\0" * 100, "not a readable .npy array"),
    ("labels.npy", _npy_bytes((2**40,), "<i8"), "header declares shape (1099511627776,)"),
    ("labels.npy", _npy_bytes((12, 2**30), "<i8"), "header declares"),
    ("class_names.npy", _npy_bytes((2**36,), "<U64"), "header declares"),
    ("test_images.npy", _npy_bytes((2**20, 2**10, 2**10)), "header declares"),
])
def test_npz_headers_refused_before_decompressing(tmp_path, member, payload, needle):
    members = _good_members(**{member: payload})
    if member == "test_images.npy":
        members["test_labels.npy"] = _npy_of(np.arange(3))
    path = _zip(tmp_path / "crafted.npz", members)
    msg = _npz_error(path)
    assert needle in msg and repr(member[:-4]) in msg, msg


def test_npz_zip_bombs_refused_by_ratio(tmp_path):
    # declared size patched: 500 MiB from a few hundred deflated bytes
    patched = _zip(tmp_path / "patched.npz", _good_members(), zipfile.ZIP_DEFLATED)
    _declare_size(patched, "labels.npy", 500 * MIB)
    assert "zip bomb" in _npz_error(patched) and "labels.npy" in _npz_error(patched)
    # a real bzip2 bomb: 16 MiB of valid zero images in a few hundred bytes
    real = tmp_path / "bzip2.npz"
    with zipfile.ZipFile(real, "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("images.npy", _npy_of(np.zeros((256, 128, 512), np.uint8)))
        zf.writestr("labels.npy", _npy_of(np.arange(256) % 2))
    assert zipfile.ZipFile(real).getinfo("images.npy").compress_size < 4096
    msg = _npz_error(real)
    assert "images.npy" in msg and f"at most {sources.MAX_ZIP_RATIO}" in msg


def test_npz_size_bounds_are_the_documented_constants(tmp_path, monkeypatch):
    path = _zip(tmp_path / "ok.npz", _good_members(**{"test_images.npy": _npy_of(np.zeros((4, 8, 8), np.uint8)),
                                                     "test_labels.npy": _npy_of(np.arange(4) % 3)}))
    check_source(data_cfg(name="npz", path=str(path)))  # fine under the default bound
    monkeypatch.setattr(sources, "MAX_DATA_BYTES", 1000)  # each array fits, together (1152 bytes) they do not
    assert "the arrays together exceed 1,000 bytes" in _npz_error(path)
    monkeypatch.setattr(sources, "MAX_DATA_BYTES", 500)  # the images member alone (768 + header) is larger
    assert "'images'" in _npz_error(path) and "expected at most 500 bytes" in _npz_error(path)


@pytest.mark.parametrize("labels, needle", [
    (np.array([0, 1, 2] * 3 + [0, 1, 2**40]), "has label 1099511627776"),
    (np.array([0, 1, 2] * 3 + [0, 1, MAX_CLASSES]), f"has label {MAX_CLASSES}"),
    (np.array([0, 1, 2] * 3 + [0, 1, 2**63 + 5], np.uint64), "has label 9223372036854775813"),
    (np.array([0, 1, 2] * 3 + [0, 1, -2**40]), "negative label -1099511627776"),
])
def test_npz_labels_bounded_before_bincount(tmp_path, labels, needle):
    path = _zip(tmp_path / "labels.npz", _good_members(**{"labels.npy": _npy_of(labels)}))
    msg = _npz_error(path, check=False)
    assert needle in msg and "'labels'" in msg and "class indices" in msg


def test_npz_test_labels_bounded(tmp_path):
    members = _good_members(**{"test_images.npy": _npy_of(np.zeros((2, 8, 8), np.uint8)),
                               "test_labels.npy": _npy_of(np.array([0, 2**40]))})
    msg = _npz_error(_zip(tmp_path / "t.npz", members))
    assert "'test_labels'" in msg and f"{MAX_CLASSES:,} classes" in msg


# ---------------------------------------------------------------------------------------------- labels elsewhere


class _Arrays(Dataset):
    """An MNIST-like dataset without a class list (the test sets the arrays)."""

    data = torch.zeros(6, 4, 4, dtype=torch.uint8)
    targets = torch.tensor([0, 1, 0, 1, 0, 2**40])

    def __init__(self, root, train=True, download=False):
        pass

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i].numpy(), mode="L"), int(self.targets[i])


def test_torchvision_inferred_classes_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "HostileArrays", _Arrays, raising=False)
    with pytest.raises(UserError) as err:
        load_source(data_cfg(name="torchvision", dataset="HostileArrays", root=str(tmp_path)))
    msg = str(err.value)
    assert "HostileArrays" in msg and "has label 1099511627776" in msg and f"{MAX_CLASSES:,} classes" in msg


_PLUGIN: dict = {}


def _plugin_source(cfg: dict) -> RawData:
    return _PLUGIN["raw"]


@pytest.mark.parametrize("labels, num_classes, needle", [
    ([0, 1, 2] * 4 + [2**40], 3, "train labels has label 1099511627776 (expected class indices 0..2 for the 3"),
    ([0, 1, 2] * 4 + [-1], 3, "train labels has negative label -1"),
    ([0, 1, 2] * 4 + [2], 10**12, "declares 1000000000000 classes"),
])
def test_any_source_labels_checked_before_the_long_tail(labels, num_classes, needle, monkeypatch):
    monkeypatch.setitem(registry.SOURCES, "hostile_plugin", f"{__name__}:_plugin_source")
    y = torch.tensor(labels)
    _PLUGIN["raw"] = RawData(torch.zeros(len(y), 1, 4, 4, dtype=torch.uint8), y, None, None, num_classes,
                             [str(c) for c in range(3)], False)
    with pytest.raises(UserError) as err:
        build_dataset(data_cfg(name="hostile_plugin"))
    assert needle in str(err.value) and "data.name: hostile_plugin" in str(err.value)


# ---------------------------------------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("maker, name, w, h", [
    (_png_claiming, "bad.png", 20000, 20000),  # beyond 2 × PIL's limit: PIL's DecompressionBombError
    (_png_claiming, "bad.png", 10000, 10000),  # between 1 and 2 × PIL's limit: PIL only warns
    (_png_claiming, "bad.png", 9000, 8000),    # below PIL's limit, above gitune's
    (_png_claiming, "bad.png", 2**31 - 1, 1),
    (_bmp_claiming, "bad.bmp", 30000, 30000),
])
def test_imagefolder_header_size_refused_before_decoding(tmp_path, maker, name, w, h, recwarn):
    bad = maker(tmp_path / name, w, h)
    root = _folder(tmp_path / "folder", bad, name)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        load_source(data_cfg(name="imagefolder", path=str(root)))
    msg = str(err.value)
    assert f"b/{name}" in msg and f"expected at most {MAX_IMAGE_PIXELS:,} pixels" in msg and "\n" not in msg
    assert time.monotonic() - start < 5
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


def test_imagefolder_test_split_image_refused(tmp_path):
    root = tmp_path / "split"
    _folder(root / "train")
    _folder(root / "test", _png_claiming(tmp_path / "big.png", 12000, 12000))
    with pytest.raises(UserError) as err:
        load_source(data_cfg(name="imagefolder", path=str(root)))
    assert "test/b/bad.png" in str(err.value) and "12000×12000" in str(err.value)


def test_imagefolder_counts_and_bytes_bounded(tmp_path, monkeypatch):
    root = _folder(tmp_path / "folder")
    monkeypatch.setattr(sources, "MAX_FOLDER_IMAGES", 5)
    with pytest.raises(UserError) as err:
        check_source(data_cfg(name="imagefolder", path=str(root)))  # the preflight, before any image is opened
    assert "6 image files (expected at most 5)" in str(err.value)
    monkeypatch.setattr(sources, "MAX_FOLDER_IMAGES", 10)
    monkeypatch.setattr(sources, "MAX_DATA_BYTES", 300)  # 6 images of 8×8×3 = 1152 bytes
    with pytest.raises(UserError) as err:
        load_source(data_cfg(name="imagefolder", path=str(root)))
    assert "6 images of 8×8×3 would take 1,152 bytes (expected at most 300" in str(err.value)


# Bad inputs in this file: 21 through the CLI, and below it 1 (load_spec bomb) + 5 YAML documents (besides the two
# bombs also in the CLI list) + 11 crafted .npz headers + 2 zip bombs + 2 size bounds + 5 label arrays + 1
# torchvision dataset + 3 plugin sources + 8 ImageFolders = 59, plus 6 hostile values for shown()/cut_message().
