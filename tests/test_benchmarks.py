"""Real data-set loaders: rows written in each hub data set's own column layout (parquet with nested columns and
jsonl, as the hub ships them), read back through ``rlrt.hub.load_rows`` (datasets' packaged builders) and
normalised; exact rows, skip counts and the staged parquet schema are asserted."""

from __future__ import annotations

import json
import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlrt.hub import load_rows
from rlrt.io import PROBLEM_COLUMNS, read_problems, write_jsonl, write_problems
from rlrt.stages import prepare_dataset
from rlrt.tasks.benchmarks import (DAPO_PREFIX, DAPO_SUFFIX, LOADERS, BenchmarkFormatError, answer_text,
                                   gpqa_diamond, normalise)


def dapo_row(question, answer, uid, content=None):
    return {"data_source": "math_dapo",
            "prompt": [{"content": content if content is not None else DAPO_PREFIX + question + DAPO_SUFFIX,
                        "role": "user"}],
            "ability": "MATH", "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
            "extra_info": {"index": uid}}


def test_dapo_math_parquet_nested_columns(tmp_path):
    q1 = "Let $x$ satisfy $x^2=4$ and $x>0$. Find $x$."
    rows = [dapo_row(q1, "2", "u-1"),
            dapo_row(q1, "2", "u-2"),                          # the hub copy repeats prompts ~100x
            dapo_row("Find $1+1$.", "2", "u-3"),
            dapo_row("What is $3^2$?", "", "u-4"),             # no gold answer
            dapo_row("", "7", "u-5"),                          # empty question
            dapo_row("Other", "1", "u-6", content="Just solve: Other"),  # not the DAPO wrapper
            dapo_row("Find $1+1$.", "3", "u-7"),               # repeat with a different gold answer
            dapo_row("Find $2+2$.", "4", "u-3")]               # repeated id
    path = tmp_path / "dapo-math-17k.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)           # struct / list<struct> columns, as on the hub
    raw = load_rows("BytedTsinghua-SIA/DAPO-Math-17k", path=path)
    assert isinstance(raw[0]["prompt"], list) and raw[0]["reward_model"]["ground_truth"] == "2"
    out, skipped = normalise("dapo_math", raw)
    assert out == [
        {"id": "u-1", "question": q1, "answer": "2", "solution": "", "explanation": "", "source": "dapo_math"},
        {"id": "u-3", "question": "Find $1+1$.", "answer": "2", "solution": "", "explanation": "", "source": "dapo_math"},
    ]
    assert skipped == {"conflicting_answer": 1, "duplicate_id": 1, "duplicate_question": 1, "empty_question": 1,
                       "missing_answer": 1, "unrecognised_prompt": 1}


def test_dapo_question_is_bare_the_pipeline_adds_its_instruction():
    from rlrt.tasks.prompts import user_message

    out, _ = normalise("dapo_math", [dapo_row("Compute $2+3$.", "5", "a")])
    assert out[0]["question"] == "Compute $2+3$."
    assert user_message(out[0]["question"]).count("\\boxed{}") == 1
    assert "Answer:" not in user_message(out[0]["question"])


def test_dapo_missing_ground_truth_names_column_and_dataset():
    row = dapo_row("q", "1", "a")
    row["reward_model"] = {"style": "rule"}
    with pytest.raises(BenchmarkFormatError, match=r"dapo_math.*reward_model\.ground_truth.*\[row 0\]"):
        normalise("dapo_math", [row])


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_aime24_h4_layout(tmp_path, fmt):
    rows = [{"id": 60, "problem": "Every morning Aya walks ...", "solution": "We have $s=2.5$ ...",
             "answer": "204", "url": "https://artofproblemsolving.com/...", "year": "2024"},
            {"id": 61, "problem": "Let $ABC$ be a triangle ...", "solution": "", "answer": "113", "url": "u",
             "year": "2024"}]
    path = tmp_path / f"train.{fmt}"
    if fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        write_jsonl(path, rows)
    out, skipped = normalise("aime24", load_rows("HuggingFaceH4/aime_2024", path=path))
    assert out == [
        {"id": "60", "question": "Every morning Aya walks ...", "answer": "204", "solution": "We have $s=2.5$ ...",
         "explanation": "", "source": "aime24"},
        {"id": "61", "question": "Let $ABC$ be a triangle ...", "answer": "113", "solution": "", "explanation": "", "source": "aime24"},
    ]
    assert skipped == {}


