"""The RLT branch on verl 0.9.1 at first contact (issues 31 §2, 37 §1-2), on CPU through verl's own code: the
teacher RL's datasets as its TaskRunner builds them, rewards for samples of different lengths as verl's agent
loop sends them, GPU splits verl can balance, the SFT's token cap and resume cadence, the chunked r_KL, the
per-request sampling seeds and the reward-rank's generation process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from test_verl_rlt import CASES, Q, QUESTIONS, S, _compose, _model_dir, local_reward, models, tok  # noqa: E402,F401

from rlrt.backends.local import rlt as local  # noqa: E402
from rlrt.backends.verl import rlt as vrlt  # noqa: E402
from rlrt.backends.verl import rlt_generate, rlt_sft  # noqa: E402
from rlrt.methods.rlt_reward import token_kl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER_RL = {"steps": 125, "question_batch": 16, "n_samples": 64, "mini_batch": 16, "lr": 1e-6, "temperature": 0.7,
            "alpha": 0.01, "lambda": 3.0, "beta": 0.04, "max_new_tokens": 16384, "missing_tag_penalty": -1.0}


def _rl_cfg(tmp_path, job):
    path = rlt_sft.write_parquet(vrlt.teacher_rl_rows(QUESTIONS), tmp_path / "t.parquet")
    loops = vrlt.write_agent_loop_config(tmp_path / "agent_loops.yaml")
    return path, _compose("ppo_trainer", vrlt.teacher_rl_overrides(job, "/m/t", "/m/s", str(path), "/c", str(loops)))


# ------------------------------------------------------------------------ issue 31 §2: the validation dataset

def test_teacher_rl_datasets_build_as_verls_task_runner_builds_them(tok, tmp_path):
    """verl's legacy TaskRunner (main_ppo_v0) always builds a validation dataset from ``data.val_files``; with
    ``null`` it failed in ``copy_to_local``. The composed config's train and val files go through the very
    ``create_rl_dataset`` it calls, on a real parquet."""
    from verl.trainer.ppo.utils import create_rl_dataset

    job = {"teacher_rl": {**PAPER_RL, "question_batch": 2, "mini_batch": 2, "n_samples": 4, "max_new_tokens": 64},
           "verl": {"max_prompt_length": 512}, "gpus": 2, "seed": 0}
    path, cfg = _rl_cfg(tmp_path, job)
    train = create_rl_dataset(cfg.data.train_files, cfg.data, tok, None, is_train=True,
                              max_samples=cfg.data.get("train_max_samples", -1))
    val = create_rl_dataset(cfg.data.val_files, cfg.data, tok, None, is_train=False,
                            max_samples=cfg.data.get("val_max_samples", -1))
    assert len(train) == len(val) == len(QUESTIONS)
    assert cfg.data.val_files == str(path) and cfg.trainer.test_freq == -1  # read, never evaluated
    assert [val[i]["extra_info"]["question"] for i in range(len(val))] == [q["question"] for q in QUESTIONS]


# ----------------------------------------------------- issue 37 §1: samples of different lengths, one micro-batch

def test_rewards_for_samples_of_different_lengths_as_verls_agent_loop_sends_them(tok, models, monkeypatch):
    """verl's ``AgentLoopWorker._compute_score`` sends each finished sample to a reward worker as its own
    unpadded DataProto; the manager batches them (micro-batch 2 and 3 here) although their prompt and response
    widths differ, and each gets the local engine's reward for its own text."""
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput, AgentLoopWorker

    teacher, student, _, _ = models
    cls = vrlt.RLTRewardManager
    monkeypatch.setattr(cls, "scorer", None)
    for micro in (2, 3):
        scorer = vrlt.RLTScorer(teacher, student, tok, vrlt.RLTRewardSettings(micro_batch=micro), device="cpu")
        batches = []
        real = scorer.score
        monkeypatch.setattr(scorer, "score", lambda q, s, c: batches.append(len(q)) or real(q, s, c))

        async def run():
            mgr = cls(config=OmegaConf.create({"reward": {"reward_kwargs": {"batch_wait_s": 0.05}}}), tokenizer=tok,
                      scorer=scorer)

            class Handle:  # a reward-loop worker actor: compute_score.remote(data) -> run_single(data)
                compute_score = SimpleNamespace(remote=lambda data: mgr.run_single(data))

            worker = object.__new__(AgentLoopWorker)
            worker.processor, worker.tokenizer, worker.reward_loop_worker_handles = None, tok, [Handle()]
            worker.mm_processor_kwargs = None
            outs = []
            for q, completion in CASES:
                prompt = local.encode(tok, local.teacher_prompt(tok, Q[q], S[q]))
                resp = local.encode(tok, completion) + [tok.eos_token_id]
                outs.append([AgentLoopOutput(prompt_ids=prompt, response_ids=resp, response_mask=[1] * len(resp),
                                             num_turns=2, metrics=AgentLoopMetrics())])
            kwargs = [{"extra_info": {"question": Q[q], "solution": S[q], "id": f"q{q}"}} for q, _ in CASES]
            await asyncio.gather(*[worker._compute_score(o, kw) for o, kw in zip(outs, kwargs)])
            return outs

        outs = asyncio.run(run())
        widths = {(len(o[0].prompt_ids), len(o[0].response_ids)) for o in outs}
        assert len(widths) == len(CASES)  # every sample its own shape
        assert max(batches) == micro > 1  # samples of different lengths scored together
        ref = local_reward(teacher, student, tok)
        assert np.allclose([o[-1].reward_score for o in outs], ref["reward"].numpy(), atol=1e-5)
        assert [o[-1].extra_fields["reward_extra_info"]["format_ok"] for o in outs] == ref["format_ok"].tolist()


