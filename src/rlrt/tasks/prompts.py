"""Prompt format shared by pretraining, sampling and evaluation."""

from __future__ import annotations

import re

__all__ = ["INSTRUCTION", "CHAT_TEMPLATE", "user_message", "chat_prompt", "strip_think"]

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


def chat_prompt(tokenizer, user: str) -> str:
    """The generation prompt for one user turn, rendered by the tokenizer's own chat template."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def strip_think(text: str) -> str:
    """Remove <think>...</think> blocks (and a dangling leading '</think>'
    prefix or unterminated '<think>' tail) plus surrounding whitespace."""
    text = _THINK_RE.sub(" ", text)
    if "</think>" in text:  # opening tag was part of the prompt
        text = text.split("</think>")[-1]
    if "<think>" in text:  # unterminated thinking: drop the tail
        text = text.split("<think>")[0]
    return text.strip()
