"""``rlrt.io.write_problems`` writes the format its path's suffix names (issue 31 §4): a ``.jsonl`` path used to
get parquet bytes, which ``read_problems`` then rejected as a "malformed JSON line"."""

from __future__ import annotations

import pytest

from rlrt.io import PROBLEM_COLUMNS, read_jsonl, read_problems, write_problems


def rows():
    return [{"id": str(k), "question": f"What is {k} + {k}? é", "answer": str(2 * k), "solution": f"{k}+{k}",
             "explanation": "", "source": "unit"} for k in range(3)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_round_trip_by_suffix(tmp_path, suffix):
    path = tmp_path / f"split{suffix}"
    write_problems(path, rows())
    assert read_problems(path) == rows()
    if suffix == ".jsonl":  # really JSONL: one object a line, the fixed column order
        got = read_jsonl(path)
        assert got == rows() and all(list(r) == list(PROBLEM_COLUMNS) for r in got)
    else:
        assert path.read_bytes()[:4] == b"PAR1"


@pytest.mark.parametrize("name", ["split.json", "split.csv", "split", "split.jsonl.gz"])
def test_other_suffix_is_refused_before_writing(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ValueError, match=r"cannot write problems as .*\.parquet or \.jsonl"):
        write_problems(path, rows())
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_jsonl_checks_rows_like_parquet(tmp_path):
    path = tmp_path / "bad.jsonl"
    with pytest.raises(ValueError, match="row 1: column 'answer' is int"):
        write_problems(path, [rows()[0], {**rows()[1], "answer": 2}])
    assert not path.exists()  # nothing half-written