# ------------------------------------------------------------------------------ issue 37 §1: the GPU split

def test_gpu_split_must_divide_the_batch_verl_balances():
    """verl's ``_balance_batch`` splits the 1,024 rollouts over the trainer's GPUs with equal sizes: 7 fails in
    verl's own partitioner, 4 passes; ``gpu_split_problem`` and the overrides refuse 7 before any job."""
    from verl.utils.seqlen_balancing import get_seqlen_balanced_partitions

    lengths = [100 + (i * 37) % 900 for i in range(16 * 64)]
    with pytest.raises(AssertionError):
        get_seqlen_balanced_partitions(lengths, k_partitions=8 - 1, equal_size=True)
    assert len(get_seqlen_balanced_partitions(lengths, k_partitions=8 - 4, equal_size=True)) == 4
    assert "do not divide the rollout batch of 1024" in vrlt.gpu_split_problem(8, 1, 16, 16, 64)
    assert "mini-batch of 2 sequences" in vrlt.gpu_split_problem(5, 1, 4, 1, 2)
    assert vrlt.gpu_split_problem(8, 4, 16, 16, 64) is None
    job = {"teacher_rl": PAPER_RL, "gpus": 8, "verl": {"rlt_reward_gpus": 1}}
    with pytest.raises(ValueError, match=r"resources.rlt_train.gpus, verl.rlt_reward_gpus.*7 GPU\(s\)"):
        vrlt.teacher_rl_overrides(job, "/t", "/s", "/d", "/c", "/a")


