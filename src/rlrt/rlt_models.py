"""Which RLT-branch student models each RLT result compares: one definition for ``rules/rlt.smk`` (which
models it trains and evaluates) and ``rlrt.stages.tables`` (which rows the RLT tables hold).

Model names (see ``rules/rlt.smk``): ``base`` (the untrained backbone), ``sft-<data>`` (data: rlt, rlt_small,
reference, reference_small, countdown, rank<r>), ``grpo-<init>`` (cold-start GRPO on the main task from
``init``) and ``cdgrpo-<init>`` (GRPO directly on countdown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["rlt_models", "student_sft_settings"]


def rlt_models(rlt: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """The student models of each RLT result, in row / bar order.

    ``rlt``: the config's ``rlt`` block; only ``reward_rank.ranks`` is read (the reward-rank study's models,
    ``sft-rank1`` .. ``sft-rank<ranks>``; none without the block). Keys:

    * ``table1``: RLT vs reference traces, on all questions and on the small subset (RLT Table 1).
    * ``table2``: cold-start GRPO from the untrained student vs from the RLT / reference students (RLT Table 2).
    * ``countdown``: the countdown-transfer figure's students (RLT Fig. 5 left).
    * ``reward_rank``: one student per reward-rank dataset (RLT Fig. 5 right).
    """
    ranks = int(((rlt or {}).get("reward_rank") or {}).get("ranks", 0))
    return {
        "table1": ["base", "sft-rlt", "sft-reference", "sft-rlt_small", "sft-reference_small"],
        "table2": ["base", "grpo-base", "sft-rlt", "grpo-sft-rlt", "sft-reference", "grpo-sft-reference"],
        "countdown": ["base", "sft-reference", "sft-rlt", "cdgrpo-base", "cdgrpo-sft-reference", "sft-countdown"],
        "reward_rank": [f"sft-rank{r}" for r in range(1, ranks + 1)],
    }


def student_sft_settings(rlt: Mapping[str, Any], data: str) -> dict[str, Any]:
    """The SFT settings of the student distilled on ``data`` (``rlt``, ``rlt_small``, ``rank3``, ``countdown``; a
    claims replicate ``rlt_small+seed=1`` as its plain run), chosen by the size of its dataset as the RLT paper does
    ("following the same procedure as our baselines based on data size": s1's recipe for its 1K students,
    Bespoke-Stratos' for 17K): ``rlt.student_sft``, with ``rlt.student_sft_small`` over it key by key when the
    dataset has at most ``n_small`` questions -- the small subset, and the reward-rank datasets when
    ``reward_rank.n_questions <= n_small``. Without ``student_sft_small`` every student gets ``student_sft``."""
    base = data.split("+", 1)[0]
    if base.endswith("_small"):
        n = int(rlt["n_small"])
    elif base.startswith("rank"):
        n = int(rlt["reward_rank"]["n_questions"])
    elif base == "countdown":
        n = int(rlt["countdown"]["n_train"])
    else:
        n = int(rlt["n_questions"])
    if rlt.get("student_sft_small") and n <= int(rlt["n_small"]):
        return {**rlt["student_sft"], **rlt["student_sft_small"]}
    return dict(rlt["student_sft"])
