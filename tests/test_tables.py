"""Table 1 assembly: the block layout and Δ = RLRT minus the best other trained method, per column."""

from __future__ import annotations

import pytest

from rlrt.stages.tables import table1, to_markdown


def ev(backbone, method, avg, pas):
    return {"backbone": backbone, "method": method,
            "splits": {"test": {"metrics": {"avg@4": avg, "pass@4": pas}}}}


def test_delta_is_rlrt_minus_best_other_method():
    evals = [ev("S", "base", 5.0, 20.0), ev("S", "grpo", 10.0, 40.0), ev("S", "rlsd", 12.0, 35.0),
             ev("S", "rlrt", 15.0, 38.0)]
    df = table1(evals, ["S"], ["grpo", "rlsd", "rlrt"], ["test"], 4)
    assert list(df.index.get_level_values("method")) == ["base", "grpo", "rlsd", "rlrt", "delta"]
    delta = df.xs("delta", level="method").to_numpy().ravel()
    assert delta.tolist() == pytest.approx([3.0, -2.0])  # 15 - max(10, 12); 38 - max(40, 35)
    md = to_markdown(df, "T")
    assert "| S " in md and "+3.0" in md and "-2.0" in md and "5.0" in md


def test_missing_evaluation_is_an_error_not_a_blank():
    with pytest.raises(ValueError, match="missing evaluation"):
        table1([ev("S", "base", 1.0, 1.0)], ["S"], ["grpo"], ["test"], 4)