def test_composed_teacher_rl_config_at_paper_sizes_passes_verls_checks(tmp_path):
    """paper.yaml's teacher RL (8 GPUs, 4 reward workers, 64 CPUs) composed with verl's yaml and checked as
    ``rlt.main`` checks it; its trainer GPUs split the rollout batch and a mini-batch as verl does."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from rlrt.config import load

    paper = load(ROOT / "config/config.yaml", ROOT / "config/paper.yaml")
    job = {"teacher_rl": paper["rlt"]["teacher_rl"], "verl": paper["verl"], "seed": 0, "cpus": 64,
           "gpus": paper["resources"]["rlt_train"]["gpus"]}
    _, cfg = _rl_cfg(tmp_path, job)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    k = cfg.trainer.n_gpus_per_node
    assert (k, cfg.reward.num_workers, cfg.rlrt.reward_cpus) == (4, 4, 8)
    assert cfg.data.train_batch_size * cfg.actor_rollout_ref.rollout.n % k == 0
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size * cfg.actor_rollout_ref.rollout.n % k == 0
    assert cfg.data.max_response_length == 16384 and cfg.reward.reward_kwargs.micro_batch == 1


def test_paper_config_splits_the_teacher_rl_and_validation_refuses_an_indivisible_split():
    import copy

    from rlrt.config import ConfigError, load, validate

    paper = load(ROOT / "config/config.yaml", ROOT / "config/paper.yaml")
    cfg = copy.deepcopy(paper)
    validate(cfg)
    gpus, reward = cfg["resources"]["rlt_train"]["gpus"], cfg["verl"]["rlt_reward_gpus"]
    trl = cfg["rlt"]["teacher_rl"]
    assert vrlt.gpu_split_problem(gpus, reward, trl["question_batch"], trl["mini_batch"], trl["n_samples"]) is None
    bad = copy.deepcopy(paper)
    bad["verl"]["rlt_reward_gpus"] = 1
    with pytest.raises(ConfigError, match=r"^config key 'verl.rlt_reward_gpus': .*8 - 1 = 7 GPUs.*"
                                          r"rlt.teacher_rl.question_batch x n_samples = 1024"):
        validate(bad)


# ------------------------------------------------------------------- issue 37 §1-2: the SFT's cap and cadence

def test_composed_sft_config_passes_verls_token_cap_and_config_checks(tok, models, tmp_path):
    """At the paper's lengths (2,048 + 16,384 tokens) verl's default cap of 8,192 tokens per micro-batch fails
    ``rearrange_micro_batches``' assertion; the composed config's cap takes one full-length sequence, and the
    config blocks pass verl's own dataclass checks (what ``SFTTrainer._build_config`` runs)."""
    from tensordict import TensorDict
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.seqlen_balancing import rearrange_micro_batches

    _, _, tpath, _ = models
    max_length = 2048 + 16384
    job = {"student_sft": {"lr": 1e-5, "steps": 523, "batch_size": 96, "resume_every": 50}, "max_length": max_length,
           "seed": 0, "gpus": 8}
    cfg = _compose(rlt_sft.SFT_CONFIG, rlt_sft.sft_overrides(job, tpath, "/d/sft.parquet", "/c", n_examples=16710))
    batch = TensorDict({"input_ids": torch.zeros(2, max_length, dtype=torch.long),
                        "attention_mask": torch.ones(2, max_length, dtype=torch.long)}, batch_size=2)
    default = _compose(rlt_sft.SFT_CONFIG, [])
    with pytest.raises(AssertionError, match="max_token_len must be greater"):
        rearrange_micro_batches(batch, max_token_len=default.data.max_token_len_per_gpu)
    assert cfg.data.use_dynamic_bsz is True
    micro, _ = rearrange_micro_batches(batch, max_token_len=cfg.data.max_token_len_per_gpu)
    assert len(micro) == 2
    for block in ("model", "engine", "optim", "checkpoint", "profiler"):
        omega_conf_to_dataclass(cfg[block])
    # the resume cadence: verl saves (and a requeued job resumes) every resume_every steps, not only at the end
    assert default.trainer.save_freq == -1 and cfg.trainer.save_freq == 50
    teacher = {"teacher_sft": {"steps": 200, "batch_size": 64, "lr": 1e-5, "resume_every": 20}, "max_length": 256}
    assert _compose(rlt_sft.SFT_CONFIG, rlt_sft.sft_overrides(teacher, tpath, "/d", "/c", 100, "teacher_sft")
                    ).trainer.save_freq == 20
    none = {"student_sft": {"lr": 1e-5, "steps": 10, "batch_size": 4}, "max_length": 256}
    assert _compose(rlt_sft.SFT_CONFIG, rlt_sft.sft_overrides(none, tpath, "/d", "/c", 10)).trainer.save_freq == -1


# ------------------------------------------------------------------------- issue 37 §2: memory and seeds

