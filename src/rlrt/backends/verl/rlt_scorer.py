"""The RLT teacher's reward on a device: the local engine's two scoring passes, run where the models are.

:class:`RLTScorer` holds the frozen teacher and student and scores raw teacher completions with the local
engine's own ``rlrt.backends.local.rlt.score_explanations`` (sequence builders, passes) and so with the equations
of ``rlrt.methods.rlt_reward``: the local and the paper-scale rewards cannot drift apart (``tests/test_verl_rlt.py``
checks equality to 1e-5). The whole call runs under ``torch.device(device)``: every id, mask and logit tensor
the builders create is made on the models' device, so on a GPU the logits never leave it and r_KL (the
full-vocabulary KL, chunked over positions by ``token_kl``) is computed there; only the (N,) rewards come back.

Memory (one micro-batch row of T response tokens, vocabulary V, fp32 logits from ``response_logits``): about
4 x T x V x 4 bytes at the peak of the student pass (its bf16 and fp32 logits, the tempered copy and its
log-softmax), and T x V x 4 for each kept logits tensor; ``micro_batch`` must be 1 at paper scale (T = 16k,
V = 152k: ~10 GB per fp32 logits tensor), see docs/paper-scale.md.

verl's batch helpers below read one sample's own tensors (:func:`sample_texts`): verl's agent loop sends each
sample to the reward as its own unpadded ``DataProto`` (prompts (1, P), responses (1, R)), so samples of one
micro-batch have different widths and are never concatenated as tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch

from rlrt.backends.local.rlt import score_explanations
from rlrt.tasks.rlt_format import parse_explanation

log = logging.getLogger("rlrt.verl.rlt")


@dataclass(frozen=True)
class RLTRewardSettings:
    """The reward's constants (config ``rlt.teacher_rl``; paper: alpha 0.01, lambda 3, penalty -1, T 0.7).

    ``micro_batch``: rows per scoring pass; 1 by default because at paper scale (16k-token explanations, 152k
    vocabulary) one row's logits alone are ~10 GB in fp32."""

    alpha: float = 0.01
    lam: float = 3.0
    temperature: float = 0.7  # rewards are scored at the sampling temperature (SakanaAI/RLT)
    missing_tag_penalty: float = -1.0
    micro_batch: int = 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RLTRewardSettings":
        """From the ``teacher_rl`` block (its ``lambda`` is ``lam``); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        d = {("lam" if k == "lambda" else k): v for k, v in d.items()}
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in names})


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class RLTScorer:
    """The RLT reward of raw teacher completions, batched and without gradients, on ``device``.

    ``teacher`` and ``student`` must share ``tokenizer`` (the explanation ids are the same in both contexts:
    RLT pairs models of one family). Completions are the text the teacher generated after its prefix.
    """

    def __init__(self, teacher, student, tokenizer, settings: RLTRewardSettings = RLTRewardSettings(),
                 device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        self.teacher = teacher.to(self.device).eval().requires_grad_(False)
        self.student = student.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.settings = settings
        self.missing_tags = 0  # running count of completions without the format tags (penalised)
        self.scored = 0

    @classmethod
    def from_paths(cls, teacher_path: str, student_path: str, settings: RLTRewardSettings = RLTRewardSettings(),
                   device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "RLTScorer":
        """Load both models with ``AutoModelForCausalLM`` and the teacher's tokenizer; bf16 on GPU, fp32 on CPU."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        tok = AutoTokenizer.from_pretrained(teacher_path)
        s_tok = AutoTokenizer.from_pretrained(student_path)
        if tok.get_vocab() != s_tok.get_vocab():
            raise ValueError(f"RLT reward: teacher {teacher_path} and student {student_path} have different "
                             "vocabularies; the per-token KL needs one tokenizer")
        if tok.pad_token_id is None:
            raise ValueError(f"RLT reward: tokenizer of {teacher_path} has no pad token")
        teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=dtype)
        student = AutoModelForCausalLM.from_pretrained(student_path, dtype=dtype)
        return cls(teacher, student, tok, settings, device)

    def score(self, questions: Sequence[str], solutions: Sequence[str],
              completions: Sequence[str]) -> dict[str, torch.Tensor]:
        """(N,) ``reward``, ``r_ss``, ``r_kl``, ``format_ok`` (on the CPU) for N (question, solution, completion)."""
        if not (len(questions) == len(solutions) == len(completions)):
            raise ValueError(f"RLT reward: {len(questions)} questions, {len(solutions)} solutions, "
                             f"{len(completions)} completions")
        expl = [parse_explanation(c) for c in completions]
        s = self.settings
        with torch.device(self.device):  # the builders' ids and masks are made beside the models' logits
            out = score_explanations(self.teacher, self.student, self.tokenizer, questions, solutions, expl, s.alpha,
                                     s.lam, s.temperature, s.micro_batch, s.missing_tag_penalty)
        out = {k: v.cpu() for k, v in out.items()}
        bad = int((~out["format_ok"]).sum())
        self.missing_tags += bad
        self.scored += len(expl)
        if bad:
            log.warning("RLT reward: %d of %d completions lack the format tags -> penalty %g (%d of %d so far)",
                        bad, len(expl), s.missing_tag_penalty, self.missing_tags, self.scored)
        return out

    def score_batch(self, data) -> tuple[torch.Tensor, dict[str, list]]:
        """A verl ``DataProto`` batch -> (rm_scores (B, R) with the reward on each last valid response token,
        per-sample extra info). ``data`` holds ``prompts`` (B, P), ``responses`` (B, R), ``attention_mask``
        (B, P + R) and ``non_tensor_batch["extra_info"]`` dicts with ``question`` and ``solution``."""
        texts = decode_responses(data, self.tokenizer)
        questions, solutions = sample_fields(data)
        out = self.score(questions, solutions, texts)
        valid = response_lengths(data)
        rm = torch.zeros_like(data.batch["responses"], dtype=torch.float32)
        rm[torch.arange(len(valid)), valid - 1] = out["reward"].to(torch.float32)
        return rm, {k: out[k].tolist() for k in ("r_ss", "r_kl", "format_ok")}

    def score_samples(self, samples: Sequence) -> list[dict]:
        """One verl ``DataProto`` per sample, each with its own (unpadded) widths, scored together -> verl's
        ``run_single`` results ``{reward_score, reward_extra_info}`` in order. A multi-sequence sample
        (several turns) is scored by its last sequence, as verl's own managers do."""
        fields3 = [sample_texts(d[-1:], self.tokenizer) for d in samples]
        out = self.score(*(list(x) for x in zip(*fields3)))
        return [{"reward_score": float(out["reward"][i]),
                 "reward_extra_info": {k: out[k][i].item() for k in ("r_ss", "r_kl", "format_ok")}}
                for i in range(len(samples))]


