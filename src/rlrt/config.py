"""Workflow config: the strict YAML reader, and validation against ``workflow/schemas/config.schema.yaml`` plus
every cross-field check (:mod:`rlrt.checks`), before any job.

``validate`` raises ``ConfigError`` with ONE line naming the offending key (``rl.steps: -1 is less than the
minimum of 1``). The Snakefile calls it first; tests call it directly; ``python -m rlrt.config [OVERLAY ...]``
checks a config from the shell. What the config plans (runs, seeds, settings) is :mod:`rlrt.plan` (and the claims
study's replicates, :mod:`rlrt.claims`), which this module imports, never the reverse.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import yaml

from rlrt.errors import ConfigError, config_key
from rlrt.schema import SCHEMA, SafeLoader, load_schema, schema_message, validator

__all__ = ["BASE_CONFIG", "SCHEMA", "ConfigError", "check_config_files", "load", "load_overlay", "main",
           "merge_configs", "typed_overrides", "validate"]

MAX_VALUES = 100_000
"""The most values (mapping entries and list items, every alias expanded) a config may hold: the default config
holds about 400. More is a YAML alias bomb (a few hundred bytes that expand to millions of values), refused
before anything walks it."""


# ---- validation ------------------------------------------------------------------------------------------------

def validate(cfg: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """Validate ``cfg``; returns it unchanged or raises ``ConfigError`` naming the key. In order: unknown keys
    (walking only the keys the schema knows, so an unknown key's value is never walked), the config's size (aliases
    expanded), finite numbers, the schema (integers are ``int``: ``3.0`` is refused), then the cross-field checks of
    :mod:`rlrt.checks`, area by area."""
    import jsonschema

    schema = load_schema(str(schema_path))
    _check_unknown_keys(cfg, schema, schema, [], set())
    _check_size(cfg)
    _check_finite(cfg, [], set())  # JSON-schema ranges let NaN through (every comparison with NaN is false)
    errors = list(validator(schema).iter_errors(cfg))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        path = list(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            raise ConfigError(_unknown_key_message(path + extra[:1], err.schema))
        raise ConfigError(f"config key {config_key(path)!r}: {schema_message(err)}")  # required, enum, type, ...
    _cross_checks(cfg, schema)
    return cfg


def _cross_checks(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    from rlrt.checks import analysis, backend, data, limits, paths, rlt, runs
    from rlrt.claims import planned_runs

    paths.check_results(cfg)
    data.check_data(cfg)
    data.check_backbones(cfg)
    limits.check_arch(cfg)
    limits.check_context(cfg)
    backend.check_resources(cfg)
    runs.check_rl(cfg)
    runs.check_experiments(cfg, schema)
    plan = planned_runs(cfg)
    runs.check_plan(cfg, plan)
    backend.check_backend(cfg, plan)
    backend.check_gpu_memory(cfg, plan)
    runs.check_teacher_context(cfg, plan)
    analysis.check_analysis(cfg, plan)
    rlt.check_rlt(cfg)
    paths.check_tracking(cfg)


def _unknown_key_message(path: list, schema: dict[str, Any]) -> str:
    return (f"config key {config_key(path)!r}: unknown key (misspelled?); allowed here: "
            f"{sorted(schema.get('properties', {}))}")


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    return schema


def _check_unknown_keys(value: Any, schema: Any, root: dict[str, Any], path: list, seen: set) -> None:
    """Every mapping key is one the schema allows there (``properties``, or an ``additionalProperties`` schema),
    following only keys the schema knows: an unknown key is reported without its value being walked, and each
    (value, schema) pair is visited once, so an aliased value is walked once however often it is referenced."""
    schema = _resolve(schema, root)
    if not isinstance(schema, dict) or (id(value), id(schema)) in seen:
        return
    seen.add((id(value), id(schema)))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                _check_unknown_keys(v, props[k], root, path + [k], seen)
            elif extra is False:
                raise ConfigError(_unknown_key_message(path + [k], schema))
            elif isinstance(extra, dict):
                _check_unknown_keys(v, extra, root, path + [k], seen)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _check_unknown_keys(v, schema["items"], root, path + [i], seen)


def _check_size(cfg: dict[str, Any]) -> None:
    """At most :data:`MAX_VALUES` values, every alias expanded (counted once per distinct object, so a few
    hundred bytes of nested aliases are counted in microseconds, not expanded); refused naming the largest
    top-level key."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) not in sizes:
            sizes[id(value)] = 0  # a recursive alias counts once
            items = value.values() if isinstance(value, dict) else value
            sizes[id(value)] = 1 + sum(size(v) for v in items)
        return sizes[id(value)]

    if size(cfg) > MAX_VALUES:
        key, n = max(((k, size(v)) for k, v in cfg.items()), key=lambda kv: kv[1])
        raise ConfigError(f"config key {str(key)!r}: holds {n:.3g} values with its YAML aliases expanded, more than "
                          f"a config may ({MAX_VALUES}); a few nested aliases (a YAML alias bomb) expand that way")


def _check_finite(value: Any, path: list, seen: set) -> None:
    """Every number of the config is finite: YAML's ``.nan`` / ``.inf`` (or JSON's ``NaN`` / ``Infinity``) pass
    every schema range, so they are refused here, anywhere in the (merged) config, naming the first one's key.
    Each mapping / list is walked once (an alias of one already walked is skipped)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {config_key(path)!r}: {value} is not a finite number (.nan / .inf are not "
                          f"allowed anywhere in the config)")
    if not isinstance(value, (dict, list, tuple)) or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, path + [k], seen)
    else:
        for i, v in enumerate(value):
            _check_finite(v, path + [i], seen)


# ---- reading: files read strictly, merged as Snakemake merges them -----------------------------------------------

BASE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "config.yaml"


def merge_configs(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` deep-merged over ``base``, as Snakemake merges a ``--configfile`` over the Snakefile's
    ``configfile:`` (``snakemake.utils.update_config``): where both values are mappings they are merged key by key,
    recursively; any other overlay value (scalar, list, null) replaces the base value whole; keys only in the overlay
    are added. Nothing can be removed. Returns a new dict; neither argument is modified.

    One corner follows Snakemake too: an empty mapping ``{}`` over a non-mapping value leaves that value as it is.
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict):
            old = out.get(key, {})
            if isinstance(old, dict):
                out[key] = merge_configs(old, value)
            elif value:  # a mapping over a scalar/list replaces it; {} over one keeps it (as Snakemake does)
                out[key] = merge_configs({}, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int, first: int):
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first



_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def typed_overrides(value: Any) -> Any:
    """``--config`` values as a config file would type them. Snakemake types a top-level ``--config key=value``
    (int, float, ``True`` / ``False``, else YAML) but parses a nested one (``rl={steps: 5}``) with YAML's
    ``BaseLoader``, which leaves every scalar a string: inside mappings and lists a string that reads as a number
    becomes that number (``5``, ``1e-6``), and YAML's booleans and null become them; anything else stays a string.
    Top-level strings are left as Snakemake gave them."""
    def typed(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: typed(x) for k, x in v.items()}
        if isinstance(v, list):
            return [typed(x) for x in v]
        if isinstance(v, str):
            if _NUMBER.fullmatch(v.strip()):
                return int(v) if re.fullmatch(r"\s*[-+]?\d+\s*", v) else float(v)
            try:
                parsed = yaml.load(v, Loader=SafeLoader)  # noqa: S506 -- a safe loader
            except yaml.YAMLError:
                return v
            return parsed if parsed is None or isinstance(parsed, bool) else v
        return v

    return {k: typed(v) if isinstance(v, (dict, list)) else v for k, v in dict(value or {}).items()}


class _UniqueKeyLoader(SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain PyYAML, and Snakemake, keep the
    later value silently). Keys brought in by a merge key (``<<: *anchor``) may be overridden, as YAML intends."""

    def construct_document(self, node):
        self._check_unique(node, [], set())
        return super().construct_document(node)

    def _check_unique(self, node, path: list, seen_nodes: set) -> None:
        if id(node) in seen_nodes:  # an alias of a node already walked (or a recursive anchor)
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                try:
                    hash(key)
                except TypeError:
                    key = None
                line = key_node.start_mark.line + 1
                if key is not None and key in first:
                    raise _DuplicateKey(config_key(path + [key]), line, first[key])
                if key is not None:
                    first[key] = line
                self._check_unique(value_node, path + [key if key is not None else "?"], seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_unique(item, path + [i], seen_nodes)


def _read_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        cfg = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: line {e.line}: duplicate key {e.key!r} (first given at line {e.first}); the "
                          f"later value would silently win, so give each key once") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return cfg


def check_config_files(paths) -> None:
    """Each file as ``_read_config`` reads it: present, valid YAML (or JSON), a mapping, no key given twice. For the
    files Snakemake has already loaded with its own reader (``workflow.configfiles``), which keeps the later of two
    equal keys silently; ``validate`` sees only the merged dict and cannot tell."""
    for path in paths:
        _read_config(path)


def load(*paths: str | Path) -> dict[str, Any]:
    """The first file, then each further file deep-merged over it (:func:`merge_configs`, Snakemake's rule for
    later ``--configfile``s), validated as a whole. ``load("config/config.yaml", "config/ci.yaml")`` is the config
    ``snakemake --configfile config/ci.yaml`` runs with. A missing or unreadable file raises ``ConfigError``."""
    if not paths:
        raise ConfigError("load: no config file given")
    cfg = _read_config(paths[0])
    for path in paths[1:]:
        cfg = merge_configs(cfg, _read_config(path))
    return validate(cfg)


def load_overlay(path: str | Path) -> dict[str, Any]:
    """``path`` as the workflow runs it (``snakemake --configfile <path>``): merged over ``config/config.yaml``.
    ``config/config.yaml`` itself is loaded alone."""
    if Path(path).resolve() == BASE_CONFIG:
        return load(BASE_CONFIG)
    return load(BASE_CONFIG, path)



def main(argv: list[str] | None = None) -> int:
    """``python -m rlrt.config [OVERLAY ...]``: check the config ``snakemake --configfile OVERLAY ...`` would run
    with (each file read strictly: present, no duplicated key; merged over ``config/config.yaml``; validated) and
    print one line. Snakemake itself answers a missing ``--configfile`` with a traceback before the Snakefile is
    read, so a wrapper (the Makefile) can run this first."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    files = [BASE_CONFIG] + [p for p in paths if Path(p).resolve() != BASE_CONFIG]
    try:
        check_config_files(files)
        load(*files)
    except ConfigError as e:
        print(f"invalid config: {e}", file=sys.stderr)
        return 1
    print(f"config OK: {' + '.join(str(p) for p in files)}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
