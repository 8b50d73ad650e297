"""Each stand-in model as it will be built and sampled: its architecture's heads divide (else torch stops the
backbone job), and every response length it samples leaves room for a prompt in its context (else the RL or
evaluation job stops late with "no room for a prompt").

A stand-in's context is ``arch.max_position_embeddings`` (``rlrt.backends.local.model``'s default 1024 when unset);
an SFT backbone has its parent's. A hub model's context is in its ``config.json``, which validation does not
fetch: its prompt room is checked when a job loads it. The prompt's own length depends on the data (and the
tokenizer the workflow trains), so here a response length must leave at least one token of context; the jobs
check every prompt against the room left (``rlrt.tasks.validate.check_prompt_lengths``)."""

from __future__ import annotations

from typing import Any

from rlrt.errors import ConfigError

DEFAULT_CONTEXT = 1024  # rlrt.backends.local.model.qwen3_config's max_position_embeddings when arch leaves it out


def check_arch(cfg: dict[str, Any]) -> None:
    """``num_key_value_heads`` divides ``num_attention_heads`` (grouped-query attention shares each key/value head
    among a whole number of query heads), ``num_attention_heads`` divides ``hidden_size``, and the head size
    ``hidden_size / num_attention_heads`` is even (RoPE rotates pairs of dimensions)."""
    for name, b in cfg["backbones"].items():
        arch = b.get("arch")
        if not arch:
            continue
        key = f"backbones.{name}.arch"
        hidden, heads = arch["hidden_size"], arch["num_attention_heads"]
        kv = arch.get("num_key_value_heads", heads)
        if heads % kv:
            raise ConfigError(f"config key '{key}.num_key_value_heads': {kv} does not divide "
                              f"{key}.num_attention_heads ({heads}); grouped-query attention shares each key/value "
                              f"head among a whole number of query heads")
        if hidden % heads:
            raise ConfigError(f"config key '{key}.hidden_size': {hidden} is not divisible by "
                              f"{key}.num_attention_heads ({heads}); each head gets hidden_size / num_attention_heads "
                              f"dimensions")
        if (hidden // heads) % 2:
            raise ConfigError(f"config key '{key}.hidden_size': {hidden} / {key}.num_attention_heads ({heads}) = "
                              f"{hidden // heads} dimensions per head, an odd number; rotary position embeddings "
                              f"rotate pairs of dimensions, so the head size must be even")


def context(cfg: dict[str, Any], backbone: str) -> tuple[int, str] | None:
    """(context length, the key that sets it) of ``backbone`` when the config knows it: a stand-in's
    ``max_position_embeddings`` (its parent's for an SFT backbone); ``None`` for a hub model."""
    b = cfg["backbones"][backbone]
    owner = b.get("parent") if b["mode"] == "sft" else backbone
    arch = (cfg["backbones"].get(owner) or {}).get("arch") if owner else None
    if not arch:
        return None
    return int(arch.get("max_position_embeddings", DEFAULT_CONTEXT)), f"backbones.{owner}.arch.max_position_embeddings"


def check_context(cfg: dict[str, Any]) -> None:
    """Every response length a backbone samples is below its context, naming both keys: its
    ``max_response_length`` (RL rollouts, analysis, evaluation when ``eval.max_new_tokens`` is null),
    ``eval.max_new_tokens`` on the RL backbones (evaluated), and under ``rlt`` the teacher's
    ``rlt.teacher_rl.max_new_tokens`` and the students' ``rlt.max_response_length``."""
    lengths: list[tuple[str, str, int]] = []  # (backbone, key, tokens)
    for name, b in cfg["backbones"].items():
        lengths.append((name, f"backbones.{name}.max_response_length", b["max_response_length"]))
    new_tokens = cfg["eval"].get("max_new_tokens")
    if new_tokens is not None:
        lengths += [(name, "eval.max_new_tokens", new_tokens) for name in cfg["rl_backbones"]]
    rlt = cfg.get("rlt") or {}
    if rlt and rlt.get("enabled", True):
        if rlt.get("teacher") in cfg["backbones"]:
            lengths.append((rlt["teacher"], "rlt.teacher_rl.max_new_tokens", rlt["teacher_rl"]["max_new_tokens"]))
        lengths += [(s, "rlt.max_response_length", rlt["max_response_length"]) for s in rlt["students"]
                    if s in cfg["backbones"]]
    for name, key, tokens in lengths:
        ctx = context(cfg, name)
        if ctx is not None and int(tokens) >= ctx[0]:
            raise ConfigError(f"config key {key!r}: {tokens} response tokens fill the whole context of {name!r} "
                              f"({ctx[1]} = {ctx[0]}), leaving no room for a prompt (limit {ctx[0] - int(tokens)} "
                              f"tokens); lower {key} or raise {ctx[1]}")
