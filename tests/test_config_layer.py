"""The config layer: every key declared once (gitune.config.KEYS), documents generated from it, no drift."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gitune import config as C
from gitune import config_doc as D
from gitune import spaces as S
from gitune import spec_keys as SK
from gitune.errors import UserError
from gitune.munit_defaults import MUNIT_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
SPACE_FILES = sorted(ROOT.glob("search_spaces/*.yaml")) + sorted(
    p for p in ROOT.glob("sweeps/*.yaml")
    if p.name not in ("cluster.yaml", "rayjob.yaml", "mlflow.yaml"))  # ray up / KubeRay / its MLflow server


def test_each_key_declared_once_with_default_check_and_doc():
    names = [k.name for k in C.KEYS]
    assert len(names) == len(set(names))
    for k in C.KEYS:
        assert isinstance(k.check, C.Check) and k.doc.strip() and "\n" not in k.doc, k.name
        assert k.check.test(k.default), f"{k.name}: its default {k.default!r} fails its own check"
    trial = {k.name for k in C.KEYS if k.group in C.GROUPS}
    gen = {k.name for k in C.KEYS if k.group == "generator"}
    assert trial | gen == set(names)
    # The public tables are derived: the same keys, the same defaults, the same checks.
    assert set(C.flatten(C.DEFAULTS)) == trial
    assert {f"generator.{k}" for k in C.GENERATOR_DEFAULTS} == gen
    assert set(C.schema()) == set(names)
    for k in C.KEYS:
        assert C.schema()[k.name] is k.check
        tree, key = (C.GENERATOR_DEFAULTS, k.name[10:]) if k.group == "generator" else (C.DEFAULTS, k.name)
        assert C.get_dotted(tree, key) == k.default


def test_each_spec_key_declared_once_with_default_check_and_doc():
    names = [k.name for k in SK.SPEC_KEYS]
    assert len(names) == len(set(names))
    for k in SK.SPEC_KEYS:
        assert isinstance(k.check, C.Check) and k.doc.strip() and "\n" not in k.doc, k.name
        assert k.check.test(k.default) == (k.name not in SK.REQUIRED), f"{k.name}: default {k.default!r}"
        assert k.name.rpartition(".")[0] in ("", *names), f"{k.name}: its block is not declared"
    # Derived: the top-level keys, the blocks' defaults, what a file with only a name resolves to.
    assert list(S.TOP_KEYS) == [n for n in names if "." not in n] and S.TOP_KEYS is SK.TOP_KEYS
    assert SK.SUB_DEFAULTS["search"] == {"type": "random", "seed": 0, "max_concurrent": None,
                                         "points_to_evaluate": None}
    spec = S.build_spec({"name": "x", "generator": {}}, "x.yaml")
    for block, defaults in SK.SUB_DEFAULTS.items():
        resolved = {"max_t": C.DEFAULTS["train"]["epochs"]} if block == "scheduler" else {}
        assert getattr(spec, block) == {**defaults, **resolved}, block
    assert spec.generator["search"] == {**SK.GENERATOR_BLOCK["search"], "max_concurrent": None}
    assert spec.generator["resources"] == spec.resources  # null: the classifier trials' resources


HOLD_TRIAL_KEYS = ("config", "space", "generator.config", "generator.space")
LEAF_SPEC_KEYS = [k.name for k in SK.SPEC_KEYS if not SK.children(k.name) and k.name not in HOLD_TRIAL_KEYS]


@pytest.mark.parametrize("key", LEAF_SPEC_KEYS)
def test_each_spec_key_is_checked_by_its_declaration(key):
    raw = {"name": "x"}
    C.set_dotted(raw, key, ["not", "valid"])  # fails every leaf check
    with pytest.raises(UserError) as e:
        S.build_spec(raw, "x.yaml")
    assert str(e.value) == f"x.yaml: {key}: expected {SK.SPEC_KEY_BY_NAME[key].check.expected}, got ['not', 'valid']"


def test_spec_key_schema_comes_from_the_checks():
    props = D.space_schema()["properties"]
    assert props["scheduler"]["properties"]["type"]["enum"] == list(SK.SCHEDULERS)
    assert props["generator"]["properties"]["search"]["properties"]["type"]["enum"] == list(SK.SEARCHERS)
    for k in SK.SPEC_KEYS:
        node = props
        for part in k.name.split("."):
            node = node[part] if node is props else node["properties"][part]
        assert node["description"] == k.doc
        if k.name in LEAF_SPEC_KEYS:
            assert all(node[f] == v for f, v in k.check.json.items()), k.name


def test_defaults_are_copies_not_the_declarations():
    cfg = C.merge_config(None, "x")
    cfg["optim"]["milestones"].append(999)
    assert C.DEFAULTS["optim"]["milestones"] == [160, 180] == C.KEY_BY_NAME["optim.milestones"].default


def test_generator_architecture_defaults_come_from_munit():
    from gitune.models import munit

    assert munit.MUNIT_DEFAULTS is MUNIT_DEFAULTS
    for name, value in MUNIT_DEFAULTS.items():
        assert C.GENERATOR_DEFAULTS[name] == value
    models_src = "".join(p.read_text() for p in (ROOT / "gitune" / "models").glob("*.py"))
    assert "gitune.config" not in models_src and "from gitune import config" not in models_src


def test_names_come_from_the_registry_used_by_the_implementations():
    from gitune import registry
    from gitune.models import MODEL_NAMES
    from gitune.training import LOSSES, RULES
    from gitune.training.git import GIT_SAMPLERS

    assert (MODEL_NAMES, LOSSES, RULES, GIT_SAMPLERS) == (registry.MODEL_NAMES, registry.LOSSES, registry.RULES,
                                                           registry.GIT_SAMPLERS)
    assert C.schema()["train.loss"].json["enum"] == list(LOSSES)


@pytest.mark.parametrize("path,make", [(D.CONFIG_MD, D.markdown_table), (D.SPACE_SCHEMA, D.schema_json)],
                         ids=["config.md", "space.schema.json"])
def test_generated_docs_do_not_drift(path, make):
    assert path.read_text(encoding="utf-8") == make(), (
        f"{path.relative_to(ROOT)} differs from the declarations: run `python -m gitune.config_doc --write`")


def test_config_md_lists_every_key():
    text = D.CONFIG_MD.read_text(encoding="utf-8")
    for k in C.KEYS:
        name = k.name[10:] if k.group == "generator" else k.name
        assert f"| `{name}` |" in text
    for k in SK.SPEC_KEYS:
        assert f"| `{k.name}` |" in text


def test_space_files_name_the_schema():
    assert SPACE_FILES
    for p in SPACE_FILES:
        assert p.read_text().splitlines()[0] == D.SCHEMA_LINE, p
    assert (D.SPACE_SCHEMA.parent / "space.schema.json").exists()


def test_schema_flag_prints_json_schema_fast_without_torch(tmp_path):
    code = ("import sys, runpy; sys.argv = ['gitune.sweep', '--schema']\n"
            "try:\n    runpy.run_module('gitune.sweep', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'imported torch or ray'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert schema == D.space_schema()
    assert set(schema["properties"]) == set(S.TOP_KEYS)
    assert schema["$schema"].startswith("https://json-schema.org/draft/2020-12")
    assert schema["$defs"]["value"]["train.loss"]["enum"] == list(C.schema()["train.loss"].json["enum"])


def _validator():
    import jsonschema

    schema = D.space_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_bundled_spaces_validate_against_the_schema():
    v = _validator()
    for p in SPACE_FILES:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(S.safe_load(p.read_text()))]
        assert not errors, f"{p.name}: {errors}"


@pytest.mark.parametrize("bad", [
    {"name": "x", "config": {"train": {"loss": "hinge"}}},
    {"name": "x", "config": {"trian": {"epochs": 3}}},
    {"name": "x", "space": {"optim.lr": {"uniform": [0.1]}}},
    {"name": "x", "space": {"train.loss": {"uniform": [0, 1]}}},
    {"name": "x", "generator": {"config": {"dimm": 3}}},
    {"name": "x", "scheduler": {"type": "hyperband"}},
    {"name": "x", "unknown_top": 1},
    {"description": "no name"},
])
def test_schema_rejects_what_the_spec_parser_rejects(bad):
    assert list(_validator().iter_errors(bad))