def test_chunked_token_kl_equals_the_unchunked_one_and_keeps_bf16_inputs():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 37, 50, generator=g) * 3, torch.randn(2, 37, 50, generator=g) * 3
    full = token_kl(t, s, 0.7, chunk=None)
    for chunk in (1, 5, 36, 37, 512):
        assert torch.allclose(token_kl(t, s, 0.7, chunk=chunk), full, atol=1e-6, rtol=0)
    tb, sb = t.bfloat16(), s.bfloat16()
    out = token_kl(tb, sb, 0.7, chunk=4)
    assert out.dtype == torch.float32 and tb.dtype == torch.bfloat16
    assert torch.allclose(out, token_kl(tb.float(), sb.float(), 0.7, chunk=None), atol=1e-6)


def test_scorer_default_micro_batch_is_one():
    assert vrlt.RLTRewardSettings().micro_batch == 1
    assert vrlt.RLTRewardSettings.from_dict(PAPER_RL).micro_batch == 1  # paper.yaml sets none


def test_each_request_gets_a_seed_of_its_own_derived_from_the_question(tok, tmp_path):
    a, b = rlt_generate.request_seed(5, Q[0]), rlt_generate.request_seed(5, Q[1])
    assert a != b and a == rlt_generate.request_seed(5, Q[0]) and 0 <= a < 2 ** 31
    assert rlt_generate.request_seed(6, Q[0]) != a  # the run's seed still matters
    sent = {}

    class LLM:
        def generate(self, prompts, sps):
            sent["seeds"] = [sp.seed for sp in sps]
            return [SimpleNamespace(outputs=[SimpleNamespace(text="x")]) for _ in prompts]

    rows = [QUESTIONS[1], QUESTIONS[0], QUESTIONS[1]]
    rlt_generate.teacher_completions(_model_dir(tmp_path / "m"), rows, 1, 8, 0.7, 5, llm_factory=lambda m, **kw: LLM(),
                                     sampling_params_factory=lambda **kw: SimpleNamespace(**kw), tokenizer=tok)
    assert sent["seeds"][0] == sent["seeds"][2] != sent["seeds"][1]  # by question, not by position


def test_reward_rank_generates_in_a_process_that_exits_before_scoring(tok, tmp_path):
    """The reward-rank stage's vLLM candidates come from ``python -m rlrt.backends.verl.rlt_generate``, run to
    its end (``subprocess.run``, check=True) before the stage loads its two HF models. Here the child is run
    in-process with a stand-in engine, through the same request and result files."""
    calls = []

    def runner(cmd, check):
        assert check is True and cmd[:3] == [sys.executable, "-m", "rlrt.backends.verl.rlt_generate"]
        calls.append(cmd)

        class LLM:
            def generate(self, prompts, sps):
                return [SimpleNamespace(outputs=[SimpleNamespace(text=f"p{i}.{j}") for j in range(sp.n)])
                        for i, sp in enumerate(sps)]

        rlt_generate.main(cmd[3:], llm_factory=lambda m, **kw: LLM(),
                          sampling_params_factory=lambda **kw: SimpleNamespace(**kw), tokenizer=tok)
        return subprocess.CompletedProcess(cmd, 0)

    out = rlt_generate.completions_in_subprocess(_model_dir(tmp_path / "t"), QUESTIONS, 2, 16, 0.7, 3, 1, tmp_path / "w",
                                                 runner=runner)
    assert out == [[f"p{i}.0", f"p{i}.1"] for i in range(3)] and len(calls) == 1
    assert list((tmp_path / "w").iterdir()) == []  # request and result removed
    with pytest.raises(subprocess.CalledProcessError):
        rlt_generate.completions_in_subprocess("/m/t", QUESTIONS, 2, 16, 0.7, 3, 1, tmp_path / "w",
                                               runner=lambda cmd, check: subprocess.run(
                                                   [sys.executable, "-c", "raise SystemExit(3)"], check=check))
    req = json.loads(next((tmp_path / "w").glob("generate_request.json")).read_text())
    assert req["n"] == 2 and [r["id"] for r in req["rows"]] == [q["id"] for q in QUESTIONS]
