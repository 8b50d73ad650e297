"""Bad input data: every defect is a clear error naming the file and line, or a counted, logged skip -- never a
silently shorter or wrong data set, never a half-written output that looks complete."""

from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest

from rlrt.io import PROBLEM_COLUMNS, read_json, read_jsonl, read_problems, write_jsonl, write_problems
from rlrt.stages import prepare_data, prepare_dataset
from rlrt.tasks.arithmetic import generate_splits
from rlrt.tasks.validate import (check_prompt_lengths, check_unique_ids, find_overlap, prompt_lengths,
                                 question_key, remove_overlap)

ROWS = [{"id": "a", "question": "What is 1 + 2?", "answer": "3"},
        {"id": "b", "question": "What is 2 + 5?", "answer": "7"}]


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def problem(id_, question, answer="1"):
    return {"id": id_, "question": question, "answer": answer, "solution": "", "explanation": "", "source": "t"}


# ---- JSONL / JSON readers ----


def test_missing_jsonl_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        read_problems(tmp_path / "nope.parquet")


@pytest.mark.parametrize("content", [b"", b"\n \n"], ids=["empty", "blank-lines"])
def test_empty_jsonl_is_an_error(tmp_path, content):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"train\.jsonl: empty JSONL file"):
        read_jsonl(path)


def test_truncated_last_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl_bytes(ROWS) + b'{"id": "c", "quest')   # cut off mid-write
    with pytest.raises(ValueError, match=r"train\.jsonl:3: truncated last line"):
        read_jsonl(path)


def test_invalid_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl_bytes(ROWS[:1]) + b"{not json}\n" + jsonl_bytes(ROWS[1:]))
    with pytest.raises(ValueError, match=r"train\.jsonl:2: malformed JSON line"):
        read_jsonl(path)
    path.write_bytes(jsonl_bytes(ROWS) + b"[1, 2]\n")
    with pytest.raises(ValueError, match=r"train\.jsonl:3: expected a JSON object, got list"):
        read_jsonl(path)


def test_non_utf8_names_file_line_and_byte(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl_bytes(ROWS[:1]) + b'{"id": "x", "question": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        read_jsonl(path)


def test_read_json_errors_name_the_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"m\.json:1:1: empty file"):
        read_json(path)
    path.write_bytes(b'{\n  "a": [1,\n')
    with pytest.raises(ValueError, match=r"m\.json:3:\d+: invalid JSON"):
        read_json(path)
    path.write_bytes(b'{\n "a": "\xff"}')
    with pytest.raises(ValueError, match=r"m\.json:2: not valid UTF-8"):
        read_json(path)
    path.write_bytes(b'{"a": 1}')
    assert read_json(path) == {"a": 1}


def test_failed_write_leaves_no_complete_looking_file(tmp_path):
    path = tmp_path / "out.jsonl"

    def rows():
        yield ROWS[0]
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert list(tmp_path.iterdir()) == []          # nothing, not a 1-row file
    write_jsonl(path, ROWS)
    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert read_jsonl(path) == ROWS                # the previous complete file is untouched


# ---- problem files ----


def test_problem_row_without_answer_or_question_names_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl_bytes([ROWS[0], {"id": "b", "question": "What is 2 + 5?"}]))
    with pytest.raises(ValueError, match=r"train\.jsonl:2: no gold answer"):
        read_problems(path)
    path.write_bytes(jsonl_bytes([ROWS[0], {"id": "b", "question": "  ", "answer": "7"}]))
    with pytest.raises(ValueError, match=r"train\.jsonl:2: no question"):
        read_problems(path)


