"""Pre-training with a privileged context (``backbones.<b>.privileged_context``): documents whose user turn shows
a correct solution in the teacher views' templates. Off, the batches and random stream are the plain ones."""

from __future__ import annotations

import random
import re

import pytest

from rlrt.stages.backbone import context_message, make_batch_fn
from rlrt.tasks.arithmetic import generate_splits
from rlrt.tasks.prompts import chat_prompt, user_message
from rlrt.tasks.tokenizer import train_tokenizer
from rlrt.teacher import REFERENCE_TEMPLATE, SIBLING_TEMPLATE

SPLIT = {"n": 40, "n_terms": [2, 3, 4], "min_digits": 1, "max_digits": 2}


@pytest.fixture(scope="module")
def rows():
    return generate_splits(0, {"train": SPLIT})["train"]


@pytest.fixture(scope="module")
def tok(rows):
    texts = [SIBLING_TEMPLATE, REFERENCE_TEMPLATE] + [user_message(r["question"]) + r["solution"] for r in rows]
    return train_tokenizer(texts * 5, 320)


def decode(tok, batch):
    return [tok.decode(ids) for ids, _ in batch]


def test_off_keeps_the_plain_documents_and_random_stream(rows, tok):
    """fraction 0 draws nothing extra: after a batch the generator is where the plain recipe leaves it
    (``sample`` the rows, then one ``shuffle`` of each row's step order) and no user turn has a context."""
    rng = random.Random(7)
    batch = make_batch_fn(tok, rows, "compact", True, context_fraction=0.0, context_follow=0.9)(rng, 8)
    ref = random.Random(7)
    for row in ref.sample(rows, 8):
        ref.shuffle(list(range(len(row["terms"]))))
    assert rng.getstate() == ref.getstate()
    assert not any("Correct solution" in t or "reference solution" in t for t in decode(tok, batch))
    assert decode(tok, batch) == decode(tok, make_batch_fn(tok, rows, "compact", True)(random.Random(7), 8))


def test_context_message_is_a_correct_solution_in_a_teacher_template(rows):
    row = next(r for r in rows if len(r["terms"]) == 4)
    order = [2, 0, 3, 1]
    follow = [context_message(row, order, random.Random(s), 1.0) for s in range(20)]
    templates = set()
    for msg in follow:
        assert msg.startswith(user_message(row["question"]))
        assert f"\\boxed{{{row['answer']}}}" in msg
        a, b, c, d = (row["terms"][i] for i in order)
        assert f"{a} + {b} = {a + b}. {a + b} + {c} = {a + b + c}." in msg  # follow = 1: the answer's own order
        templates.add("Correct solution" in msg)
    assert templates == {True, False}  # both the sibling and the reference template occur
    free = [context_message(row, order, random.Random(s), 0.0) for s in range(40)]
    assert all(f"\\boxed{{{row['answer']}}}" in m for m in free)
    assert len({re.findall(r"\d+ \+ \d+ = \d+", m)[0] for m in free}) > 2  # follow = 0: other orders too


def test_fraction_and_follow_shape_the_documents(rows, tok):
    rng = random.Random(0)
    make = make_batch_fn(tok, rows, "compact", True, context_fraction=0.25, context_follow=1.0)
    texts = [t for _ in range(40) for t in decode(tok, make(rng, 10))]
    with_ctx = [t for t in texts if "Correct solution" in t or "reference solution" in t]
    assert 0.15 < len(with_ctx) / len(texts) < 0.35
    for t in with_ctx:  # follow = 1: the assistant turn repeats the solution shown in the user turn
        user, answer = t.split("assistant", 1)
        steps = answer.split("So the answer")[0].strip().strip("\n")
        assert steps and steps in user
    # loss masks cover prompt and answer in pre-training (the context tokens are learned too)
    ids, mask = make(random.Random(1), 1)[0]
    assert len(ids) == len(mask) and mask[0] == 0 and all(mask[1:])
    assert chat_prompt(tok, "x")  # the tokenizer renders the chat template the examples use
