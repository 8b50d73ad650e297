"""How runs are named and coloured in every table and figure (one place, so they cannot disagree).

A run id is a registered method, optionally with one setting (``rlrt@eps_w=0.5``, see
:func:`rlrt.plan.run_id`); its label is the method's display name from ``rlrt.methods.registry``
(``MethodSpec.display``) followed by the setting in parentheses: ``'rlrt@eps_w=0.5' -> 'RLRT (eps_w=0.5)'``.
``base`` (the untrained backbone, evaluated and analysed like a run) is not a method and has its own label.
"""

from __future__ import annotations

__all__ = ["BASE_LABEL", "METHOD_COLORS", "RUN_COLORS", "DEFAULT_COLOR", "run_label", "run_color"]

BASE_LABEL = "base (untrained)"

# One colour per method (matplotlib's tab10 in hex, usable in HTML too); "base" is the untrained backbone.
METHOD_COLORS = {
    "grpo": "#1f77b4",      # tab:blue
    "rlsd": "#ff7f0e",      # tab:orange
    "rlrt": "#d62728",      # tab:red
    "sdpo": "#2ca02c",      # tab:green
    "srpo": "#9467bd",      # tab:purple
    "grpo_eb": "#17becf",   # tab:cyan
    "diver": "#bcbd22",     # tab:olive
    "rlrt_all": "#7f7f7f",  # tab:gray
    "base": "#444444",
}
# Runs drawn beside their method's own run in the same figure, in a colour of their own.
RUN_COLORS = {"diver@variant=bleu": "#8c564b"}  # tab:brown
DEFAULT_COLOR = "#333333"


def run_label(run: str) -> str:
    """Display label of a run id: ``'rlrt' -> 'RLRT'``, ``'grpo_eb' -> 'GRPO+EB'``,
    ``'rlrt@eps_w=0.5' -> 'RLRT (eps_w=0.5)'``, ``'base' -> 'base (untrained)'``."""
    from rlrt.plan import parse_run_id
    from rlrt.methods.registry import get_method

    if run == "base":
        return BASE_LABEL
    method, override = parse_run_id(run)
    return get_method(method).display + "".join(f" ({k}={v})" for k, v in override.items())


def run_color(run: str) -> str:
    """Colour of a run: its own entry in ``RUN_COLORS``, else its method's colour (sweep points share it)."""
    if run in RUN_COLORS:
        return RUN_COLORS[run]
    return METHOD_COLORS.get(run.split("@", 1)[0], DEFAULT_COLOR)
