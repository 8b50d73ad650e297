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


def test_table4_comes_from_the_registry():
    from rlrt.methods.registry import METHODS
    from rlrt.stages.tables import table4

    df = table4()
    assert len(df) == len(METHODS)
    assert df["Method"].tolist()[:5] == ["GRPO", "SDPO", "SRPO", "RLSD", "RLRT"]  # the paper's order first
    rlrt = df[df.Method == "RLRT"].iloc[0]
    assert rlrt["Gate"] == "r=1 only" and "P_S(y_t)/P_T(y_t)" in rlrt["Per-token weight w_t"]
    assert df[df.Method == "RLRT-all"].iloc[0]["Gate"].startswith("all")
    assert df[df.Method == "SDPO"].iloc[0]["Objective"].startswith("sdpo:")


def test_run_labels():
    from rlrt.labels import run_label

    assert run_label("rlrt") == "RLRT" and run_label("grpo_eb") == "GRPO+EB"
    assert run_label("rlrt@eps_w=0.5") == "RLRT (eps_w=0.5)"


def test_plots_and_tables_label_and_colour_every_method_alike():
    """The analysis figures (``rlrt.analysis.plots``), the paper figures and the tables name a run the same way:
    the registry's display label (RLRT-all, GRPO+EB), a setting in parentheses; each method has its own colour."""
    from rlrt.analysis import plots
    from rlrt.labels import METHOD_COLORS
    from rlrt.methods.registry import METHODS, get_method
    from rlrt.stages import figures

    runs = list(METHODS) + [f"{m}@eps_w=0.5" for m in METHODS]
    df = table1([ev("S", "base", 1.0, 1.0)] + [ev("S", r, 1.0, 1.0) for r in runs], ["S"], runs, ["test"], 4)
    table_labels = {m: row.strip() for _, m, row in df.index if m in runs}
    assert set(table_labels) == set(runs)
    for r in runs:
        assert plots.run_label(r) == figures.run_label(r) == table_labels[r], r
    for name in METHODS:
        assert table_labels[name] == get_method(name).display
        assert table_labels[f"{name}@eps_w=0.5"] == f"{get_method(name).display} (eps_w=0.5)"
    assert plots.run_label("rlrt_all") == "RLRT-all"
    colours = [plots.run_color(m) for m in METHODS]
    assert set(METHODS) <= set(METHOD_COLORS) and len(set(colours)) == len(colours)
    assert all(plots.run_color(f"{m}@eps_w=0.5") == figures.run_color(m) == plots.run_color(m) for m in METHODS)


def test_sweeps_table_reads_first_and_last_fifth():
    from rlrt.stages.tables import sweeps_table

    def run(b, r, rewards):
        return {"run": r, "summary": {"backbone": b, "method": r.split("@")[0]},
                "history": [{"reward_mean": x, "entropy": 0.5, "response_length": 10.0} for x in rewards]}

    runs = [run("S", "rlrt", [0.0] * 5 + [1.0] * 5), run("S", "rlrt@eps_w=0.2", [0.5] * 10)]
    sw = [{"method": "rlrt", "key": "eps_w", "backbone": "S", "values": [0.2, 1.0],
           "runs": ["rlrt@eps_w=0.2", "rlrt"]}]
    df = sweeps_table(runs, sw)
    assert df["run"].tolist() == ["rlrt@eps_w=0.2", "rlrt"]
    assert df["reward_first"].tolist() == [50.0, 0.0] and df["reward_last"].tolist() == [50.0, 100.0]
    import pytest

    with pytest.raises(ValueError, match="missing run"):
        sweeps_table(runs[:1], sw)


def test_passk_curve_matches_the_estimator():
    import numpy as np

    from rlrt.metrics import pass_at_k
    from rlrt.stages.figures import passk_curve

    c = passk_curve([0, 2, 4], 4)
    assert c.shape == (4,)
    assert c[0] == pytest.approx(100 * np.mean([0, 0.5, 1.0]))
    assert c[-1] == pytest.approx(100 * np.mean([0, 1, 1]))
    assert c[1] == pytest.approx(100 * np.mean([0, pass_at_k(4, 2, 2), 1]))
    assert np.all(np.diff(c) >= 0)


def test_seed_replicates_are_pooled_as_mean_and_std():
    evals = [ev("S", "base", 5.0, 20.0), ev("S", "grpo", 10.0, 40.0), ev("S", "grpo+seed=1", 14.0, 40.0),
             ev("S", "grpo+seed=2", 12.0, 46.0), ev("S", "rlrt", 15.0, 38.0)]
    df = table1(evals, ["S"], ["grpo", "rlrt"], ["test"], 4)
    grpo = df.xs("grpo", level="method").iloc[0]
    assert grpo[("test", "Avg@4")] == pytest.approx(12.0) and grpo[("test", "Avg@4 std")] == pytest.approx(2.0)
    assert grpo[("test", "Pass@4")] == pytest.approx(42.0)
    assert grpo[("test", "Pass@4 std")] == pytest.approx((((40 - 42) ** 2 * 2 + 4 ** 2) / 2) ** 0.5)
    # a single seed has no std; the delta compares the means (15 - 12)
    assert df.xs("rlrt", level="method").iloc[0][("test", "Avg@4 std")] != df.xs("rlrt", level="method").iloc[0][
        ("test", "Avg@4 std")]  # NaN
    assert df.xs("delta", level="method").iloc[0][("test", "Avg@4")] == pytest.approx(3.0)
    md = to_markdown(df, "T")
    assert "12.0 ± 2.0" in md and "GRPO (3 seeds)" in md and "Avg@4 std" not in md


def test_fig8_says_when_two_runs_draw_the_same_curve():
    """Identical per-problem counts on every split draw one curve over another: the later run's label says so;
    counts equal on one split only do not."""
    from rlrt.stages.figures import passk_labels

    ev = lambda a, b: {"splits": {"test": {"correct_counts": a}, "test_hard": {"correct_counts": b}}}  # noqa: E731
    by_run = {"grpo": ev([3, 0], [1, 2]), "diver@variant=bleu": ev([3, 0], [1, 2]), "rlrt": ev([3, 0], [2, 2])}
    labels = passk_labels(by_run, ["grpo", "diver@variant=bleu", "rlrt"], ["test", "test_hard"])
    assert labels["grpo"] == "GRPO" and labels["rlrt"] == "RLRT"
    assert labels["diver@variant=bleu"].endswith("(= GRPO: identical counts)")
