"""Stage: train the byte-level BPE tokenizer (digits as single tokens) on the task corpus and the templates."""

from __future__ import annotations

import logging
import random

from rlrt.io import atomic_dir, read_jsonl
from rlrt.stages.common import parse, parser
from rlrt.tasks.arithmetic import scratchpad_solution, solution_text, verify_solution
from rlrt.tasks.prompts import user_message
from rlrt.tasks.tokenizer import train_tokenizer
from rlrt.teacher import REFERENCE_TEMPLATE, SIBLING_TEMPLATE

log = logging.getLogger("rlrt.tokenizer")


def corpus(rows: list[dict], seed: int) -> list[str]:
    """Every kind of text the models will see: questions + instruction, solutions, traces, teacher templates."""
    rng = random.Random(seed)

    # role headers the chat template renders, so "user" / "assistant" become single tokens
    texts = [SIBLING_TEMPLATE, REFERENCE_TEMPLATE] + ["<|im_start|>user\n", "<|im_start|>assistant\n"] * 200
    for row in rows:
        order = list(range(len(row["terms"])))
        rng.shuffle(order)
        texts += [user_message(row["question"]), row["solution"], solution_text(row["terms"], order),
                  scratchpad_solution(row["terms"], rng), verify_solution(row["terms"], rng)]
    return texts


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--train", required=True)
    p.add_argument("--out", required=True)
    args, cfg = parse(p, argv)
    rows = read_jsonl(args.train)
    tok = train_tokenizer(corpus(rows, int(cfg.get("seed", 0))), vocab_size=int(cfg["vocab_size"]))
    with atomic_dir(args.out) as tmp:
        tok.save_pretrained(tmp)
    log.info("tokenizer: %d tokens", len(tok))


if __name__ == "__main__":
    main()
