"""Documents generated from the key declarations (gitune.config.KEYS) and the spec constants (gitune.spaces).

- docs/config.md: one table per config group (key, default, allowed values, doc), from `markdown_table()`;
- docs/space.schema.json: a JSON Schema (draft 2020-12) of a search-space file, from `space_schema()`; editors
  with the YAML language server complete and check keys through the `# yaml-language-server: $schema=...`
  line at the top of every file in search_spaces/ and sweeps/. `python -m gitune.sweep --schema` prints it.

Both files are committed and tests/test_config_layer.py fails when they differ from what these functions
generate: after changing a key, run `python -m gitune.config_doc --write`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gitune import config as C

ROOT = Path(__file__).resolve().parent.parent
CONFIG_MD = ROOT / "docs" / "config.md"
SPACE_SCHEMA = ROOT / "docs" / "space.schema.json"
SCHEMA_LINE = "# yaml-language-server: $schema=../docs/space.schema.json"

GROUP_TITLES = {
    "data": "data: the dataset, its long tail and its nuisance",
    "model": "model: the classifier",
    "optim": "optim: SGD and the LR schedule",
    "train": "train: loss, rule, augmentation and compute",
    "aug": "aug: the oracle augmentation",
    "git": "git: generative invariance transfer",
    "eval": "eval: evaluation and invariance metrics",
    "generator": "generator: the generator stage (`generator.config` / `generator.space` of a space file, "
                 "keys without the `generator.` prefix)",
}


def _yaml_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table() -> str:
    """docs/config.md: every key of KEYS, grouped, with its default, allowed values and doc."""
    lines = ["# Config keys and defaults", "",
             "Generated from `gitune/config.py` (`KEYS`) by `python -m gitune.config_doc --write`; do not edit by "
             "hand. A space file sets them under `config:` (fixed, nested by group) or `space:` (tuned, dotted "
             "keys); `python -m gitune.sweep --schema` prints the JSON Schema of a space file "
             "([space.schema.json](space.schema.json)).", ""]
    for group in (*C.GROUPS, "generator"):
        keys = [k for k in C.KEYS if k.group == group]
        lines += [f"## {GROUP_TITLES.get(group, group)}", "", "| key | default | allowed values | meaning |",
                  "| --- | --- | --- | --- |"]
        for k in keys:
            name = k.name.split(".", 1)[1] if group == "generator" else k.name
            lines.append(f"| `{name}` | `{_yaml_value(k.default)}` | {_cell(k.check.expected)} | {_cell(k.doc)} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------- JSON Schema of a search-space file

def _numbers(n: int, kind: str = "number") -> dict[str, Any]:
    return {"type": "array", "items": {"type": kind}, "minItems": n, "maxItems": n}


def _distributions() -> dict[str, Any]:
    """A tuned key's value: exactly one distribution (gitune.spaces.DISTRIBUTIONS) with its arguments."""
    values = {"type": "array", "minItems": 1}
    return {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
            "properties": {"uniform": _numbers(2), "loguniform": _numbers(2), "quniform": _numbers(3),
                           "randint": _numbers(2, "integer"), "choice": values, "grid": values}}


def _distribution(key: C.Key) -> dict[str, Any]:
    """One tuned key: one distribution whose values the key's check allows (numeric ones for numbers only)."""
    values = {"items": {"$ref": f"#/$defs/value/{key.name}"}}
    out: dict[str, Any] = {"$ref": "#/$defs/distribution", "properties": {"choice": values, "grid": values}}
    if key.check.numeric is None:
        out["propertyNames"] = {"enum": ["choice", "grid"]}
    return out


def _value(key: C.Key) -> dict[str, Any]:
    return {"description": key.doc, "default": key.default, **key.check.json}


def _object(props: dict[str, Any], description: str | None = None, nullable: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": ["object", "null"] if nullable else "object", "properties": props,
                           "additionalProperties": False}
    return {"description": description, **out} if description else out


def _config_tree(groups: tuple[str, ...], strip: str = "") -> dict[str, Any]:
    """The nested `config:` mapping: group → key (→ sub-key), each leaf a $ref to its value schema."""
    tree: dict[str, Any] = {}
    for k in C.KEYS:
        if k.group in groups:
            C.set_dotted(tree, k.name[len(strip):], {"$ref": f"#/$defs/value/{k.name}"})

    def build(node: dict[str, Any]) -> dict[str, Any]:
        return _object({name: sub if "$ref" in sub else build(sub) for name, sub in node.items()})

    return build(tree)


