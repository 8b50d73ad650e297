"""RLT Tables 1-2 carry the paper's "Overall" column: the mean of each metric over the test splits (issue 31 §3),
here checked on a small evaluation tree written to disk and run through the tables stage."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rlrt.rlt_models import rlt_models
from rlrt.stages import tables

SPLITS = ["aime24", "math500", "gpqa_diamond"]


def write_evals(root, models, splits=SPLITS, n=4):
    """One evaluation JSON per model (as rlrt.stages.evaluate writes it), distinct numbers in every cell."""
    files = []
    for i, m in enumerate(models):
        split_d = {s: {"metrics": {f"avg@{n}": 3.0 * i + 7.0 * j + 1.5, f"pass@{n}": 40.0 + 5.0 * i - 11.0 * j},
                       "n_problems": 10 + j, "correct_counts": [0] * (10 + j)}
                   for j, s in enumerate(splits)}
        f = root / "rlt" / "eval" / "S" / m / "arithmetic.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"backbone": "S", "method": m, "task": "arithmetic", "n": n, "splits": split_d}))
        files.append(str(f))
    return files


@pytest.mark.parametrize("table", ["rlt_table1", "rlt_table2"])
def test_overall_is_the_mean_of_the_rows_cells(tmp_path, table):
    models = rlt_models()["table1" if table == "rlt_table1" else "table2"]
    files = write_evals(tmp_path, models)
    csv, md = tmp_path / "t.csv", tmp_path / "t.md"
    cfg = {"splits": SPLITS, "n": 4, "n_questions": 100, "n_small": 10}
    tables.main(["--cfg", json.dumps(cfg), "--table", table, "--evals", *files, "--out-csv", str(csv),
                 "--out-md", str(md)])
    df = pd.read_csv(csv)
    assert list(df.columns[-2:]) == ["Overall/Avg@4", "Overall/Pass@4"]
    for metric in ("Avg@4", "Pass@4"):
        cells = df[[f"{s}/{metric}" for s in SPLITS]]
        assert df[f"Overall/{metric}"].tolist() == pytest.approx(cells.mean(axis=1).tolist(), abs=1e-4)
    # every row is checked, the Δ rows included (their Overall = the difference of the two Overalls)
    assert (df["method"] == "delta").sum() >= 1 and len(df) == len(models) + (df["method"] == "delta").sum()
    header = md.read_text().splitlines()[2]
    assert "Overall Avg@4" in header and "Overall Pass@4" in header and "gpqa_diamond Avg@4" in header


def test_overall_over_the_splits_present_and_a_missing_split_is_an_error(tmp_path):
    models = rlt_models()["table1"]
    two = ["aime24", "math500"]
    evals = [json.loads(open(f).read()) for f in write_evals(tmp_path, models, splits=two)]
    df = tables.rlt_table(evals, models, two, 4, [])
    row = df.xs("base", level="method").iloc[0]
    assert row[("Overall", "Avg@4")] == pytest.approx((1.5 + 8.5) / 2)
    assert row[("Overall", "Pass@4")] == pytest.approx((40.0 + 29.0) / 2)
    with pytest.raises(ValueError, match=r"has no split\(s\) \['gpqa_diamond'\]"):
        tables.rlt_table(evals, models, SPLITS, 4, [])


def test_gpqa_prompt_asks_for_a_boxed_letter_and_the_grader_scores_it():
    """RLT's students are evaluated on GPQA-Diamond with the pipeline's prompt (question + instruction, reference
    notes' suffix) and grader (last \\boxed{}; a gold letter is decided by the letter path): the rendered user turn
    lists the options, then asks for the letter, and the instruction does not run on after option D's text."""
    from rlrt.tasks.benchmarks import GPQA_INSTRUCTION, gpqa_diamond
    from rlrt.tasks.grading import grade
    from rlrt.tasks.prompts import INSTRUCTION, user_message

    row = gpqa_diamond({"Record ID": "rec1", "Question": "Which particle mediates the strong force?",
                        "Correct Answer": "gluon", "Incorrect Answer 1": "photon", "Incorrect Answer 2": "W boson",
                        "Incorrect Answer 3": "graviton", "Explanation": "QCD."}, 0)
    msg = user_message(row["question"])
    blocks = msg.split("\n\n")
    assert blocks[0] == "Which particle mediates the strong force?"
    assert [line[:3] for line in blocks[1].split("\n")] == ["A) ", "B) ", "C) ", "D) "]
    assert blocks[2] == GPQA_INSTRUCTION + " " + INSTRUCTION   # the last line: letter, then \boxed{}
    gold = row["answer"]
    wrong = next(c for c in "ABCD" if c != gold)
    assert grade(f"... so the answer is \\boxed{{{gold}}}", gold) == 1.0
    assert grade(f"\\boxed{{{wrong}}}", gold) == 0.0
    assert grade("\\boxed{gluon}", gold) == 0.0   # the option's text is not its letter: why the prompt asks for it
