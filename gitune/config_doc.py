"""Documents generated from the key declarations: trial keys (gitune.config.KEYS) and spec keys (gitune.spec_keys).

- docs/config.md: one table per config group and one of the space file's own keys (key, default, allowed
  values, doc), from `markdown_table()`;
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
from gitune import spec_keys as SK

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
    if v == "":
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_yaml_value(x) for x in v) + "]"
    return str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(name: str, key: C.Key) -> str:
    default = "(required)" if key.name in SK.REQUIRED else f"`{_yaml_value(key.default)}`"
    return f"| `{name}` | {default} | {_cell(key.check.expected)} | {_cell(key.doc)} |"


def markdown_table() -> str:
    """docs/config.md: every key of KEYS, grouped, then the space file's own keys (SPEC_KEYS), each with its
    default, allowed values and doc."""
    lines = ["# Config keys and defaults", "",
             "Generated from `gitune/config.py` (`KEYS`) and `gitune/spec_keys.py` (`SPEC_KEYS`) by "
             "`python -m gitune.config_doc --write`; do not edit by hand. A space file sets them under `config:` (fixed, nested by group) or `space:` (tuned, dotted "
             "keys); `python -m gitune.sweep --schema` prints the JSON Schema of a space file "
             "([space.schema.json](space.schema.json)).", ""]
    for group in (*C.GROUPS, "generator"):
        keys = [k for k in C.KEYS if k.group == group]
        lines += [f"## {GROUP_TITLES.get(group, group)}", "", "| key | default | allowed values | meaning |",
                  "| --- | --- | --- | --- |"]
        for k in keys:
            name = k.name.split(".", 1)[1] if group == "generator" else k.name
            lines.append(_row(name, k))
        lines.append("")
    lines += ["## the space file: the sweep's own keys", "",
              "Top level and blocks (a block left out or null takes the defaults of its keys); `config`, `space` "
              "and `generator.config` / `generator.space` hold the keys above.", "",
              "| key | default | allowed values | meaning |", "| --- | --- | --- | --- |"]
    lines += [_row(k.name, k) for k in SK.SPEC_KEYS] + [""]
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


def _trees() -> dict[str, dict[str, Any]]:
    """The spec keys that hold trial keys: the config trees and the spaces of tuned keys."""
    def tuned(keys: list[C.Key], strip: str = "") -> dict[str, Any]:
        return {"type": ["object", "null"], "additionalProperties": False,
                "properties": {k.name[len(strip):]: {"$ref": f"#/$defs/tuned/{k.name}"} for k in keys}}

    gen = [k for k in C.KEYS if k.group == "generator"]
    return {"config": {**_config_tree(C.GROUPS), "type": ["object", "null"]},
            "space": tuned([k for k in C.KEYS if k.group in C.GROUPS]),
            "generator.config": {**_config_tree(("generator",), "generator."), "type": ["object", "null"]},
            "generator.space": tuned(gen, "generator.")}


def _spec_node(key: C.Key, trees: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A spec key's schema: a block is an object of its own keys, any other key its check's JSON."""
    own = SK.children(key.name)
    if key.name in trees:
        node = trees[key.name]
    elif own:
        node = _object({name: _spec_node(k, trees) for name, k in own.items()}, nullable=True)
    else:
        node = {**({} if key.name in SK.REQUIRED else {"default": key.default}), **key.check.json}
    return {"description": key.doc, **node}


def space_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a search-space file: its own keys (gitune.spec_keys.SPEC_KEYS) with
    their defaults and checks, and every config key with the allowed values of its check. Cross-key rules
    (GIT needs a generator, grid search needs finite values, ...) are checked by `--dry-run`, not here."""
    trees = _trees()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "gitune search-space file",
        "description": "Generated by gitune.config_doc (python -m gitune.sweep --schema); see docs/config.md.",
        "type": "object",
        "required": list(SK.REQUIRED),
        "additionalProperties": False,
        "properties": {name: _spec_node(k, trees) for name, k in SK.children("").items()},
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