def space_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a search-space file: its top-level keys (gitune.spaces.TOP_KEYS),
    their blocks with the defaults of SUB_DEFAULTS / GENERATOR_BLOCK, and every config key with the allowed
    values of its check. Cross-key rules (GIT needs a generator, grid search needs finite values, ...) are
    checked by `--dry-run`, not here."""
    from gitune import spaces as S

    T, sub, gb = S.TOP_KEYS, S.SUB_DEFAULTS, S.GENERATOR_BLOCK
    trial = [k for k in C.KEYS if k.group in C.GROUPS]
    gen = [k for k in C.KEYS if k.group == "generator"]
    int_or_null = {"type": ["integer", "null"]}
    search = {"type": {"enum": list(S.SEARCHERS), "default": sub["search"]["type"]},
              "seed": {**int_or_null, "minimum": 0, "default": sub["search"]["seed"]}}
    resources = {"cpu": {"type": "number", "exclusiveMinimum": 0, "default": sub["resources"]["cpu"]},
                 "gpu": {"type": "number", "minimum": 0, "maximum": 1, "default": sub["resources"]["gpu"]}}
    props: dict[str, Any] = {
        "name": {"description": T["name"], "type": "string", "minLength": 1, "pattern": "^[^/]*$"},
        "description": {"description": T["description"], "type": "string"},
        "trainable": {"description": T["trainable"], "enum": list(S.TRAINABLES), "default": "classifier"},
        "metric": {"description": T["metric"], "default": "val/bal_acc",
                   "anyOf": [{"enum": list(S.EPOCH_METRICS)},
                             {"type": "string", "pattern": "^val/class_acc/c[0-9]+$"}]},
        "mode": {"description": T["mode"], "enum": ["max", "min"], "default": "max"},
        "num_samples": {"description": T["num_samples"], "type": "integer", "minimum": 1, "default": 1},
        "scheduler": _object({
            "type": {"enum": list(S.SCHEDULERS), "default": sub["scheduler"]["type"]},
            "max_t": {**int_or_null, "minimum": 1, "default": sub["scheduler"]["max_t"],
                      "description": "in epochs (null: train.epochs)"},
            "grace_period": {"type": "integer", "minimum": 1, "default": sub["scheduler"]["grace_period"]},
            "reduction_factor": {"type": "number", "exclusiveMinimum": 1,
                                 "default": sub["scheduler"]["reduction_factor"]}}, T["scheduler"], nullable=True),
        "search": _object({**search, "max_concurrent": {**int_or_null, "minimum": 1,
                                                        "default": sub["search"]["max_concurrent"]}},
                          T["search"], nullable=True),
        "resources": _object(resources, T["resources"], nullable=True),
        "checkpoint": _object({"num_to_keep": {**int_or_null, "minimum": 1,
                                               "default": sub["checkpoint"]["num_to_keep"]}},
                              T["checkpoint"], nullable=True),
        "failure": _object({"max_failures": {"type": "integer", "minimum": -1,
                                             "default": sub["failure"]["max_failures"]}},
                           T["failure"], nullable=True),
        "generator": _object({
            "checkpoint": {"type": ["string", "null"], "default": gb["checkpoint"],
                           "description": "a generator.pt file/folder or runs:/<run_id>: skips pretraining"},
            "num_samples": {"type": "integer", "minimum": 1, "default": gb["num_samples"]},
            "metric": {"enum": [*S.GENERATOR_METRICS, None], "default": gb["metric"],
                       "description": "null: fid/nuisance_ed with a data.nuisance, else fid/style_x_content"},
            "mode": {"enum": ["max", "min", None], "default": gb["mode"],
                     "description": "null: the metric's own"},
            "search": _object(search),
            "resources": _object(resources, "null: the classifier trials' resources", nullable=True),
            "config": {**_config_tree(("generator",), "generator."), "type": ["object", "null"],
                       "description": "generator keys without the `generator.` prefix (docs/config.md)"},
            "space": {"type": ["object", "null"], "additionalProperties": False,
                      "description": "tuned generator keys, without the prefix",
                      "properties": {k.name.split(".", 1)[1]: {"$ref": f"#/$defs/tuned/{k.name}"} for k in gen}},
        }, T["generator"], nullable=True),
        "config": {**_config_tree(C.GROUPS), "type": ["object", "null"], "description": T["config"]},
        "space": {"description": T["space"] + ": dotted config keys → one distribution",
                  "type": ["object", "null"], "additionalProperties": False,
                  "properties": {k.name: {"$ref": f"#/$defs/tuned/{k.name}"} for k in trial}},
    }
    assert set(props) == set(T), "gitune.spaces.TOP_KEYS changed: describe the new key here"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gitune search-space file",
        "description": "Generated by gitune.config_doc (python -m gitune.sweep --schema); see docs/config.md.",
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": props,
        "$defs": {"distribution": _distributions(), "value": {k.name: _value(k) for k in C.KEYS},
                  "tuned": {k.name: _distribution(k) for k in C.KEYS}},
    }


def schema_json() -> str:
    return json.dumps(space_schema(), indent=2, ensure_ascii=False) + "\n"


class PrintSchema(argparse.Action):
    """`--schema`: print the JSON Schema of a space file and exit 0 (like --version: no other argument needed)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        sys.stdout.write(schema_json())
        parser.exit(0)


def generated() -> dict[Path, str]:
    return {CONFIG_MD: markdown_table(), SPACE_SCHEMA: schema_json()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gitune.config_doc", description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="write docs/config.md and docs/space.schema.json")
    args = p.parse_args(argv)
    for path, text in generated().items():
        if args.write:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