def test_aime25_and_math500(tmp_path):
    out, _ = normalise("aime25", [{"problem": "Find the sum ...", "answer": "70", "id": "0"}])
    assert out == [{"id": "0", "question": "Find the sum ...", "answer": "70", "solution": "", "explanation": "", "source": "aime25"}]
    m = [{"problem": "Convert $(0,3)$ to polar.", "solution": "... $\\boxed{(3,\\frac{\\pi}{2})}$.",
          "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
          "unique_id": "test/precalculus/807.json"}]
    path = tmp_path / "test.jsonl"
    write_jsonl(path, m)
    out, _ = normalise("math500", load_rows("HuggingFaceH4/MATH-500", path=path))
    assert out == [{"id": "test/precalculus/807.json", "question": "Convert $(0,3)$ to polar.",
                    "answer": "\\left( 3, \\frac{\\pi}{2} \\right)",
                    "solution": "... $\\boxed{(3,\\frac{\\pi}{2})}$.", "explanation": "", "source": "math500"}]


def test_matharena_int_and_string_answers(tmp_path):
    aime = tmp_path / "aime26.parquet"
    pd.DataFrame({"problem_idx": [1, 2], "answer": [277, 62], "problem": ["P one", "P two"]}).to_parquet(aime)
    out, _ = normalise("aime26", load_rows("MathArena/aime_2026", path=aime))
    assert [(r["id"], r["answer"], r["source"]) for r in out] == [("1", "277", "aime26"), ("2", "62", "aime26")]
    hmmt = tmp_path / "hmmt.parquet"
    pq.write_table(pa.Table.from_pylist([{"problem_idx": 3, "answer": "\\frac{9\\sqrt{3}}{2}",
                                          "problem_type": ["Geometry"], "problem": "Triangle ..."}]), hmmt)
    out, _ = normalise("hmmt_feb_2026", load_rows("MathArena/hmmt_feb_2026", path=hmmt))
    assert out == [{"id": "3", "question": "Triangle ...", "answer": "\\frac{9\\sqrt{3}}{2}", "solution": "",
                    "explanation": "", "source": "hmmt_feb_2026"}]


def test_amc23_float_answers(tmp_path):
    path = tmp_path / "test-00000-of-00001.parquet"
    pd.DataFrame({"id": [0, 1, 2], "question": ["Q0", "Q1", "Q2"], "answer": [27.0, 0.5, float("nan")],
                  "url": ["u"] * 3}).to_parquet(path)
    out, skipped = normalise("amc23", load_rows("math-ai/amc23", path=path))
    assert [(r["id"], r["question"], r["answer"]) for r in out] == [("0", "Q0", "27"), ("1", "Q1", "0.5")]
    assert skipped == {"missing_answer": 1}


def test_answer_text():
    import numpy as np

    assert [answer_text(v) for v in (27.0, np.float64(27.0), np.int64(204), 0.25, " 3 ", None, float("nan"))] == \
        ["27", "27", "204", "0.25", "3", "", ""]


def gpqa_row(rid, q="Which particle mediates the strong force?"):
    return {"Record ID": rid, "Question": q, "Correct Answer": "gluon", "Incorrect Answer 1": "photon",
            "Incorrect Answer 2": "W boson", "Incorrect Answer 3": "graviton", "Explanation": "QCD.",
            "Subdomain": "Particle physics"}


