"""The config's JSON schema (``workflow/schemas/config.schema.yaml``): read once per process, its validator (with
integers that are integers), its messages, and the defaults it fills in. Below :mod:`rlrt.config` (validation) and
the checks of :mod:`rlrt.checks`; imports nothing of rlrt."""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# libyaml's parser where PyYAML was built with it (the pure-Python one costs ~0.1 s per config file read, and
# `snakemake -n` reads several)
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@lru_cache(maxsize=None)
def load_schema(schema_path: str = str(SCHEMA)) -> dict[str, Any]:
    """The JSON schema (YAML), read once per process. Callers must not mutate it."""
    return yaml.load(Path(schema_path).read_text(), Loader=SafeLoader)  # noqa: S506 -- a safe loader


def _is_integer(checker, instance) -> bool:
    """JSON Schema's ``integer`` admits a float with no fraction (``3.0``), which then reaches ``range(3.0)`` in a
    job as a ``TypeError``: here an integer is a Python ``int`` (YAML ``3``), never a float nor a bool."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@lru_cache(maxsize=None)
def _validator_class():
    import jsonschema

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer)
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)


def validator(schema: dict[str, Any]):
    """A Draft 2020-12 validator of ``schema`` whose ``integer`` is strict (``3.0`` is refused, naming the key)."""
    return _validator_class()(schema)


def schema_message(err) -> str:
    """The validator's message; a broken sanity bound (``maximum``) also says why the bound is there (the
    schema's description of that value, e.g. ``$defs/steps``)."""
    if err.validator == "maximum" and isinstance(err.schema, dict) and err.schema.get("description"):
        return f"{err.message} ({' '.join(str(err.schema['description']).split())})"
    return err.message


def with_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """``value`` with every missing key that has a ``default`` in ``schema`` filled in (recursively)."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(out[key], sub)
    return out


def analysis_config(cfg: dict[str, Any], schema_path: str | Path = SCHEMA) -> dict[str, Any]:
    """The ``analysis`` block with its schema defaults filled in ({} when absent: no analysis runs)."""
    return with_defaults(cfg.get("analysis") or {}, load_schema(str(schema_path))["properties"]["analysis"])
