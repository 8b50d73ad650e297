import random

import pytest
from transformers import AutoTokenizer

from rlrt.tasks.arithmetic import generate_splits, scratchpad_solution
from rlrt.tasks.prompts import CHAT_TEMPLATE, INSTRUCTION, user_message
from rlrt.tasks.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def corpus():
    rows = generate_splits(0, {"train": {"n": 200, "n_terms": 3, "min_digits": 1, "max_digits": 3}})["train"]
    rng = random.Random(0)
    texts = []
    for r in rows:
        texts += [user_message(r["question"]), r["solution"], scratchpad_solution(r["terms"], rng)]
    return rows, texts


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus[1], vocab_size=320)


def _chat(tok, q):
    return tok.apply_chat_template([{"role": "user", "content": user_message(q)}],
                                   tokenize=False, add_generation_prompt=True)


def test_deterministic(corpus, tok):
    tok2 = train_tokenizer(corpus[1], vocab_size=320)
    assert tok.get_vocab() == tok2.get_vocab()
    assert len(tok) <= 320


def test_digits_single_tokens(tok):
    ids = tok.encode("12345")
    assert tok.convert_ids_to_tokens(ids) == list("12345")
    assert len(tok.encode("What is 987 + 6?")) >= 4 + len("What is ".split())


def test_special_tokens(tok):
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.padding_side == "left"
    for t in ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"]:
        assert tok.encode(t) == [tok.convert_tokens_to_ids(t)]
    assert tok.unk_token_id is None or tok.unk_token_id not in tok.encode("é ∑ 🙂")


@pytest.mark.parametrize("text", [
    "12 + 67 = 79. 79 + 345 = 424. So the answer is \\boxed{424}.",
    "<think>\n12 + 67: 2 + 7 = 9 carry 0;\n\n  so 79.\n</think>\nx",
    "  leading and trailing spaces \t\n",
    "unicode é ∑ 🙂 {}\\ {{nested}}",
])
def test_roundtrip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_chat_template(tok, corpus):
    q = corpus[0][0]["question"]
    text = _chat(tok, q)
    assert text == f"<|im_start|>user\n{q} {INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tok.encode(text)) == text
    full = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}], tokenize=False)
    assert full == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"


def test_save_load(tok, corpus, tmp_path):
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == CHAT_TEMPLATE
    assert loaded.eos_token == tok.eos_token and loaded.pad_token == tok.pad_token
    assert loaded.padding_side == "left"
    for text in corpus[1][:30] + [_chat(tok, "What is 1 + 2?")]:
        assert loaded.encode(text) == tok.encode(text)
    assert _chat(loaded, "What is 1 + 2?") == _chat(tok, "What is 1 + 2?")