def test_gpqa_choices_seeded_by_row_id(tmp_path):
    path = tmp_path / "gpqa_diamond.csv"
    pd.DataFrame([gpqa_row("rec1"), gpqa_row("rec2", "Second question?")]).to_csv(path, index=False)
    (tmp_path / "gpqa_main.csv").write_text(path.read_text().replace("rec", "main"))   # the release ships both
    out, skipped = normalise("gpqa_diamond", load_rows("Idavidrein/gpqa", hub_config="gpqa_diamond",
                                                        path=tmp_path))
    assert [r["id"] for r in out] == ["rec1", "rec2"] and skipped == {}
    # the expected order, recomputed by hand from the documented rule: shuffle [correct, inc1, inc2, inc3]
    # with random.Random("gpqa_diamond:<id>")
    choices = ["gluon", "photon", "W boson", "graviton"]
    for r in out:
        order = list(range(4))
        random.Random(f"gpqa_diamond:{r['id']}").shuffle(order)
        letter = "ABCD"[order.index(0)]
        assert r["answer"] == letter
        lines = r["question"].split("\n\n")[1].split("\n")   # the options block (then the letter instruction)
        assert lines == [f"{'ABCD'[k]}) {choices[j]}" for k, j in enumerate(order)]
        assert f"{letter}) gluon" in lines
        assert r["solution"] == "QCD." and r["source"] == "gpqa_diamond"
    assert out[0]["question"].startswith("Which particle mediates the strong force?\n\nA) ")
    # deterministic: same id -> same letter in another call
    assert gpqa_diamond(gpqa_row("rec1"), 0) == out[0]
    # the letters are actually shuffled across ids (not always A)
    many = [gpqa_diamond(gpqa_row(f"r{k}"), k) for k in range(40)]
    assert {r["answer"] for r in many} == {"A", "B", "C", "D"}
    for r in many:   # the gold letter labels the correct choice, and every choice appears once
        assert f"\n{r['answer']}) gluon" in r["question"]
        assert sorted(line[3:] for line in r["question"].split("\n\n")[1].split("\n")) == sorted(choices)


def test_gpqa_missing_correct_answer_column():
    row = gpqa_row("x")
    del row["Correct Answer"]
    with pytest.raises(BenchmarkFormatError, match="gpqa_diamond: column 'Correct Answer' missing"):
        normalise("gpqa_diamond", [row])


def stratos_row(user, assistant):
    return {"system": "Your role as an assistant involves thoroughly exploring questions ...",
            "conversations": [{"from": "user", "value": user}, {"from": "assistant", "value": assistant}]}


def test_bespoke_stratos(tmp_path):
    a1 = ("<|begin_of_thought|>\n\nOkay, so 1/2 + 1/2 ... \\boxed{3} no wait.\n\n<|end_of_thought|>\n\n"
          "<|begin_of_solution|>\n\nAdding, $\\frac12+\\frac12 = 1$, so the answer is $\\boxed{1}$.\n\n"
          "<|end_of_solution|>")
    a2 = ("<|begin_of_thought|>\n\nparse input...\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n"
          "```python\nprint(input())\n```\n\n<|end_of_solution|>")
    rows = [stratos_row("Return your final response within \\boxed{}. What is $\\frac12+\\frac12$?", a1),
            stratos_row("Generate an executable Python function ... echo the input.", a2),
            stratos_row("Q3", "<|begin_of_thought|>no solution block<|end_of_thought|>")]
    path = tmp_path / "train.jsonl"
    write_jsonl(path, rows)
    out, skipped = normalise("bespoke_stratos", load_rows("bespokelabs/Bespoke-Stratos-17k", path=path))
    assert out == [
        {"id": "0", "question": "What is $\\frac12+\\frac12$?", "answer": "1",
         "solution": "Adding, $\\frac12+\\frac12 = 1$, so the answer is $\\boxed{1}$.",
         "explanation": "Okay, so 1/2 + 1/2 ... \\boxed{3} no wait.", "source": "bespoke_stratos"},
        {"id": "1", "question": "Generate an executable Python function ... echo the input.", "answer": "",
         "solution": "```python\nprint(input())\n```", "explanation": "parse input...", "source": "bespoke_stratos"},
    ]
    assert skipped == {"missing_solution": 1}


def test_bespoke_missing_conversations_column():
    with pytest.raises(BenchmarkFormatError, match="bespoke_stratos: column 'conversations' missing"):
        normalise("bespoke_stratos", [{"system": "s", "messages": []}])


@pytest.mark.parametrize("loader,row,column", [
    ("aime24", {"id": 1, "problem": "p"}, "answer"),
    ("aime25", {"question": "p", "answer": "1"}, "problem"),
    ("aime26", {"problem_idx": 1, "problem": "p"}, "answer"),
    ("hmmt_feb_2026", {"problem_idx": 1, "answer": "1"}, "problem"),
    ("amc23", {"problem": "p", "answer": 1.0}, "question"),
    ("math500", {"problem": "p", "solution": "s"}, "answer"),
])
def test_missing_column_is_a_clear_error(loader, row, column):
    with pytest.raises(BenchmarkFormatError, match=f"{loader}: column '{column}' missing"):
        normalise(loader, [row])