def response_lengths(data) -> torch.Tensor:
    """(B,) valid response lengths: the response part of verl's attention mask (right-padded responses)."""
    P = data.batch["prompts"].shape[-1]
    lengths = data.batch["attention_mask"][:, P:].sum(-1).long()
    if bool((lengths < 1).any()):
        raise ValueError("RLT reward: an empty response (no valid token to carry the reward)")
    return lengths


def decode_responses(data, tokenizer) -> list[str]:
    """The teacher's raw completions: the valid response ids decoded with special tokens skipped, as the local
    engine's sampler and verl's own managers decode (RLT's tags are plain text, never special tokens)."""
    ids = data.batch["responses"]
    return [tokenizer.decode(row[:n].tolist(), skip_special_tokens=True)
            for row, n in zip(ids, response_lengths(data).tolist())]


def sample_fields(data) -> tuple[list[str], list[str]]:
    """(questions, solutions) from ``extra_info`` (written by ``teacher_rl_rows``); a clear error if absent."""
    extra = data.non_tensor_batch.get("extra_info")
    if extra is None:
        raise KeyError("RLT reward: the batch has no extra_info; the teacher parquet must come from teacher_rl_rows")
    qs, ss = [], []
    for i, e in enumerate(extra):
        if not isinstance(e, dict) or "question" not in e or "solution" not in e:
            raise KeyError(f"RLT reward: sample {i} extra_info lacks question/solution: {e!r}")
        qs.append(str(e["question"]))
        ss.append(str(e["solution"]))
    return qs, ss


def sample_texts(data, tokenizer) -> tuple[str, str, str]:
    """(question, solution, raw completion) of a one-sample ``DataProto``, read from its own tensors."""
    if len(data) != 1:
        raise ValueError(f"RLT reward: sample_texts takes one sample, got {len(data)}")
    (q,), (s,) = sample_fields(data)
    (text,) = decode_responses(data, tokenizer)
    return q, s, text
