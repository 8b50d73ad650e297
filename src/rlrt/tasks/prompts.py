"""Prompt format shared by pretraining, sampling and evaluation."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping

__all__ = ["INSTRUCTION", "CHAT_TEMPLATE", "user_message", "chat_prompt", "template_variables",
           "check_template_kwargs", "strip_think"]

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Qwen-style ChatML template (no default system prompt, no tool support).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_THINK_RE = re.compile(r"\s*<think>.*?</think>\s*", re.DOTALL)


def user_message(question: str) -> str:
    return question + " " + INSTRUCTION


@lru_cache(maxsize=32)
def template_variables(template: str) -> frozenset[str] | None:
    """The variables a Jinja chat template reads from its context (``messages``, ``add_generation_prompt``,
    ``enable_thinking``, ...); None when this plain parser cannot read it (a tag only transformers' own
    environment knows, e.g. ``{% generation %}``)."""
    from jinja2 import Environment, TemplateSyntaxError, meta

    try:
        ast = Environment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except TemplateSyntaxError:
        return None
    return frozenset(meta.find_undeclared_variables(ast))


def check_template_kwargs(template: Any, kwargs: Mapping[str, Any], where: str = "chat_template_kwargs") -> None:
    """Refuse ``kwargs`` the chat ``template`` never reads (Jinja ignores an unknown variable, so a misspelled
    ``enable_thinking`` or a switch on a model without one would otherwise change nothing, silently). A template
    that is not one string (a dict of named templates, None) is not checked."""
    if not kwargs or not isinstance(template, str):
        return
    reads = template_variables(template)
    if reads is None:
        return
    unread = sorted(set(kwargs) - reads)
    if unread:
        raise ValueError(f"{where}: {unread} not read by the model's chat template (it reads {sorted(reads)}); "
                         f"remove them, or use a model whose template has them")


def chat_prompt(tokenizer, user: str, template_kwargs: Mapping[str, Any] | None = None) -> str:
    """The generation prompt for one user turn, rendered by the tokenizer's own chat template.

    ``template_kwargs``: the backbone's ``chat_template_kwargs`` (e.g. Qwen3's ``{enable_thinking: false}``),
    passed to the template as variables; every prompt the pipeline renders for a backbone goes through here with
    them. None / empty renders exactly as without (the embedded default sets none)."""
    kw = dict(template_kwargs or {})
    check_template_kwargs(getattr(tokenizer, "chat_template", None), kw)
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True, **kw)


def strip_think(text: str) -> str:
    """Remove <think>...</think> blocks (and a dangling leading '</think>'
    prefix or unterminated '<think>' tail) plus surrounding whitespace."""
    text = _THINK_RE.sub(" ", text)
    if "</think>" in text:  # opening tag was part of the prompt
        text = text.split("</think>")[-1]
    if "<think>" in text:  # unterminated thinking: drop the tail
        text = text.split("<think>")[0]
    return text.strip()
