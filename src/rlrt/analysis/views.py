"""Running the model for the analyses: sampling and grading groups, teacher contexts, position-chunked pair passes.

Two *views* of the same response ids are compared position by position: the student and the teacher (same model,
the teacher's prompt carries a correct solution, RLRT Eq. 1), or a fine-tuned and a base model (same prompt,
Sec. 6.3). :func:`pair_position_stats` runs each model's trunk once per micro-batch of rows, then applies the
LM head to ``chunk`` positions at a time and hands the two ``(b, c, V)`` logit chunks to a reduction ``fn``
(e.g. :func:`rlrt.analysis.divergence.position_asymmetry`); only the reduced values are kept. At paper scale
(V = 151k, T = 38k) this keeps memory at ``b * chunk * V`` instead of ``b * T * V``.

No file I/O here: the stages load checkpoints and write outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlrt.backends.local.model import load_checkpoint
from rlrt.backends.local.rollout import Rollouts, left_pad, response_mask_from_ids, sample
from rlrt.tasks.prompts import chat_prompt, user_message
from rlrt.teacher import build_contexts, problem_contexts, teacher_user_message

StatFn = Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]]


@dataclass
class Groups:
    """``n`` graded rollouts for each of ``G`` problems; rollout ``(g, i)`` is row ``g * n + i`` of ``rollouts``."""

    rows: list[dict]  # the G problems (question / answer / solution)
    n: int
    rollouts: Rollouts
    correct: np.ndarray  # (G, n) int 0/1

    def response(self, g: int, i: int) -> list[int]:
        """Valid response token ids of rollout (g, i), EOS included when it was generated."""
        r = g * self.n + i
        length = int(self.rollouts.response_mask[r].sum())
        return self.rollouts.response_ids[r, :length].tolist()

    def text(self, g: int, i: int) -> str:
        return self.rollouts.texts[g * self.n + i]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The analyses' ``device`` setting: ``None`` / ``"cpu"`` -> CPU (the embedded default); ``"cuda"`` -> the GPU
    (an error when there is none); ``"auto"`` -> the GPU when one is visible."""
    name = str(device or "cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"analysis device {name!r} asked for but no CUDA GPU is visible")
    return torch.device(name)


def load_model(path, device: str | torch.device | None = None):
    """(model, tokenizer) from a checkpoint folder, on ``device`` (:func:`resolve_device`): float32 on the CPU,
    bfloat16 on a GPU (paper scale: ``device: cuda`` under ``backend: verl``)."""
    model, tok = load_checkpoint(path)
    dev = resolve_device(device)
    if dev.type != "cpu":
        model = model.to(device=dev, dtype=torch.bfloat16)
    return model, tok


def _device(model) -> torch.device:
    return next(model.parameters()).device


class _OnDevice:
    """A model on a GPU as ``rollout.sample`` sees it: ``generate`` with the batch moved there and the tokens
    moved back. ``rlrt.backends.local.sampler.supports`` is false for it (the lean decoding loop is a CPU loop), so
    ``sample`` takes its ``generate`` path."""

    def __init__(self, model):
        self.inner, self.config = model, model.config

    @property
    def training(self) -> bool:
        return self.inner.training

    def eval(self):
        self.inner.eval()
        return self

    def train(self, mode: bool = True):
        self.inner.train(mode)
        return self

    def generate(self, input_ids: Tensor, attention_mask: Tensor, **kw) -> Tensor:
        dev = _device(self.inner)
        return self.inner.generate(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), **kw).cpu()


