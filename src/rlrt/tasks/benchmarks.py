"""Real data sets -> the normalised problem row (``rlrt.io.PROBLEM_COLUMNS``: id, question, answer, solution,
source, all strings).

One small pure function per data set reads a row *in that hub data set's own column layout* (as ``datasets``
yields it: nested columns are Python lists / dicts) and returns the normalised row. Each docstring names the
public source its layout was read from. On 2026-12-03 every layout was compared with stored copies of the hub's
own pages (dataset cards' ``dataset_info`` features, file trees; for DAPO-Math-17k, math-ai/aime25, math-ai/amc23
and MATH-500 exact copies of the card or public code that reads the set, their own cards carrying no feature
list) and matched; no loader has read the real files (no network here). A changed upstream layout shows up as a
:class:`BenchmarkFormatError` naming the missing column and the data set, never as a silently wrong row.

Rows that are individually bad (no gold answer, empty question, a repeated id or question) are not fatal:
:func:`normalise` skips them, counts each by reason and logs the counts. A loader raises :class:`SkipRow` for a
reason only it can see (e.g. a DAPO prompt without the known instruction wrapper).

Questions are stored *bare*: the pipeline adds its own instruction (``rlrt.tasks.prompts.user_message``), so
data-set-specific instructions (DAPO's "Answer: $Answer" wrapper, Bespoke-Stratos' "Return your final response
within \\boxed{}.") are stripped here rather than doubled (and contradicted) in the prompt.
"""

from __future__ import annotations

import logging
import math
import numbers
import random
from collections import Counter
from typing import Any, Callable, Iterable, Mapping

from rlrt.io import PROBLEM_COLUMNS
from rlrt.tasks.answers import extract_boxed

__all__ = ["LOADERS", "ANSWER_OPTIONAL", "BenchmarkFormatError", "SkipRow", "normalise", "answer_text",
           "dapo_math", "aime24", "aime25", "aime26", "hmmt_feb_2026", "amc23", "math500", "gpqa_diamond",
           "bespoke_stratos", "DAPO_PREFIX", "DAPO_SUFFIX", "GPQA_LETTERS", "GPQA_INSTRUCTION"]

log = logging.getLogger("rlrt.benchmarks")


class BenchmarkFormatError(ValueError):
    """The rows do not have the layout the loader was written for (a column is missing or has the wrong type):
    the wrong loader, or an upstream layout change. Fatal, and names the data set and column."""


class SkipRow(Exception):
    """This one row is unusable; ``reason`` is the counter key :func:`normalise` reports."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---- small shared readers ----


def _col(row: Mapping[str, Any], name: str, dataset: str) -> Any:
    if not isinstance(row, Mapping):
        raise BenchmarkFormatError(f"{dataset}: expected a row mapping, got {type(row).__name__}")
    if name not in row:
        raise BenchmarkFormatError(f"{dataset}: column {name!r} missing (row has columns {sorted(row)})")
    return row[name]


def _text(value: Any, name: str, dataset: str) -> str:
    """A text column as a stripped str; None -> "" (a null cell is a bad row, counted by the caller)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BenchmarkFormatError(f"{dataset}: column {name!r} is {type(value).__name__}, expected a string")
    return value.strip()


def answer_text(value: Any) -> str:
    """A gold answer as text: None / NaN -> "" (missing); integral numbers without a decimal point (AMC23
    stores 27.0 for 27; MathArena's AIME answers are int64); other floats by ``repr`` (0.5 -> "0.5");
    strings stripped."""
    if value is None or isinstance(value, bool):
        return "" if value is None else str(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return ""
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value).strip()


def _id(value: Any, index: int) -> str:
    """A row id as str; a missing/null id falls back to the row's position in the split."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return str(index)
    return answer_text(value) if isinstance(value, numbers.Number) else str(value).strip()


def _seq(value: Any, name: str, dataset: str) -> list:
    """A list column (``datasets`` yields list; pandas/pyarrow may yield a numpy array or tuple)."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise BenchmarkFormatError(f"{dataset}: column {name!r} is {type(value).__name__}, expected a list")
    return list(value)