def test_problem_parquet_truncated_or_empty(tmp_path):
    path = tmp_path / "aime24.parquet"
    write_problems(path, [problem(str(k), f"q{k}") for k in range(50)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"aime24\.parquet: unreadable parquet file"):
        read_problems(path)
    write_problems(path, [])
    with pytest.raises(ValueError, match=r"aime24\.parquet: no problems"):
        read_problems(path)


def test_blank_gold_answers_are_kept_and_counted_in_the_log(tmp_path, caplog):
    path = tmp_path / "rlt_train.parquet"
    write_problems(path, [problem("0", "q0"), problem("1", "q1", answer="")])
    with caplog.at_level(logging.WARNING, logger="rlrt.io"):
        rows = read_problems(path)
    assert [r["id"] for r in rows] == ["0", "1"]
    assert "1 of 2 problems have no gold answer" in caplog.text


# ---- real data sets (prepare_dataset) ----


def aime25_cfg(path):
    return {"loader": "aime25", "hub_id": "math-ai/aime25", "path": str(path), "hub_split": "test",
            "split": "train", "seed": 0}


@pytest.mark.parametrize("content,error", [
    (jsonl_bytes([{"problem": "p", "answer": "1", "id": "0"}]) + b'{"problem": "q", "ans', r"test\.jsonl:2: truncated"),
    (b'{"problem": "p\xff", "answer": "1", "id": "0"}\n', r"test\.jsonl:1: not valid UTF-8"),
    (b"", r"test\.jsonl: empty JSONL file"),
], ids=["truncated", "non-utf8", "empty"])
def test_local_jsonl_copy_errors_name_file_and_line(tmp_path, content, error):
    src = tmp_path / "test.jsonl"
    src.write_bytes(content)
    out = tmp_path / "data" / "train.parquet"
    with pytest.raises(ValueError, match=error):
        prepare_dataset.prepare(aime25_cfg(src), str(out))
    assert not out.exists()


def test_rows_without_answer_and_repeated_ids_are_counted_logged_skips(tmp_path, caplog):
    src = tmp_path / "test.jsonl"
    write_jsonl(src, [{"problem": "p0", "answer": "1", "id": "0"}, {"problem": "p1", "answer": None, "id": "1"},
                      {"problem": "p2", "answer": "", "id": "2"}, {"problem": "p3", "answer": "4", "id": "0"},
                      {"problem": "p4", "answer": "5", "id": "4"}])
    out = tmp_path / "train.parquet"
    with caplog.at_level(logging.INFO, logger="rlrt"):
        counts = prepare_dataset.prepare(aime25_cfg(src), str(out))
    assert counts == {"read": 5, "kept": 2, "written": 2, "skipped": {"duplicate_id": 1, "missing_answer": 2}}
    assert [r["id"] for r in read_problems(out)] == ["0", "4"]
    assert "'missing_answer': 2" in caplog.text


def test_train_questions_in_a_test_split_are_removed_counted_and_logged(tmp_path, caplog):
    test = tmp_path / "data" / "aime24.parquet"
    write_problems(test, [problem("t0", "Find  the SUM of 2 and 3."), problem("t1", "Unrelated.")])
    src = tmp_path / "train.jsonl"
    write_jsonl(src, [{"problem": f"Problem {k}", "answer": str(k), "id": str(k)} for k in range(4)]
                + [{"problem": "find the sum of 2\nand 3.", "answer": "5", "id": "4"}])
    out = tmp_path / "data" / "train.parquet"
    with caplog.at_level(logging.WARNING, logger="rlrt.validate"):
        counts = prepare_dataset.prepare(aime25_cfg(src), str(out), exclude=[str(test)])
    assert counts["removed_overlap"] == {"aime24": 1} and counts["kept"] == counts["written"] == 4
    assert [r["id"] for r in read_problems(out)] == ["0", "1", "2", "3"]
    assert "removed 1 of 5 rows" in caplog.text and "aime24" in caplog.text
    # the CLI flag reaches it too
    prepare_dataset.main(["--cfg", json.dumps(aime25_cfg(src)), "--out", str(out), "--exclude", str(test)])
    assert len(pq.read_table(out)) == 4 and pq.read_table(out).schema.names == list(PROBLEM_COLUMNS)


# ---- synthetic splits (prepare_data) ----


def test_synthetic_splits_checked_before_anything_is_written(tmp_path, monkeypatch):
    good = generate_splits(0, {"train": {"n": 200, "n_terms": [2, 3], "min_digits": 1, "max_digits": 2},
                               "test": {"n": 20, "n_terms": 3, "min_digits": 1, "max_digits": 2}})
    prepare_data.check_splits(good)     # the generator's own output passes
    dup = {"train": good["train"], "test": [dict(good["test"][0], id=good["train"][0]["id"])]}
    with pytest.raises(ValueError, match="repeated id"):
        prepare_data.check_splits(dup)
    leak = {"train": good["train"], "test": [dict(good["train"][5], id="test-x")]}
    with pytest.raises(ValueError, match=r"train shares questions with \{'test': 1\}"):
        prepare_data.check_splits(leak)
    monkeypatch.setattr(prepare_data, "generate_splits", lambda seed, specs: leak)
    cfg = {"source": "synthetic", "seed": 0, "splits": {"train": {}, "test": {}}}
    with pytest.raises(ValueError, match="train shares questions"):
        prepare_data.main(["--cfg", json.dumps(cfg), "--out-dir", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_validate_helpers():
    assert question_key(" What  is\n1+2? ") == question_key("what is 1+2?")
    with pytest.raises(ValueError, match=r"'a' in \['x', 'y'\]"):
        check_unique_ids({"x": ROWS, "y": ROWS[:1]})
    rows = [{"question": "Q1"}, {"question": "q2"}, {"question": "Q3"}]
    others = {"s1": [{"question": "q3"}], "s2": [{"question": "Q3"}, {"question": "Q2"}]}
    assert find_overlap(rows, others) == {"s1": [2], "s2": [1]}
    kept, counts = remove_overlap(rows, others, "train")
    assert kept == rows[:1] and counts == {"s1": 1, "s2": 1}


# ---- prompts longer than the model's context ----


def test_check_prompt_lengths_error_and_skip(caplog):
    lengths = [10, 900, 20, 1000]
    with pytest.raises(ValueError, match=r"test\.parquet: 2 of 4 prompts exceed the 512-token limit: row 1 "
                                         r"\(900 tokens\), row 3 \(1000 tokens\)"):
        check_prompt_lengths(lengths, 512, "test.parquet")
    with caplog.at_level(logging.WARNING, logger="rlrt.validate"):
        assert check_prompt_lengths(lengths, 512, "train.parquet", policy="skip") == [0, 2]
    assert "skipped 2 of 4 prompts" in caplog.text
    assert check_prompt_lengths(lengths, 1000, "x") == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no room for a prompt"):
        check_prompt_lengths(lengths, 0, "x")


def test_prompt_lengths_with_the_pipeline_tokenizer():
    from rlrt.tasks.tokenizer import train_tokenizer

    tok = train_tokenizer(["What is 1 + 2? Please reason step by step."] * 4, vocab_size=300)
    short, long = prompt_lengths(tok, ["What is 1 + 2?", "What is " + " + ".join(["12"] * 300) + "?"])
    assert 10 < short < 100 and long > short + 600      # template + instruction + question, digits one token each
    assert check_prompt_lengths([short, long], 512, "train", policy="skip") == [0]
