"""Stage: build a backbone checkpoint -- pretrain a fresh tiny Qwen3 on task text, or SFT a parent checkpoint.

* ``mode: pretrain`` (S-base, M-base): random init from ``arch``; next-token loss on whole chat-formatted
  problem+solution documents (a random step order each time) for a fixed budget of steps, so that test accuracy
  starts low but non-zero. ``privileged_context: {fraction, follow}`` (off by default) shows a fraction of the
  documents with a correct solution inside the user turn, in the teacher views' own templates, and the answer
  then takes that solution's step order with probability ``follow``: a stand-in that, like a real LLM shown a
  worked solution, leans toward it (see :func:`context_message`).
* ``mode: sft`` (S-instruct, M-thinking): start from the parent checkpoint; loss on the assistant turn only;
  ``format: compact`` (prompt -> step-by-step answer), ``format: verify`` (a <think> block that works the sum
  and checks it in another order, then answers: the thinking model's stand-in) or ``format: scratchpad`` (long
  <think> column-addition traces, ~4x the compact length).
* ``mode: hub`` (paper scale: Qwen3-4B-Base, ...): no training; the pretrained weights are staged into the
  checkpoint folder from a local copy (``path``, symlinked) or downloaded at the pinned ``revision``
  (``rlrt.hub.stage_model``).
"""

from __future__ import annotations

import json
import logging
import os
import random

from rlrt.backends.local.lm import chat_example, train_lm
from rlrt.backends.local.model import build_model, load_checkpoint, n_params, save_checkpoint, seed_everything
from rlrt.backends.local.resume import Resumable
from rlrt.io import read_jsonl, write_json
from rlrt.stages.common import parse, parser
from rlrt.tasks.arithmetic import scratchpad_solution, solution_text, verify_solution
from rlrt.tasks.prompts import user_message
from rlrt.teacher import teacher_user_message

log = logging.getLogger("rlrt.backbone")


def context_message(row: dict, order: list[int], rng: random.Random, follow: float) -> str:
    """A pre-training user turn with a privileged context: the question in the sibling (RLRT / SDPO / SRPO) or
    the reference-solution (RLSD) template of ``rlrt.teacher`` (one of the two at random), around a correct
    compact solution whose step order is the answer's own (``order``) with probability ``follow``, else an
    independent random order (the answer then does not copy it).

    Why: the teacher view P_T = pi(. | h_t, c) only differs from the student view where the model reads c.
    Stand-ins pre-trained on bare problems never saw a context, and the unfamiliar prompt lowers P_T on almost
    every token (measured on the default S-base: log P_T - log P_S -1.06 per token, README), so RLRT's weight
    exceeds 1 everywhere instead of singling out tokens; a model that learned to follow a shown solution puts
    more mass on the context's step order, so a correct rollout that takes another order gets P_S / P_T > 1 on
    its few divergent tokens (RLRT's "self-driven" tokens) -- the mechanism the papers' claims are about.
    """
    ctx_order = list(order)
    if rng.random() >= follow:
        rng.shuffle(ctx_order)
    kind = "sibling" if rng.random() < 0.5 else "reference"
    return teacher_user_message(user_message(row["question"]), solution_text(row["terms"], ctx_order), kind)


def make_batch_fn(tokenizer, rows: list[dict], fmt: str, loss_on_prompt: bool, context_fraction: float = 0.0,
                  context_follow: float = 0.0):
    """Batches of chat examples in the backbone's ``format``; ``context_fraction`` of them (pre-training's
    ``privileged_context``) carry a solution in the user turn (:func:`context_message`). At 0 the random stream
    is exactly the one without the option (no extra draws)."""
    def make_batch(rng: random.Random, batch_size: int):
        out = []
        for row in rng.sample(rows, batch_size) if batch_size <= len(rows) else rng.choices(rows, k=batch_size):
            order = list(range(len(row["terms"])))
            rng.shuffle(order)
            if fmt == "scratchpad":
                answer = scratchpad_solution(row["terms"], rng, order)
            elif fmt == "verify":
                answer = verify_solution(row["terms"], rng, order)
            else:
                answer = solution_text(row["terms"], order)
            msg = user_message(row["question"])
            if context_fraction > 0 and rng.random() < context_fraction:
                msg = context_message(row, order, rng, context_follow)
            out.append(chat_example(tokenizer, msg, answer, loss_on_prompt))
        return out

    return make_batch


def stage_pretrained(cfg: dict, out: str, metrics: str) -> None:
    from rlrt.hub import stage_model

    source = stage_model(cfg["hub_id"], cfg["revision"], cfg.get("path"), out)
    card = {"name": cfg["name"], "mode": "hub", "kind": cfg.get("kind"), "hub_id": cfg["hub_id"],
            "revision": cfg["revision"], "source": source}
    write_json(metrics, {"card": card, "history": []})
    log.info("%s: staged %s@%s", cfg["name"], cfg["hub_id"], cfg["revision"])


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__)
    p.add_argument("--data", help="train split (pretrain / sft)")
    p.add_argument("--tokenizer", help="tokenizer folder (pretrain)")
    p.add_argument("--parent", help="parent checkpoint folder (sft)")
    p.add_argument("--out", required=True, help="checkpoint folder")
    p.add_argument("--metrics", required=True, help="training-history JSON")
    args, cfg = parse(p, argv, offline=False)
    if cfg["mode"] == "hub":
        stage_pretrained(cfg, args.out, args.metrics)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # stand-ins are trained here from local files only
    seed_everything(int(cfg["seed"]))
    if cfg["mode"] == "pretrain":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        model = build_model(cfg["arch"], tok)
    else:
        model, tok = load_checkpoint(args.parent)
    log.info("%s: %s from %s, %d params", cfg["name"], cfg["mode"], args.parent or "scratch", n_params(model))
    rows = read_jsonl(args.data)
    fmt = cfg.get("format", "compact")
    resume = Resumable.beside(args.out, cfg, cfg.get("resume_every"))
    ctx = cfg.get("privileged_context") or {}
    history = train_lm(
        model, tok, make_batch_fn(tok, rows, fmt, loss_on_prompt=cfg["mode"] == "pretrain",
                                  context_fraction=float(ctx.get("fraction", 0.0)),
                                  context_follow=float(ctx.get("follow", 0.0))),
        steps=int(cfg["steps"]), batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]),
        warmup_steps=int(cfg.get("warmup_steps", 10)), seed=int(cfg["seed"]), desc=f"{cfg['mode']}:{cfg['name']}",
        resume=resume,
    )
    card = {"name": cfg["name"], "mode": cfg["mode"], "format": fmt, "kind": cfg.get("kind"),
            "n_params": n_params(model), "stand_in_for": cfg.get("stand_in_for", "")}
    save_checkpoint(model, tok, args.out, extra={"rlrt_backbone.json": json.dumps(card, indent=2)})
    write_json(args.metrics, {"card": card, "history": history})
    resume.clear()
    from rlrt.tracking import log_run

    log_run(cfg.get("tracking"), f"{cfg['mode']}/{cfg['name']}",
            {"stage": cfg["mode"], "backbone": cfg["name"], "method": cfg["mode"], "seed": str(cfg["seed"])},
            {k: v for k, v in cfg.items() if k != "tracking"}, history, {"final_loss": history[-1]["loss"]},
            artifacts=[args.metrics])


if __name__ == "__main__":
    main()