def sample_groups(model, tok, rows: Sequence[dict], n: int, max_new_tokens: int, sampling: dict, seed: int,
                  grade_fn: Callable[[list[str], list[str]], list[float]], batch_size: int = 256,
                  progress: bool = False, template_kwargs: dict | None = None) -> Groups:
    """Sample ``n`` responses per problem with ``sampling`` (temperature, top_p, top_k) and grade them; prompts
    are rendered with the backbone's chat ``template_kwargs`` (as every prompt here)."""
    prompts = [chat_prompt(tok, user_message(r["question"]), template_kwargs) for r in rows]
    on_cpu = _device(model).type == "cpu"
    ro = sample(model if on_cpu else _OnDevice(model), tok, prompts, n, max_new_tokens,
                temperature=float(sampling["temperature"]),
                top_p=float(sampling["top_p"]), top_k=int(sampling["top_k"]), seed=seed, batch_size=batch_size,
                progress=progress)
    scores = grade_fn(ro.texts, [r["answer"] for r in rows for _ in range(n)])
    correct = (np.asarray(scores, dtype=float) > 0.5).astype(np.int64).reshape(len(rows), n)
    return Groups(list(rows), n, ro, correct)


def teacher_context(groups: Groups, g: int, i: int, kind: str = "sibling", split: str = "?") -> tuple[str, str]:
    """The privileged context ``c`` for rollout (g, i) and the template kind it goes in.

    The choice is the training teacher's (:func:`rlrt.teacher.build_contexts`): ``sibling`` (RLRT's teacher) is
    the first *other* correct rollout of the same problem, thinking stripped. Where training gives no context
    (no other correct rollout: the update then leaves the sample unweighted), an analysis still needs a teacher
    view to compare, so this falls back to the dataset's reference solution in the ``reference`` template -- the
    context :func:`rlrt.teacher.build_contexts` gives for ``reference`` (RLSD's teacher) -- or, for a data set
    without solutions (AIME25/26, HMMT, AMC23), to the gold answer in the ``answer`` template (RLSD's teacher
    there). ``reference`` / ``answer``: always that text; an empty one raises naming ``split`` (the analysed split)
    and the row id. Returns ``(context, kind_used)``.
    """
    if kind not in ("sibling", "reference", "answer"):
        raise ValueError(f"unknown teacher context kind {kind!r}; expected sibling, reference or answer")
    if kind == "sibling":
        texts = [[groups.text(g, j) for j in range(groups.n)]]
        context = build_contexts("sibling", groups.correct[g: g + 1].tolist(), texts)[0][i]
        if context is not None:
            return context, "sibling"
        kind = "reference" if str(groups.rows[g].get("solution") or "").strip() else "answer"
    text = problem_contexts(kind, [groups.rows[g]], split)
    return build_contexts(kind, [[0.0]], [[""]], text)[0][0], kind


def teacher_prompt(tok, question: str, context: str, kind: str, template_kwargs: dict | None = None) -> list[int]:
    """Teacher prompt ids: the student's chat prompt with the context inserted in the user turn (rlrt.teacher),
    rendered with the backbone's chat ``template_kwargs``."""
    text = chat_prompt(tok, teacher_user_message(user_message(question), context, kind), template_kwargs)
    return tok(text, add_special_tokens=False)["input_ids"]


