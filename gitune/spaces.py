"""Search-space files: YAML → validated SweepSpec → Ray Tune param space.

Everything a trial will read is validated here, on the driver, before Ray starts: fixed values and
every value a distribution can sample. Each error names the file and the key. Ray is imported only
by `param_space`/`search_algorithm`, so `--dry-run` and error paths stay fast.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitune import config as C
from gitune.errors import UserError, shown
from gitune.spec_keys import GENERATOR_METRICS, SPEC_KEY_BY_NAME, SUB_DEFAULTS, TOP_KEYS, children

class _Loader(yaml.SafeLoader):
    """safe_load, plus YAML 1.2 floats: PyYAML (YAML 1.1) reads `1e-3` or `5.0e39` as strings."""

    def construct_object(self, node, deep=False):
        """A value Python cannot hold (an integer of 5,000 digits, month 13) is a YAML error at its line, not
        a traceback."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as err:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read this value ({_first_line(err)})",
                                                    node.start_mark) from None


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


MAX_YAML_NODES = 100_000  # nodes of one document with its aliases expanded; a space file has a few hundred


def safe_load(text: str):
    """yaml.safe_load with _Loader's floats, refusing (as a YAMLError) a document whose aliases expand to more
    than MAX_YAML_NODES nodes (a "billion laughs" bomb), a recursive alias, or nesting deeper than Python's
    stack: checked on the composed node graph, before any Python object is built."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("the document is nested too deeply (expected a search-space file)") from None
    finally:
        loader.dispose()


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _expanded_size(node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Nodes under `node` with every alias expanded (an alias is the node it names, shared, so each node is
    measured once and the expansion is never built); refuses a total above MAX_YAML_NODES or an alias inside
    the node it names."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it (expected "
                                          "no recursive structures in a search-space file)", node.start_mark)
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    total = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    if total > MAX_YAML_NODES:
        raise yaml.composer.ComposerError(None, None, f"with its aliases expanded the document has more than "
                                          f"{MAX_YAML_NODES:,} values (an alias bomb? expected a search-space "
                                          f"file of at most that size)", node.start_mark)
    open_nodes.discard(key)
    sizes[key] = total
    return total


DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice", "grid")
NUISANCE_METRICS = ("fid/nuisance_ed", "fid/nuisance_ed_feat")


@dataclass
class SweepSpec:
    """A validated sweep: what to run, how to schedule it, which keys are fixed and which tuned."""

    name: str
    trainable: str
    metric: str
    mode: str
    num_samples: int
    scheduler: dict[str, Any]
    search: dict[str, Any]
    resources: dict[str, Any]
    checkpoint: dict[str, Any]
    failure: dict[str, Any]
    config: dict[str, Any]
    space: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    generator: dict[str, Any] | None = None  # the validated `generator:` block (gitune.spec_keys)
    time_budget_s: float | None = None  # Tune's TuneConfig(time_budget_s); None: no limit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The space files that come with gitune: found beside the package (a checkout or an editable install), not in
# the working directory, so `--list` and the suggestions for a mistyped --space work from any folder.
SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


def bundled_spaces() -> list[Path]:
    """The bundled search-space files (search_spaces/*.yaml), sorted by name; none outside a checkout."""
    return sorted(SPACES_DIR.glob("*.yaml")) if SPACES_DIR.is_dir() else []


def shown_path(path: Path) -> str:
    """A bundled file as the user would type it: relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def missing_space(given: str) -> str:
    """The one-line message for a --space file that is not there, with the closest bundled files (difflib)."""
    import difflib

    path = Path(given)
    what = "a folder, not a file" if path.is_dir() else "no such file"
    files = bundled_spaces()
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    near = difflib.get_close_matches(stem, [f.stem for f in files], n=3, cutoff=0.5)
    listing = "python -m gitune.sweep --list"
    if near:
        names = ", ".join(shown_path(SPACES_DIR / f"{n}.yaml") for n in near)
        return f"{given}: {what}; did you mean {names}? ({listing} shows them all)"
    return f"{given}: {what} (expected a YAML search-space file; {listing} shows the bundled ones)"


def space_listing() -> str:
    """`--list`: every bundled space file with the first line of its description."""
    files = bundled_spaces()
    if not files:
        return f"no bundled search-space files (expected them in {SPACES_DIR})\n"
    rows = []
    for f in files:
        try:
            raw = safe_load(f.read_text())
            text = raw.get("description") if isinstance(raw, dict) else None
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            text = "(unreadable)"
        first = str(text).strip().splitlines()[0] if text and str(text).strip() else ""
        rows.append((shown_path(f), first))
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name:<{width}}  {first}".rstrip() + "\n" for name, first in rows)


def load_spec(path: str | Path, overrides: list[str] = (), num_samples: int | None = None,
              name: str | None = None) -> SweepSpec:
    """Read, merge overrides into and validate a space file. Raises UserError on any mistake."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError(missing_space(where))
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: invalid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a text file (expected a YAML search-space file)") from None
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    if num_samples is not None:
        raw["num_samples"] = num_samples
    if name is not None:
        check_name(name, "--name")
        raw["name"] = name
    return build_spec(raw, where)


def check_name(name: Any, where: str) -> None:
    """The sweep name (a folder under --storage, see spec_keys._plain_name), from the file or --name."""
    chk = SPEC_KEY_BY_NAME["name"].check
    if not chk.test(name):
        raise UserError(f"{where}: expected {chk.expected}, got {shown(name)}")


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`--set key=value`: a spec key (scheduler.max_t=5), a config key (train.epochs=5) or a tuned key
    (space.train.seed='{grid: [0, 1, 2]}': adds or replaces that entry of `space`; see _set_space).

    A config key that is also tuned in `space` is pinned: the override wins and the key leaves the space.
    """
    if "=" not in item:
        raise UserError(f"--set {item}: expected KEY=VALUE, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {item}: the value is not valid YAML") from None
    top = key.split(".")[0]
    if top in C.GROUPS:
        C.check_key(key, f"--set {key}")
        _set_in(raw, "config", key, value)
        space = raw.get("space")
        if isinstance(space, dict) and key in space:
            space.pop(key)
            _unpin_points(raw, key)
    elif top not in TOP_KEYS:
        raise UserError(f"--set {key}: unknown key (expected a spec key ({', '.join(TOP_KEYS)}) "
                        f"or a config key under {', '.join(C.GROUPS)})")
    elif top == "space" and "." in key:
        _set_space(raw, key.split(".", 1)[1], value)
    elif "." in key:
        _set_in(raw, top, key.split(".", 1)[1], value)
    else:
        raw[key] = value


def _unpin_points(raw: dict[str, Any], key: str) -> None:
    """A tuned key pinned or untuned by --set leaves `search.points_to_evaluate` too: the value given on the
    command line applies to every trial, the recipe's points included (else each point would be refused)."""
    search = raw.get("search")
    points = search.get("points_to_evaluate") if isinstance(search, dict) else None
    if isinstance(points, list):
        search["points_to_evaluate"] = [{k: v for k, v in p.items() if k != key} if isinstance(p, dict) else p
                                        for p in points]


def _set_space(raw: dict[str, Any], key: str, dist: Any) -> None:
    """`--set space.train.seed='{grid: [0, 1, 2]}'`: the space's keys are dotted config keys, so everything
    after `space.` is one key (not a nested path). Adds or replaces that entry, checked like a space file's;
    an empty value or null removes it (the fixed config value applies again). The fixed value stays in
    `config` as the default the space shadows."""
    space = raw.get("space")
    if space is None:
        space = raw["space"] = {}
    if not isinstance(space, dict):
        raise UserError(f"--set space.{key}: 'space' in the file is not a mapping of config keys to distributions")
    if dist is None:
        if space.pop(key, None) is not None:
            _unpin_points(raw, key)
        return
    try:
        _parse_space({key: dist}, "--set")
    except UserError as e:
        raise UserError(str(e).replace("--set: ", "--set ", 1)) from None
    space[key] = dist


def _set_in(raw: dict[str, Any], block: str, key: str, value: Any) -> None:
    if raw.get(block) is None:
        raw[block] = {}
    try:
        C.set_dotted(raw[block], key, value)
    except (AttributeError, TypeError):
        raise UserError(f"--set {block}.{key}: '{block}' in the file is not a mapping down to that key") from None


def build_spec(raw: dict[str, Any], where: str) -> SweepSpec:
    top = _block(raw, "", where)
    subs = {k: _block(top[k], k, where) for k in SUB_DEFAULTS}
    cfg = C.merge_config(top["config"], f"{where}: config")
    space = _parse_space(top["space"], where)
    C.validate_config(cfg, f"{where}: config", tuned=set(space))
    _check_shadowed(cfg, space, where)
    _check_subs(subs, cfg, space, where)
    generator = _generator_block(top["generator"], subs["resources"], where,
                                 has_nuisance=_has_nuisance(cfg, space))
    spec = SweepSpec(name=top["name"].strip(), trainable=top["trainable"], metric=top["metric"], mode=top["mode"],
                     num_samples=top["num_samples"], config=cfg, space=space, description=top["description"],
                     source=where, generator=generator, time_budget_s=top["time_budget_s"], **subs)
    _check_space_sample(spec, where)
    _check_points(spec, where)
    _check_git(spec, where)
    return spec


def _block(block: Any, name: str, where: str) -> dict[str, Any]:
    """One block of the file (name '': the file itself) against its declared keys (gitune.spec_keys): an
    unknown key is an error, a missing one takes its default, every value must pass its key's check. A nested
    block comes back as given, for its caller to parse (its values need rules of their own)."""
    keys = children(name)
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise UserError(f"{where}: {name + ': ' if name else ''}expected a mapping with keys {', '.join(keys)}, "
                        f"got {shown(block)}")
    prefix = f"{name}." if name else ""
    for k in block:
        if k not in keys:
            raise UserError(f"{where}: {prefix}{k}: unknown key (expected one of: {', '.join(keys)})")
    out = {}
    for k, key in keys.items():
        value = copy.deepcopy(block.get(k, key.default))
        if not key.check.test(value):
            raise UserError(f"{where}: {key.name}: expected {key.check.expected}, got {shown(value)}")
        out[k] = value
    return out


def _check_shadowed(cfg: dict[str, Any], space: dict[str, Any], where: str) -> None:
    """A fixed value that a tuned key shadows is still checked (validate_config skips tuned keys for its
    cross-key rules): a typo there would otherwise pass until the key is pinned or leaves the space."""
    for key in space:
        chk = C.schema()[key]
        value = C.get_dotted(cfg, key)
        if not chk.test(value):
            raise UserError(f"{where}: config.{key}: expected {chk.expected}, got {shown(value)} (the fixed value "
                            f"that space.{key} shadows is still checked)")


def _has_nuisance(cfg: dict[str, Any], space: dict[str, Any]) -> bool:
    """Whether the data carries a known nuisance T (a tuned one counts: _check_git rejects it later)."""
    return C.has_nuisance(cfg) or any(k.startswith("data.nuisance.") for k in space)


def _generator_metric(out: dict[str, Any], has_nuisance: bool, w: str) -> None:
    """Fill metric and mode: by default the fidelity to the true nuisance when the data has one (else the
    style × content proxy); a metric given without a mode brings its own mode."""
    metric = out["metric"] or ("fid/nuisance_ed" if has_nuisance else "fid/style_x_content")
    if metric in NUISANCE_METRICS and not has_nuisance:
        raise UserError(f"{w}.metric: {metric} compares the generator with the data's true nuisance, but "
                        f"config.data.nuisance sets none (use fid/style_x_content)")
    out["metric"], out["mode"] = metric, out["mode"] or GENERATOR_METRICS[metric]


def _generator_block(block: Any, resources: dict[str, Any], where: str,
                     has_nuisance: bool = False) -> dict[str, Any] | None:
    """The `generator:` block: a checkpoint to use, or the config (and optional small space) to pretrain."""
    if block is None:
        return None
    w = f"{where}: generator"
    out = _block(block, "generator", where)
    _generator_metric(out, has_nuisance, w)
    out["search"] = {**_block(out["search"], "generator.search", where), "max_concurrent": None}
    own = _block(out["resources"], "generator.resources", where)
    out["resources"] = {k: resources[k] if v is None else v for k, v in own.items()}
    out["config"] = C.merge_generator_config(out["config"], f"{w}.config")
    prefixed = {f"generator.{k}": v for k, v in (out["space"] or {}).items()}
    out["space"] = _parse_space(prefixed or None, where, groups=("generator",))
    for key, dist in out["space"].items():
        if out["search"]["type"] == "optuna" and "grid" in dist:
            raise UserError(f"{where}: space.{key}: Optuna cannot take 'grid'; use 'choice'")
    return out


def _values(spec: SweepSpec, key: str) -> list[Any]:
    """The fixed value of a key, or the values (bounds) its distribution can produce."""
    return [C.get_dotted(spec.config, key)] if key not in spec.space else _values_or_bounds(spec.space[key], key)


def _check_git(spec: SweepSpec, where: str) -> None:
    """GIT needs a generator and the oracle a nuisance (the trial checks the same rule on its sampled values);
    a generator is trained on one data config, so data keys cannot be tuned."""
    C.check_augmentation_sources(_values(spec, "git.prob"), _values(spec, "aug.oracle_prob"),
                                 spec.generator is not None, _has_nuisance(spec.config, spec.space), where)
    if spec.generator is None:
        return
    tuned_data = sorted(k for k in spec.space if k.startswith("data."))
    if tuned_data:
        raise UserError(f"{where}: space.{tuned_data[0]}: the generator is trained once on config.data, so data "
                        f"keys cannot be tuned in a sweep with a `generator:` block; run one sweep per data config")


def _check_subs(subs: dict[str, dict[str, Any]], cfg: dict[str, Any], space: dict, where: str) -> None:
    """The rules between keys (the values passed their own checks in _block): ASHA's rungs within the epochs
    a trial runs, and the distributions each searcher can take."""
    sch = subs["scheduler"]
    epochs = cfg["train"]["epochs"]
    if sch["max_t"] is None:
        sch["max_t"] = (epochs if "train.epochs" not in space
                        else max(_values_or_bounds(space["train.epochs"], "train.epochs")))
    if sch["grace_period"] > sch["max_t"]:
        raise UserError(f"{where}: scheduler.grace_period: expected an integer from 1 to scheduler.max_t "
                        f"({sch['max_t']}), got {shown(sch['grace_period'])}")
    if "train.epochs" not in space and sch["max_t"] > epochs:
        # ASHA counts epochs: a shorter run (e.g. --set train.epochs=5) shrinks the rungs with it.
        sch["max_t"] = epochs
        sch["grace_period"] = min(sch["grace_period"], epochs)
    search = subs["search"]["type"]
    for key, dist in space.items():
        kind = next(iter(dist))
        if search == "optuna" and kind == "grid":
            raise UserError(f"{where}: space.{key}: Optuna cannot take 'grid'; use 'choice' or search.type: grid")
        if search == "grid" and kind not in ("grid", "choice"):
            raise UserError(f"{where}: space.{key}: search.type grid needs finite values "
                            f"('grid' or 'choice'), got '{kind}'")


def _parse_space(space: Any, where: str, groups: tuple[str, ...] = C.GROUPS) -> dict[str, dict[str, list[Any]]]:
    if space is None:
        return {}
    if not isinstance(space, dict):
        raise UserError(f"{where}: space: expected a mapping of dotted config keys to distributions")
    out: dict[str, dict[str, list[Any]]] = {}
    for key, dist in space.items():
        w = f"{where}: space.{key}"
        key = str(key)
        chk = C.check_key(key, w, groups)
        if not isinstance(dist, dict) or len(dist) != 1:
            raise UserError(f"{w}: expected one distribution, e.g. {{uniform: [0.0, 0.8]}} "
                            f"(one of: {', '.join(DISTRIBUTIONS)})")
        kind, args = next(iter(dist.items()))
        if kind not in DISTRIBUTIONS:
            raise UserError(f"{w}: unknown distribution '{kind}' (expected one of: {', '.join(DISTRIBUTIONS)})")
        if not isinstance(args, list) or not args:
            raise UserError(f"{w}.{kind}: expected a non-empty list, got {shown(args)}")
        if kind in ("choice", "grid"):
            for v in args:
                if not chk.test(v):
                    raise UserError(f"{w}.{kind}: value {shown(v)} is not allowed for {key} (expected {chk.expected})")
                if isinstance(v, (list, dict)) and kind == "choice":
                    raise UserError(f"{w}.choice: values must be numbers or strings (use 'grid' for lists)")
        else:
            _check_numeric(kind, args, key, chk, w)
        out[key] = {kind: list(args)}
    return out


def _check_numeric(kind: str, args: list[Any], key: str, chk: C.Check, w: str) -> None:
    n = 3 if kind == "quniform" else 2
    if len(args) != n or not all(C._is_num(a) for a in args):
        shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
        raise UserError(f"{w}.{kind}: expected {shape} numbers, got {shown(args)}")
    if chk.numeric is None:
        raise UserError(f"{w}.{kind}: {key} is not numeric (expected {chk.expected}); use choice")
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise UserError(f"{w}.{kind}: expected low < high, got [{shown(lo)}, {shown(hi)}]")
    if kind == "loguniform" and lo <= 0:
        raise UserError(f"{w}.loguniform: bounds must be > 0, got [{shown(lo)}, {shown(hi)}]")
    if kind == "quniform" and args[2] <= 0:
        raise UserError(f"{w}.quniform: q must be > 0, got {shown(args[2])}")
    if kind == "quniform" and chk.numeric == "float" and not all(
            math.isclose(b / args[2], round(b / args[2])) for b in (lo, hi)):
        raise UserError(f"{w}.quniform: Ray Tune needs low and high to be multiples of q, got {shown(args)}")
    if chk.numeric == "int" and kind != "randint" and not (kind == "quniform" and float(args[2]).is_integer()
                                                            and float(lo).is_integer()):
        raise UserError(f"{w}.{kind}: {key} takes integers; use randint, choice or quniform with integer q")
    if kind == "randint" and not (C._is_int(lo) and C._is_int(hi)):
        raise UserError(f"{w}.randint: expected integer bounds [low, high) , got {shown(args)}")
    if kind == "quniform" and chk.numeric == "int":
        low_value, high_value = _values_or_bounds({kind: args}, key)
        if low_value > high_value:
            raise UserError(f"{w}.quniform: no multiple of q={shown(args[2])} lies in [{shown(lo)}, {shown(hi)}]")
    top = hi - 1 if kind == "randint" else hi
    for bound in (lo, top):
        value = int(bound) if chk.numeric == "int" else float(bound)
        if not chk.test(value):
            raise UserError(f"{w}.{kind}: bound {shown(bound)} is out of range for {key} (expected {chk.expected})")


def _values_or_bounds(dist: dict[str, list[Any]], key: str | None = None) -> list[Any]:
    """The values a distribution can produce (choice, grid), or the lowest and highest it can produce: never
    its raw arguments (a q-distribution's third argument is the step q, not a value).

    As param_space builds them with Ray Tune: randint [low, high) → high − 1; q-distributions ([low, high, q])
    sample the multiples of q between the bounds, both included. Given the key, an integer key's values come
    back as ints.
    """
    kind, args = next(iter(dist.items()))
    if kind in ("choice", "grid"):
        return list(args)
    is_int = kind in ("randint", "qrandint") or (key is not None and key in C.schema()
                                                   and C.schema()[key].numeric == "int")
    lo, hi = args[0], args[1]
    if kind == "randint":
        hi = hi - 1
    elif kind.startswith("q") and len(args) == 3:
        q = args[2]
        lo, hi = _on_grid(lo, q, math.ceil), _on_grid(hi, q, math.floor)
    return [int(lo), int(hi)] if is_int else [lo, hi]


def _on_grid(bound: float, q: float, round_fn) -> float:
    """The multiple of q nearest to bound, rounded inwards (as Ray's Quantized does); bound itself when on it."""
    scaled = bound / q
    return bound if math.isclose(scaled, round(scaled)) else round_fn(scaled) * q


def _check_points(spec: SweepSpec, where: str) -> None:
    """`search.points_to_evaluate`: configs the searcher tries first (e.g. the paper's recipe). Each point maps
    tuned keys to values their distributions can produce (Optuna: every tuned key, as it enqueues whole
    trials); the rest of a random-search point is sampled. Checked like a sampled config, cross-key rules too."""
    points = spec.search.get("points_to_evaluate")
    if not points:
        return
    kind = spec.search["type"]
    if kind == "grid":
        raise UserError(f"{where}: search.points_to_evaluate: search.type grid runs every grid point already; "
                        f"use random or optuna")
    if len(points) > spec.num_samples:
        raise UserError(f"{where}: search.points_to_evaluate: {len(points)} points but num_samples is "
                        f"{spec.num_samples} (each point is one of the trials; raise num_samples, or drop "
                        f"the points with --set search.points_to_evaluate=null)")
    for i, point in enumerate(points):
        w = f"{where}: search.points_to_evaluate[{i}]"
        for key, value in point.items():
            if key not in spec.space:
                tuned = ", ".join(spec.space) or "none"
                raise UserError(f"{w}.{key}: not a tuned key (expected keys of `space`: {tuned})")
            _check_point_value(spec.space[key], key, value, f"{w}.{key}")
        missing = [k for k in spec.space if k not in point]
        if kind == "optuna" and missing:
            raise UserError(f"{w}: Optuna needs a value for every tuned key; missing {', '.join(missing)}")
        cfg = copy.deepcopy(spec.config)
        for key, value in point.items():
            C.set_dotted(cfg, key, value)
        C.validate_config(cfg, f"{w} →", tuned=set(missing))


def _check_point_value(dist: dict[str, list[Any]], key: str, value: Any, w: str) -> None:
    """A point's value must be one its distribution can produce: a listed value, or a number within the bounds
    (an integer for integer keys, on the grid of a q-distribution)."""
    kind, args = next(iter(dist.items()))
    chk = C.schema()[key]
    if kind in ("choice", "grid"):
        if not any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in args):
            raise UserError(f"{w}: expected one of the values of space.{key} "
                            f"({', '.join(shown(v) for v in args)}), got {shown(value)}")
        return
    lo, hi = _values_or_bounds(dist, key)
    if not (C._is_num(value) and chk.test(value) and lo <= value <= hi):
        raise UserError(f"{w}: expected a number from {shown(lo)} to {shown(hi)} (space.{key}: {kind} "
                        f"{shown(args)}), got {shown(value)}")
    if (chk.numeric == "int" or kind == "randint") and not C._is_int(value):
        raise UserError(f"{w}: expected an integer (space.{key}: {kind} {shown(args)}), got {shown(value)}")
    if kind == "quniform" and not math.isclose(value / args[2], round(value / args[2])):
        raise UserError(f"{w}: expected a multiple of q={shown(args[2])} (space.{key}: quniform "
                        f"{shown(args)}), got {shown(value)}")


def _check_space_sample(spec: SweepSpec, where: str) -> None:
    """Cross-key rules on one representative config per tuned value (catches e.g. npz without a path)."""
    for key, dist in spec.space.items():
        for value in _values_or_bounds(dist, key):
            cfg = copy.deepcopy(spec.config)
            value = int(value) if C.schema()[key].numeric == "int" else value
            C.set_dotted(cfg, key, value)
            C.validate_config(cfg, f"{where}: space.{key}={shown(value)} →", tuned=set(spec.space) - {key})


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The nested Ray Tune param space: fixed config with tune distributions at the tuned keys."""
    from ray import tune

    out = copy.deepcopy(spec.config)
    for key, dist in spec.space.items():
        kind, args = next(iter(dist.items()))
        is_int = C.schema()[key].numeric == "int"
        if kind == "uniform":
            d = tune.uniform(*args)
        elif kind == "loguniform":
            d = tune.loguniform(*args)
        elif kind == "quniform":
            d = _int_steps(*_values_or_bounds(dist, key), int(args[2])) if is_int else tune.quniform(*args)
        elif kind == "randint":
            d = tune.randint(*args)
        elif kind == "choice":
            d = tune.choice(args)
        else:
            d = tune.grid_search(args)
        if spec.search["type"] == "grid" and kind == "choice":
            d = tune.grid_search(args)
        C.set_dotted(out, key, d)
    return out


def _int_steps(lo: int, hi: int, q: int):
    """The multiples of q in [lo, hi], both ends sampled: Ray's qrandint excludes its upper bound when q = 1
    (only then), so q = 1 is randint over [lo, hi + 1)."""
    from ray import tune

    return tune.randint(lo, hi + 1) if q == 1 else tune.qrandint(lo, hi, q)


def search_algorithm(spec: SweepSpec):
    """Random (seeded), grid or Optuna TPE (seeded), as the spec says; `search.points_to_evaluate` first."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    se = spec.search
    points = se.get("points_to_evaluate") or None  # the generator stage's search has no such key
    if se["type"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        # Optuna names a nested param "group/key" (Ray flattens the param space with "/").
        flat = [{k.replace(".", "/"): v for k, v in p.items()} for p in points] if points else None
        alg = OptunaSearch(seed=se["seed"], points_to_evaluate=flat)  # TPE, seeded
        return ConcurrencyLimiter(alg, max_concurrent=se["max_concurrent"]) if se["max_concurrent"] else alg
    nested = [_nested(p) for p in points] if points else None  # Ray resolves a point as a partial config
    return BasicVariantGenerator(random_state=se["seed"], max_concurrent=se["max_concurrent"] or 0,
                                 points_to_evaluate=nested)


def _nested(point: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in point.items():
        C.set_dotted(out, key, value)
    return out


def describe(spec: SweepSpec) -> str:
    """The resolved spec as YAML, for --dry-run and the MLflow parent run."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=100)