def _row(id_: str, question: str, answer: str, solution: str, source: str, explanation: str = "") -> dict[str, str]:
    return {"id": id_, "question": question, "answer": answer, "solution": solution, "explanation": explanation,
            "source": source}


# ---- one loader per data set ----

DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
               "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def dapo_math(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """BytedTsinghua-SIA/DAPO-Math-17k (verl RL layout): ``prompt`` = chat list [{role: user, content}],
    ``reward_model`` = {ground_truth, style}, ``extra_info`` = {index (a uuid string)}, plus data_source,
    ability. Layout from the dataset card (features) and public loaders (e.g. verl-style DAPO readers, open-r1's
    DAPO-Math-17k-Processed notes). The user content is ``DAPO_PREFIX + question + DAPO_SUFFIX``: both are
    stripped (the pipeline adds its own boxed-answer instruction); a prompt without them is skipped as
    ``unrecognised_prompt`` rather than kept with a contradictory "Answer:" instruction.

    The hub copy repeats each of its ~17.9k rows 100 times (1,791,700 rows, "duplicated by ~100x by accident",
    the DAPO authors): :func:`normalise` keeps the first occurrence, counting a repeat as ``duplicate_id`` when
    it carries the same ``extra_info.index`` and ``duplicate_question`` when only the text repeats (~17.4k
    distinct prompts remain). About 3.3k of them are in Chinese (open-r1's ``en`` config drops them); they are
    kept: the paper names the corpus without a language filter."""
    ds = "dapo_math"
    prompt = _seq(_col(row, "prompt", ds), "prompt", ds)
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        raise SkipRow("no_user_message")
    content = _text(users[-1].get("content"), "prompt.content", ds)
    suffix = DAPO_SUFFIX.strip()  # ``content`` is stripped, so the suffix has no leading blank line left
    if not content.startswith(DAPO_PREFIX) or not content.endswith(suffix):
        raise SkipRow("unrecognised_prompt")
    question = content[len(DAPO_PREFIX): -len(suffix)].strip()
    rm = _col(row, "reward_model", ds)
    if not isinstance(rm, Mapping) or "ground_truth" not in rm:
        raise BenchmarkFormatError(f"{ds}: column 'reward_model.ground_truth' missing (reward_model={rm!r:.80})")
    extra = row.get("extra_info")
    rid = extra.get("index") if isinstance(extra, Mapping) else None
    return _row(_id(rid, index), question, answer_text(rm["ground_truth"]), "", ds)


def aime24(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """HuggingFaceH4/aime_2024 (split train, 30 rows): id (int64), problem, solution, answer (str), url, year --
    the dataset card's features."""
    ds = "aime24"
    return _row(_id(row.get("id"), index), _text(_col(row, "problem", ds), "problem", ds),
                answer_text(_col(row, "answer", ds)), _text(row.get("solution"), "solution", ds), ds)


def aime25(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """math-ai/aime25 (split test, 30 rows): problem, answer, id -- as read by public evaluation code
    (``load_dataset("math-ai/aime25", split="test")`` then ``row["problem"]``, ``row["answer"]``, ``row["id"]``).
    No solution column (``solution`` = "" unless one is present)."""
    ds = "aime25"
    return _row(_id(row.get("id"), index), _text(_col(row, "problem", ds), "problem", ds),
                answer_text(_col(row, "answer", ds)), _text(row.get("solution"), "solution", ds), ds)


def _matharena(row: Mapping[str, Any], index: int, ds: str) -> dict[str, str]:
    """MathArena competition sets: problem_idx (int64), problem, answer (int64 for AIME, string for HMMT),
    problem_type (list, HMMT) -- the MathArena dataset cards' features."""
    return _row(_id(row.get("problem_idx"), index), _text(_col(row, "problem", ds), "problem", ds),
                answer_text(_col(row, "answer", ds)), "", ds)


def aime26(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """MathArena/aime_2026 (split train, 30 rows): problem_idx, answer (int64), problem."""
    return _matharena(row, index, "aime26")


def hmmt_feb_2026(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """MathArena/hmmt_feb_2026 (split train, 33 rows): problem_idx, answer (string, LaTeX), problem_type,
    problem."""
    return _matharena(row, index, "hmmt_feb_2026")


def amc23(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """math-ai/amc23 (split test, 40 rows): question, answer (float64: 27.0 -> "27"), id, url -- public
    evaluation configs read ``question`` / ``answer`` (mirrors of the same table show id int64, answer float64)."""
    ds = "amc23"
    return _row(_id(row.get("id"), index), _text(_col(row, "question", ds), "question", ds),
                answer_text(_col(row, "answer", ds)), "", ds)


def math500(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """HuggingFaceH4/MATH-500 (split test, 500 rows): problem, solution, answer, subject, level, unique_id
    (e.g. "test/precalculus/807.json") -- the dataset card's features."""
    ds = "math500"
    return _row(_id(row.get("unique_id"), index), _text(_col(row, "problem", ds), "problem", ds),
                answer_text(_col(row, "answer", ds)), _text(row.get("solution"), "solution", ds), ds)


GPQA_LETTERS = "ABCD"
GPQA_INSTRUCTION = "Answer with the letter (A, B, C or D) of the correct option."
"""The question's last line, after the options: the grader scores a boxed *letter* (``rlrt.tasks.grading``:
``\\boxed{gluon}`` for option "A) gluon" is wrong), and the pipeline's instruction (``user_message``: "... put your
final answer within \\boxed{}.") follows it, rather than running on after option D's text."""
_GPQA_CHOICES = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")


def gpqa_diamond(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """Idavidrein/gpqa, config gpqa_diamond (gated; 198 rows, CSV on the hub): "Question", "Correct Answer",
    "Incorrect Answer 1..3", "Explanation", "Record ID" (+ many annotation columns) -- the GPQA release's CSV
    header, as read by public evaluation code (simple-evals, lm-eval).

    The four choices are shuffled by a ``random.Random`` seeded with the row id (string seeds hash with SHA-512,
    so the order is the same in every process and run); question = text + "\\n\\nA) ...\\nB) ...\\n...D) ..." +
    "\\n\\n" + :data:`GPQA_INSTRUCTION`, answer = the correct choice's letter, solution = the explanation."""
    ds = "gpqa_diamond"
    question = _text(_col(row, "Question", ds), "Question", ds)
    choices = [_text(_col(row, c, ds), c, ds) for c in _GPQA_CHOICES]
    rid = _id(row.get("Record ID"), index)
    if not all(choices):
        raise SkipRow("missing_choice")
    order = list(range(4))
    random.Random(f"gpqa_diamond:{rid}").shuffle(order)
    lines = [f"{GPQA_LETTERS[k]}) {choices[j]}" for k, j in enumerate(order)]
    letter = GPQA_LETTERS[order.index(0)]
    text = question + "\n\n" + "\n".join(lines) + "\n\n" + GPQA_INSTRUCTION if question else ""
    return _row(rid, text, letter, _text(row.get("Explanation"), "Explanation", ds), ds)


BESPOKE_INSTRUCTION = "Return your final response within \\boxed{}."
_SOL_OPEN, _SOL_CLOSE = "<|begin_of_solution|>", "<|end_of_solution|>"
_THOUGHT_OPEN, _THOUGHT_CLOSE = "<|begin_of_thought|>", "<|end_of_thought|>"


def bespoke_stratos(row: Mapping[str, Any], index: int) -> dict[str, str]:
    """bespokelabs/Bespoke-Stratos-17k (split train): system, conversations = [{from: user, value},
    {from: assistant, value}] -- the dataset card and the Sky-T1 / Bespoke curator code. The assistant value is
    ``<|begin_of_thought|>...<|end_of_thought|>\\n\\n<|begin_of_solution|>...<|end_of_solution|>``.

    question = the user value without its leading "Return your final response within \\boxed{}." (math rows
    carry it; the pipeline adds its own instruction); solution = the text between the solution tags (RLT
    distils question + solution); explanation = the text between the thought tags (the reference trace RLT's
    baseline students and the teacher's SFT warm-up learn from); answer = the last \\boxed{} of the solution, ""
    if none (code / puzzle rows: RLT needs no gold answer). No id column: id = the row's position in the split. A row without solution tags
    is skipped (``missing_solution``)."""
    ds = "bespoke_stratos"
    conv = _seq(_col(row, "conversations", ds), "conversations", ds)
    by_role: dict[str, str] = {}
    for turn in conv:
        if not isinstance(turn, Mapping) or "from" not in turn or "value" not in turn:
            raise BenchmarkFormatError(f"{ds}: a conversations turn is not {{from, value}}: {turn!r:.80}")
        by_role.setdefault(str(turn["from"]), _text(turn["value"], "conversations.value", ds))
    question = by_role.get("user", "")
    if question.startswith(BESPOKE_INSTRUCTION):
        question = question[len(BESPOKE_INSTRUCTION):].strip()
    reply = by_role.get("assistant", "")
    start, end = reply.find(_SOL_OPEN), reply.rfind(_SOL_CLOSE)
    if start < 0 or end < start:
        raise SkipRow("missing_solution")
    solution = reply[start + len(_SOL_OPEN): end].strip()
    if not solution:
        raise SkipRow("missing_solution")
    answer = extract_boxed(solution)
    t0, t1 = reply.find(_THOUGHT_OPEN), reply.find(_THOUGHT_CLOSE)
    explanation = reply[t0 + len(_THOUGHT_OPEN): t1].strip() if 0 <= t0 < t1 else ""
    return _row(str(index), question, (answer or "").strip(), solution, ds, explanation)


LOADERS: dict[str, Callable[[Mapping[str, Any], int], dict[str, str]]] = {
    "dapo_math": dapo_math,
    "aime24": aime24,
    "aime25": aime25,
    "aime26": aime26,
    "hmmt_feb_2026": hmmt_feb_2026,
    "amc23": amc23,
    "math500": math500,
    "gpqa_diamond": gpqa_diamond,
    "bespoke_stratos": bespoke_stratos,
}
"""Loader name (``data.datasets.<split>.loader``) -> row function ``(row, index) -> normalised row``."""

ANSWER_OPTIONAL = frozenset({"bespoke_stratos"})
"""Loaders whose rows are kept without a gold answer (distillation traces: question + solution suffice)."""


def normalise(loader: str, rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, str]], dict[str, int]]:
    """Normalise ``rows`` (one data set in its hub layout) with ``LOADERS[loader]``.

    Returns (kept rows in input order, skipped counts by reason). Reasons: a loader's own :class:`SkipRow`
    reasons; ``empty_question``; ``missing_answer`` (unless the loader is in ``ANSWER_OPTIONAL``);
    ``duplicate_id`` (an id already kept); ``duplicate_question`` (the same question text as a kept row, e.g.
    DAPO's ~100x repeats); ``conflicting_answer`` (a repeated question whose gold answer differs from the kept
    row's: the *first* is kept, and the count says how many repeats disagreed). A layout mismatch raises
    :class:`BenchmarkFormatError` naming the data set, column and row index."""
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; known: {sorted(LOADERS)}")
    fn = LOADERS[loader]
    need_answer = loader not in ANSWER_OPTIONAL
    out: list[dict[str, str]] = []
    skipped: Counter[str] = Counter()
    seen_ids: set[str] = set()
    seen_questions: dict[str, str] = {}
    n = 0
    for index, raw in enumerate(rows):
        n += 1
        try:
            row = fn(raw, index)
        except SkipRow as e:
            skipped[e.reason] += 1
            continue
        except BenchmarkFormatError as e:
            raise BenchmarkFormatError(f"{e} [row {index}]") from None
        assert tuple(row) == PROBLEM_COLUMNS, row.keys()
        if not row["question"]:
            skipped["empty_question"] += 1
        elif need_answer and not row["answer"]:
            skipped["missing_answer"] += 1
        elif row["id"] in seen_ids:
            skipped["duplicate_id"] += 1
        elif row["question"] in seen_questions:
            reason = "duplicate_question" if seen_questions[row["question"]] == row["answer"] else \
                "conflicting_answer"
            skipped[reason] += 1
        else:
            seen_ids.add(row["id"])
            seen_questions[row["question"]] = row["answer"]
            out.append(row)
    counts = dict(sorted(skipped.items()))
    log.info("%s: %d rows read, %d kept, %d skipped %s", loader, n, len(out), sum(counts.values()), counts or "")
    return out, counts
