"""The config's refusal, at the bottom of the import graph: :mod:`rlrt.plan` (run planning) raises it when a
method's settings cannot be built, :mod:`rlrt.config` (validation) for everything else. Imported by both, it
imports nothing of rlrt."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value the schema or a cross-field check rejects; the message names the key."""


def config_key(path) -> str:
    """A key path as the messages name it: ``['rl', 'steps']`` -> ``rl.steps``, ``['x', 0, 'y']`` -> ``x[0].y``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"
