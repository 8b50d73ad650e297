"""The ``rlt`` block (the RLT paper's branch): its backbones and splits exist, its sizes nest (n_small <
n_questions, mini-batches within batches, ks within n), and under ``backend: verl`` the teacher's trainer gets GPUs
that divide its batches."""

from __future__ import annotations

from typing import Any

from rlrt.errors import ConfigError
from rlrt.plan import data_splits


def check_rlt(cfg: dict[str, Any]) -> None:
    rlt = cfg.get("rlt")
    if not rlt or not rlt.get("enabled", True):
        return
    if cfg["backend"] == "verl":  # the teacher's RL: its reward worker takes GPUs of the job, the trainer the rest
        res = cfg.get("resources") or {}
        gpus = int({**(res.get("default") or {}), **(res.get("rlt_train") or {})}.get("gpus") or 0)
        reward = int((cfg.get("verl") or {}).get("rlt_reward_gpus", 1))
        if gpus <= reward:
            raise ConfigError(f"config key 'resources.rlt_train.gpus': {gpus} GPU(s) leave none for the RLT teacher's "
                              f"trainer next to its reward worker's {reward} (verl.rlt_reward_gpus)")
        trl = rlt["teacher_rl"]  # verl balances the rollout batch and each mini-batch over the trainer's GPUs
        for what, size in (("question_batch", trl["question_batch"]), ("mini_batch", trl["mini_batch"])):
            if size * trl["n_samples"] % (gpus - reward):
                raise ConfigError(
                    f"config key 'verl.rlt_reward_gpus': the RLT teacher's trainer gets resources.rlt_train.gpus - "
                    f"verl.rlt_reward_gpus = {gpus} - {reward} = {gpus - reward} GPUs, which do not divide "
                    f"rlt.teacher_rl.{what} x n_samples = {size * trl['n_samples']} sequences; choose GPU counts "
                    f"whose difference divides it (e.g. 8 and 4)")
    for key in ("teacher", "reward_student"):
        if rlt[key] not in cfg["backbones"]:
            raise ConfigError(f"config key 'rlt.{key}': unknown backbone {rlt[key]!r}")
    for b in rlt["students"]:
        if b not in cfg["backbones"]:
            raise ConfigError(f"config key 'rlt.students': unknown backbone {b!r}")
    for name in rlt.get("test_splits") or []:
        if name not in data_splits(cfg) or name == "train":
            raise ConfigError(f"config key 'rlt.test_splits': {name!r} is not a test split ({data_splits(cfg)})")
    split = rlt.get("data_split", "train")
    if split not in data_splits(cfg):
        raise ConfigError(f"config key 'rlt.data_split': {split!r} is not a data split ({data_splits(cfg)})")
    if cfg["data"]["source"] == "synthetic" and rlt["n_questions"] > cfg["data"]["splits"][split]["n"]:
        raise ConfigError(f"config key 'rlt.n_questions': more than the {split} split has "
                          f"(data.splits.{split}.n)")
    if rlt["n_small"] >= rlt["n_questions"]:
        raise ConfigError("config key 'rlt.n_small': must be smaller than rlt.n_questions")
    if rlt["reward_rank"]["n_questions"] > rlt["n_questions"]:
        raise ConfigError("config key 'rlt.reward_rank.n_questions': larger than rlt.n_questions")
    if rlt["teacher_rl"]["mini_batch"] > rlt["teacher_rl"]["question_batch"]:
        raise ConfigError("config key 'rlt.teacher_rl.mini_batch': larger than rlt.teacher_rl.question_batch")
    cold = {**cfg["rl"], **rlt["cold_start"]}  # what rules/rlt.smk hands the cold-start GRPO runs
    if cold["mini_batch"] > cold["question_batch"]:
        key = "mini_batch" if "mini_batch" in rlt["cold_start"] else "question_batch"
        raise ConfigError(f"config key 'rlt.cold_start.{key}': the cold start's mini-batch ({cold['mini_batch']}) is "
                          f"larger than its question batch ({cold['question_batch']}; unset keys come from rl)")
    for k in rlt["eval"]["ks"]:
        if k > rlt["eval"]["n"]:
            raise ConfigError(f"config key 'rlt.eval.ks': k={k} is larger than rlt.eval.n={rlt['eval']['n']}")