def student_prompt(tok, question: str, template_kwargs: dict | None = None) -> list[int]:
    return tok(chat_prompt(tok, user_message(question), template_kwargs), add_special_tokens=False)["input_ids"]


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token lists to (B, R) ids and a (B, R) mask."""
    width = max(max((len(s) for s in seqs), default=1), 1)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[k, : len(s)] = 1
    return ids, mask


def response_hidden(model, prompt_ids: Tensor, prompt_mask: Tensor, response_ids: Tensor,
                    response_mask: Tensor) -> Tensor:
    """Last-layer hidden states (B, R, H) that predict each response token (before the LM head).

    Same positions and masking as :func:`rlrt.backends.local.rollout.response_logits`; applying
    ``model.get_output_embeddings()`` to the result gives its logits.
    """
    dev = _device(model)  # inputs built on the CPU, run where the model lives
    input_ids = torch.cat([prompt_ids, response_ids], dim=1).to(dev)
    attn = torch.cat([prompt_mask, response_mask], dim=1).to(dev)
    pos = (torch.cumsum(attn, dim=1) - 1).clamp(min=0)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attn, position_ids=pos,
                              use_cache=False).last_hidden_state
    p = prompt_ids.shape[1]
    return hidden[:, p - 1: p - 1 + response_ids.shape[1]]


@torch.no_grad()
def pair_position_stats(
    model_a, prompts_a: Sequence[Sequence[int]], model_b, prompts_b: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]], fn: StatFn, pad_id: int, chunk: int = 256, micro_batch: int = 16,
) -> list[dict[str, np.ndarray]]:
    """Per-position statistics of two views of the same responses, computed ``chunk`` positions at a time.

    Row k is scored as ``model_a(prompts_a[k] ⊕ responses[k])`` against ``model_b(prompts_b[k] ⊕ responses[k])``.
    ``fn(logits_a, logits_b, ids)`` gets logit chunks (b, c, V) and the chunk's response ids (b, c), and returns
    tensors of shape (b, c, ...). Returns, for each row, a dict of numpy arrays (L_k, ...) over its valid positions.
    """
    out: list[dict[str, np.ndarray]] = []
    heads = (model_a.get_output_embeddings(), model_b.get_output_embeddings())
    for m in (model_a, model_b):
        m.eval()
    for s in range(0, len(responses), micro_batch):
        rows = range(s, min(s + micro_batch, len(responses)))
        r_ids, r_mask = right_pad([responses[k] for k in rows], pad_id)
        pa_ids, pa_mask = left_pad([list(prompts_a[k]) for k in rows], pad_id)
        pb_ids, pb_mask = left_pad([list(prompts_b[k]) for k in rows], pad_id)
        ha = response_hidden(model_a, pa_ids, pa_mask, r_ids, r_mask)
        hb = response_hidden(model_b, pb_ids, pb_mask, r_ids, r_mask).to(ha.device)
        r_ids = r_ids.to(ha.device)
        parts: dict[str, list[Tensor]] = {}
        for c in range(0, r_ids.shape[1], chunk):
            sl = slice(c, c + chunk)
            res = fn(heads[0](ha[:, sl]).float(), heads[1](hb[:, sl]).float(), r_ids[:, sl])
            for key, v in res.items():
                parts.setdefault(key, []).append(v.detach().cpu())
        full = {key: torch.cat(v, dim=1) for key, v in parts.items()}
        for j, k in enumerate(rows):
            length = len(responses[k])
            out.append({key: v[j, :length].numpy() for key, v in full.items()})
    return out


@torch.no_grad()
def generate_from_ids(model, tok, seqs: Sequence[Sequence[int]], max_new_tokens: int, sampling: dict, seed: int,
                      batch_size: int = 256) -> list[list[int]]:
    """Continue each token sequence (a full prompt ⊕ partial response) by sampling; returns the new tokens of each,
    up to and including the first EOS. Deterministic for a fixed ``seed`` and thread count."""
    from transformers import GenerationConfig

    pad_id, eos_id = tok.pad_token_id, tok.eos_token_id
    gen_cfg = GenerationConfig(
        do_sample=True, temperature=float(sampling["temperature"]), top_p=float(sampling["top_p"]),
        top_k=int(sampling["top_k"]), max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_id,
        use_cache=True,
    )
    model.eval()
    torch.manual_seed(seed)
    out: list[list[int]] = []
    for s in range(0, len(seqs), batch_size):
        ids, mask = left_pad([list(x) for x in seqs[s: s + batch_size]], pad_id)
        dev = _device(model)
        new = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                             generation_config=gen_cfg)[:, ids.shape[1]:].cpu()
        valid = response_mask_from_ids(new, eos_id)
        out.extend(new[k, : int(valid[k].sum())].tolist() for k in range(new.shape[0]))
    return out