def test_unknown_loader():
    with pytest.raises(ValueError, match="unknown loader 'aime99'"):
        normalise("aime99", [])
    assert set(LOADERS) == {"dapo_math", "aime24", "aime25", "aime26", "hmmt_feb_2026", "amc23", "math500",
                            "gpqa_diamond", "bespoke_stratos"}


# ---- the stage ----


def test_prepare_dataset_stage_writes_fixed_schema(tmp_path):
    src = tmp_path / "aime"
    (src / "data").mkdir(parents=True)
    rows = [{"id": 60 + k, "problem": f"Problem {k}", "solution": f"S{k}", "answer": str(k) if k != 3 else None,
             "url": "u", "year": "2024"} for k in range(8)]
    pd.DataFrame(rows).to_parquet(src / "data" / "train-00000-of-00001.parquet")
    pd.DataFrame(rows[:1]).to_parquet(src / "data" / "test-00000-of-00001.parquet")   # another split: ignored
    out = tmp_path / "results" / "data" / "aime24.parquet"
    cfg = {"loader": "aime24", "hub_id": "HuggingFaceH4/aime_2024", "revision": None, "hub_config": None,
           "hub_split": "train", "path": str(src), "max_rows": 5, "split": "aime24", "seed": 3}
    prepare_dataset.main(["--cfg", json.dumps(cfg), "--out", str(out)])
    table = pq.read_table(out)
    assert table.schema == pa.schema([(c, pa.string()) for c in PROBLEM_COLUMNS])
    got = read_problems(out)
    # 8 read, row 3 has no answer -> 7 kept; 5 of them by the documented seeded rule, in original order
    kept_ids = [str(60 + k) for k in range(8) if k != 3]
    pick = sorted(random.Random("3:aime24").sample(range(7), 5))
    assert [r["id"] for r in got] == [kept_ids[i] for i in pick]
    assert got[0] == {"id": got[0]["id"], "question": f"Problem {int(got[0]['id']) - 60}",
                      "answer": str(int(got[0]["id"]) - 60), "solution": f"S{int(got[0]['id']) - 60}",
                      "explanation": "", "source": "aime24"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]   # no temp file left
    # same config -> same file; all rows when max_rows is null
    counts = prepare_dataset.prepare({**cfg, "max_rows": None}, str(out))
    assert counts == {"read": 8, "kept": 7, "written": 7, "skipped": {"missing_answer": 1}}
    assert [r["id"] for r in read_problems(out)] == kept_ids


def test_prepare_dataset_no_usable_rows_fails(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"problem": "", "answer": "1"}])
    with pytest.raises(SystemExit, match="no usable rows out of 1"):
        prepare_dataset.prepare({"loader": "aime25", "path": str(path), "split": "aime25", "seed": 0},
                                str(tmp_path / "o.parquet"))
    assert not (tmp_path / "o.parquet").exists()


# ---- rlrt.io problem files ----


def test_read_write_problems_roundtrip_and_errors(tmp_path):
    rows = [{"id": "1", "question": "q", "answer": "a", "solution": "", "explanation": "", "source": "s"}]
    write_problems(tmp_path / "p.parquet", rows)
    assert read_problems(tmp_path / "p.parquet") == rows
    write_jsonl(tmp_path / "p.jsonl", [{"question": "1+2", "answer": "3", "terms": [1, 2]}])
    assert read_problems(tmp_path / "p.jsonl") == [{"question": "1+2", "answer": "3", "terms": [1, 2]}]
    with pytest.raises(ValueError, match=r"row 0: column 'answer' is int"):
        write_problems(tmp_path / "bad.parquet", [{**rows[0], "answer": 3}])
    with pytest.raises(ValueError, match=r"missing columns \['source'\]"):
        write_problems(tmp_path / "bad.parquet", [{k: v for k, v in rows[0].items() if k != "source"}])
    with pytest.raises(ValueError, match="unknown problem file type '.csv'"):
        read_problems(tmp_path / "p.csv")
    assert not (tmp_path / "bad.parquet").exists()
    write_problems(tmp_path / "empty.parquet", [])
    assert pq.read_table(tmp_path / "empty.parquet").schema.names == list(PROBLEM_COLUMNS)
