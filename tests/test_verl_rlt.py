"""RLT at paper scale on verl 0.9.1, on CPU: the reward manager gives the local engine's reward for the same texts
through verl's own DataProto and ``run_single`` contract; the student-SFT parquet is exact and verl's dataset
reads it; the SFT and teacher-RL Hydra overrides compose with verl's shipped yaml (a misspelled key fails)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from rlrt.backends.local import rlt as local  # noqa: E402
from rlrt.backends.verl import rlt as vrlt  # noqa: E402
from rlrt.backends.verl import rlt_sft  # noqa: E402
from rlrt.tasks.prompts import chat_prompt, user_message  # noqa: E402
from rlrt.tasks.rlt_format import END_EXPLANATION, parse_explanation, student_text, teacher_text  # noqa: E402

VERL_CONFIG = Path(__import__("verl").__file__).parent / "trainer" / "config"

Q = ["What is 12 + 7?", "What is 3 + 45 + 6?", "What is 9 + 9?"]
S = ["12 + 7 = 19. So the answer is \\boxed{19}.", "3 + 45 = 48. 48 + 6 = 54. So the answer is \\boxed{54}.",
     "9 + 9 = 18. So the answer is \\boxed{18}."]


@pytest.fixture(scope="module")
def tok():
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [teacher_text(f"{a} + {b} = {a + b}. So the answer is \\boxed{{{a + b}}}.", f"{b} + {a} = {a + b}.")
             for a, b in ((rng.randint(1, 99), rng.randint(1, 99)) for _ in range(300))]
    texts += ["<|begin_of_thought|>x<|end_of_thought|>\n\n<|begin_of_solution|>y<|end_of_solution|>"] * 20
    return train_tokenizer(texts, 320)


def tiny(tok, seed):
    from rlrt.backends.local.model import build_model

    torch.manual_seed(seed)
    return build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "num_key_value_heads": 1}, tok).eval()


@pytest.fixture(scope="module")
def models(tok, tmp_path_factory):
    """(teacher, student) in memory and saved (with the tokenizer) as the manager loads them."""
    from rlrt.backends.local.model import save_checkpoint

    root = tmp_path_factory.mktemp("rlt_models")
    teacher, student = tiny(tok, 1), tiny(tok, 2)
    save_checkpoint(teacher, tok, root / "teacher")
    save_checkpoint(student, tok, root / "student")
    return teacher, student, str(root / "teacher"), str(root / "student")


# the teacher's raw completions: well formatted, a long one, a missing end tag, one opening another block
CASES = [(0, "7 + 12 = 19." + END_EXPLANATION),
         (1, "45 + 6 = 51. 51 + 3 = 54. Done, the sum is 54." + END_EXPLANATION),
         (2, "9 + 9 is eighteen but no closing tag"),
         (2, "9 + 9" + END_EXPLANATION),
         (0, "<|begin_of_solution|>19<|end_of_solution|>" + END_EXPLANATION)]


def dataproto(tok):
    """A verl batch as the rollout leaves it: left-padded teacher prompts, right-padded responses ending in EOS."""
    from verl import DataProto

    from rlrt.backends.local.rollout import left_pad

    prompts = [local.encode(tok, local.teacher_prompt(tok, Q[q], S[q])) for q, _ in CASES]
    p_ids, p_mask = left_pad(prompts, tok.pad_token_id)
    resp = [local.encode(tok, c) + [tok.eos_token_id] for _, c in CASES]
    R = max(len(r) for r in resp) + 2  # extra padding columns
    r_ids = torch.full((len(resp), R), tok.pad_token_id, dtype=torch.long)
    r_mask = torch.zeros((len(resp), R), dtype=torch.long)
    for i, r in enumerate(resp):
        r_ids[i, :len(r)] = torch.tensor(r)
        r_mask[i, :len(r)] = 1
    attn = torch.cat([p_mask, r_mask], 1)
    extra = np.array([{"question": Q[q], "solution": S[q], "id": f"q{q}"} for q, _ in CASES], dtype=object)
    data = DataProto.from_dict(tensors={"prompts": p_ids, "responses": r_ids, "attention_mask": attn,
                                        "input_ids": torch.cat([p_ids, r_ids], 1)},
                               non_tensors={"extra_info": extra, "data_source": np.array(["rlt"] * len(CASES))})
    return data, torch.tensor([len(r) for r in resp])


def local_reward(teacher, student, tok, temperature=0.7, penalty=-1.0):
    expl = [parse_explanation(c) for _, c in CASES]
    return local.score_explanations(teacher, student, tok, [Q[q] for q, _ in CASES], [S[q] for q, _ in CASES],
                                    expl, alpha=0.01, lam=3.0, temperature=temperature, micro_batch=32,
                                    missing_tag_penalty=penalty)


def test_scorer_on_a_dataproto_equals_the_local_engine(tok, models):
    teacher, student, tpath, spath = models
    settings = vrlt.RLTRewardSettings.from_dict({"alpha": 0.01, "lambda": 3.0, "temperature": 0.7,
                                                 "missing_tag_penalty": -1.0, "micro_batch": 2, "steps": 9})
    assert settings.lam == 3.0 and settings.micro_batch == 2
    scorer = vrlt.RLTScorer.from_paths(tpath, spath, settings, device="cpu")
    data, lengths = dataproto(tok)
    assert vrlt.decode_responses(data, tok) == [c for _, c in CASES]  # ids -> the teacher's exact raw text
    rm, extra = scorer.score_batch(data)
    ref = local_reward(teacher, student, tok)
    assert ref["format_ok"].tolist() == [True, True, False, True, False]
    assert extra["format_ok"] == [True, True, False, True, False] and scorer.missing_tags == 2
    last = rm[torch.arange(len(CASES)), lengths - 1]
    assert torch.allclose(last, ref["reward"], atol=1e-5)
    assert last[2] == -1.0 and last[4] == -1.0  # the penalty, not a score
    assert (rm != 0).sum() == len(CASES)  # one reward per sample, on its last valid token (EOS), zero elsewhere
    assert np.allclose(extra["r_kl"], ref["r_kl"].numpy(), atol=1e-5) and min(extra["r_kl"][i] for i in (0, 1, 3)) > 0


def test_reward_manager_run_single_through_verls_contract(tok, models, monkeypatch):
    """The registered manager, loaded as verl does (class from the registry, settings in reward.reward_kwargs),
    called per sample and concurrently as ``RewardLoopWorker.compute_score_batch`` does; micro-batches of 2
    (two full, one flushed by the timer); scores assembled by verl's ``assemble_rm_scores``."""
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls

    teacher, student, tpath, spath = models
    cls = get_reward_manager_cls(vrlt.REWARD_MANAGER)
    assert cls is vrlt.RLTRewardManager
    monkeypatch.setattr(cls, "scorer", None)
    monkeypatch.setattr("rlrt.backends.verl.rlt_scorer.default_device", lambda: torch.device("cpu"))
    cfg = OmegaConf.create({"reward": {"reward_kwargs": {"teacher_path": tpath, "student_path": spath,
                                                         "alpha": 0.01, "lam": 3.0, "temperature": 1.0,
                                                         "missing_tag_penalty": -5.0, "micro_batch": 2,
                                                         "batch_wait_s": 0.01}}})
    data, lengths = dataproto(tok)
    calls = []

    async def run():
        mgr = cls(config=cfg, tokenizer=tok, compute_score=None)
        real = mgr.scorer.score_samples
        monkeypatch.setattr(mgr.scorer, "score_samples", lambda d: calls.append(len(d)) or real(d))
        return await asyncio.gather(*[mgr.run_single(data[i:i + 1]) for i in range(len(data))])

    out = asyncio.run(run())
    assert sorted(calls) == [1, 2, 2]
    ref = local_reward(teacher, student, tok, temperature=1.0, penalty=-5.0)
    scores = [o["reward_score"] for o in out]
    assert np.allclose(scores, ref["reward"].numpy(), atol=1e-5)
    assert [o["reward_extra_info"]["format_ok"] for o in out] == [True, True, False, True, False]
    rm = cls.assemble_rm_scores(data, scores)
    assert torch.allclose(rm[torch.arange(len(CASES)), lengths - 1], ref["reward"], atol=1e-5)


def test_manager_errors_reach_every_waiting_sample(tok, models, monkeypatch):
    from omegaconf import OmegaConf

    cls = vrlt.RLTRewardManager
    teacher, student, _, _ = models
    scorer = vrlt.RLTScorer(teacher, student, tok, vrlt.RLTRewardSettings(micro_batch=8), device="cpu")
    monkeypatch.setattr(cls, "scorer", None)
    data, _ = dataproto(tok)
    data.non_tensor_batch["extra_info"][1] = {"question": Q[1]}  # no solution: bad data

    async def run():
        mgr = cls(config=OmegaConf.create({"reward": {"reward_kwargs": {"batch_wait_s": 0.01}}}), tokenizer=tok,
                  scorer=scorer)
        return await asyncio.gather(*[mgr.run_single(data[i:i + 1]) for i in range(len(data))],
                                    return_exceptions=True)

    out = asyncio.run(run())
    assert all(isinstance(o, KeyError) and "lacks question/solution" in str(o) for o in out)


def test_teacher_rl_rows_carry_what_the_reward_needs():
    rows = vrlt.teacher_rl_rows([{"id": 7, "question": Q[0], "solution": S[0], "answer": "19"}])
    assert rows[0]["extra_info"] == {"id": "7", "index": 0, "question": Q[0], "solution": S[0]}
    assert rows[0]["prompt"][0]["content"] == Q[0] + " Please reason step by step, and put your final answer " \
                                                     "within \\boxed{}."
    assert rows[0]["prompt"][1] == {"role": "assistant", "content": "<|begin_of_solution|>" + S[0] +
                                    "<|end_of_solution|>\n\n<|begin_of_explanation|>\n\n"}
    assert rows[0]["reward_model"]["ground_truth"] == "19"
    with pytest.raises(KeyError, match="solution"):
        vrlt.teacher_rl_rows([{"id": 1, "question": "q"}])


# --------------------------------------------------------------------------------------------------- student SFT

TRACES = [
    {"id": "a", "question": "What is 1 + 2?", "answer": "3", "solution": "1 + 2 = 3. \\boxed{3}",
     "explanation": "Add one and two.", "format_ok": True,
     "text": "<|begin_of_thought|>Add one and two.<|end_of_thought|>\n\n<|begin_of_solution|>1 + 2 = 3. \\boxed{3}"
             "<|end_of_solution|>"},
    {"id": "b", "question": "What is 4 + 4?", "answer": "8", "solution": "4 + 4 = 8. \\boxed{8}",
     "explanation": "Double four", "format_ok": False,
     "text": student_text("Double four", "4 + 4 = 8. \\boxed{8}")},
]


def test_distill_rows_to_verl_sft_parquet_exactly(tmp_path):
    import pyarrow.parquet as pq

    rows = rlt_sft.distill_to_sft_rows(TRACES)
    assert rows[0] == {"id": "a", "messages": [
        {"role": "user", "content": "What is 1 + 2? Please reason step by step, and put your final answer within "
                                    "\\boxed{}."},
        {"role": "assistant", "content": TRACES[0]["text"]}]}
    assert rows[1]["messages"][1]["content"] == ("<|begin_of_thought|>Double four<|end_of_thought|>\n\n"
                                                 "<|begin_of_solution|>4 + 4 = 8. \\boxed{8}<|end_of_solution|>")
    path = rlt_sft.write_parquet(rows, tmp_path / "sft.parquet")
    assert pq.read_table(path).to_pylist() == rows
    assert [r["id"] for r in rlt_sft.distill_to_sft_rows(TRACES, keep_ids=["b"])] == ["b"]
    with pytest.raises(ValueError, match="after the id subset"):
        rlt_sft.distill_to_sft_rows(TRACES, keep_ids=["zz"])
    with pytest.raises(KeyError, match="explanation"):
        rlt_sft.distill_to_sft_rows([{k: v for k, v in TRACES[0].items() if k != "explanation"}])
    with pytest.raises(ValueError, match="'text'"):
        rlt_sft.distill_to_sft_rows([{**TRACES[0], "text": "something else"}])


def test_verls_sft_dataset_learns_exactly_the_student_answer(tok, tmp_path):
    """verl's own MultiTurnSFTDataset on our parquet: the loss mask covers the assistant turn (student answer
    and the chat template's end-of-turn), never the question prompt."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    path = rlt_sft.write_parquet(rlt_sft.distill_to_sft_rows(TRACES), tmp_path / "sft.parquet")
    cfg = OmegaConf.create({"messages_key": "messages", "max_length": 512, "truncation": "error",
                            "pad_mode": "no_padding"})
    ds = MultiTurnSFTDataset(parquet_files=str(path), tokenizer=tok, config=cfg)
    item = ds[0]
    ids, mask = item["input_ids"].tolist(), item["loss_mask"].tolist()
    assert mask == sorted(mask)  # one contiguous target at the end
    learned = tok.decode([i for i, m in zip(ids, mask) if m])
    assert learned == TRACES[0]["text"] + tok.eos_token + "\n"  # the chat template closes the turn with EOS
    prompt = tok.decode([i for i, m in zip(ids, mask) if not m])
    assert prompt == chat_prompt(tok, user_message(TRACES[0]["question"]))  # the local engine's student prompt


def _compose(name, overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(VERL_CONFIG), version_base=None):
        return compose(config_name=name, overrides=overrides)


SFT_JOB = {"student_sft": {"lr": 1e-5, "steps": 400, "batch_size": 128}, "max_length": 16384, "seed": 3, "gpus": 2, "student": "Qwen2.5-7B", "data": "rlt",
           "tracking": {"uri": "file:x"}, "verl": {"extra_overrides": ["data.num_workers=2"]}}


def test_sft_overrides_compose_with_verls_sft_yaml():
    o = rlt_sft.sft_overrides(SFT_JOB, "/m/student", "/d/sft.parquet", "/c/ckpt", n_examples=1000)
    cfg = _compose(rlt_sft.SFT_CONFIG, o)
    assert cfg.optim.lr == 1e-5 and cfg.optim.lr_scheduler_type == "cosine" and cfg.optim.min_lr_ratio == 0.1
    # the local stage's budget and schedule: 400 steps, warm-up min(10, 400 // 10) = 10, 400 x 128 / 1000 -> 52 epochs
    assert cfg.optim.lr_warmup_steps == 10 and cfg.trainer.total_training_steps == 400
    assert cfg.trainer.total_epochs == 52
    assert cfg.data.train_batch_size == 128 and cfg.data.max_length == 16384 and cfg.data.messages_key == "messages"
    assert cfg.model.path == "/m/student" and cfg.trainer.n_gpus_per_node == 2 and cfg.trainer.seed == 3
    assert list(cfg.trainer.logger) == ["console", "mlflow"] and cfg.data.num_workers == 2
    assert "hf_model" in cfg.checkpoint.save_contents
    small = rlt_sft.sft_overrides(SFT_JOB, "/m", "/d", "/c", n_examples=40)
    assert "data.train_batch_size=40" in small
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose(rlt_sft.SFT_CONFIG, o + ["optim.learnig_rate=1e-5"])


def test_teacher_rl_overrides_compose_with_verls_ppo_yaml():
    job = {"teacher_rl": {"steps": 125, "question_batch": 16, "n_samples": 64, "mini_batch": 16, "lr": 1e-6,
                          "temperature": 0.7, "alpha": 0.01, "lambda": 3.0, "beta": 0.04, "max_new_tokens": 16384,
                          "missing_tag_penalty": -1.0},
           "seed": 1, "gpus": 5, "cpus": 16, "tracking": None, "verl": {"rollout": {"name": "vllm"}, "save_freq": 5}}
    o = vrlt.teacher_rl_overrides(job, "/m/teacher", "/m/student", "/d/t.parquet", "/c", "/w/agent_loops.yaml")
    cfg = _compose("ppo_trainer", o)
    assert cfg.actor_rollout_ref.rollout.agent.default_agent_loop == vrlt.AGENT_NAME == "rlt_teacher"
    assert cfg.actor_rollout_ref.rollout.agent.agent_loop_config_path == "/w/agent_loops.yaml"
    assert cfg.data.filter_overlong_prompts is True
    assert cfg.reward.reward_manager.source == "importlib" and cfg.reward.num_workers == 1
    assert cfg.reward.reward_manager.name == "RLTRewardManager" and cfg.rlrt.reward_cpus == 8
    assert cfg.ray_kwargs.ray_init.num_cpus == 16  # the job's CPUs, half of them the reward worker's
    assert cfg.trainer.n_gpus_per_node == 4  # 5 for the job, 1 of them the reward worker's
    assert cfg.trainer.use_v1 is False  # the legacy trainer, whose RewardLoopManager rlt.main() swaps
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    assert need_reference_policy(cfg)  # beta 0.04: KL to the SFT teacher needs verl's reference worker
    validate_config(config=cfg, use_reference_policy=True, use_critic=need_critic(cfg))  # what rlt.main() runs
    # what verl's reward workers do with it: load the class from the file, not from a registry only we filled
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    assert resolve_reward_manager_cls(cfg).__name__ == "RLTRewardManager"
    assert cfg.reward.reward_kwargs.lam == 3.0 and cfg.reward.reward_kwargs.student_path == "/m/student"
    assert cfg.actor_rollout_ref.rollout.n == 64 and cfg.actor_rollout_ref.rollout.temperature == 0.7
    assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6 and cfg.actor_rollout_ref.actor.kl_loss_coef == 0.04
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.trainer.total_training_steps == 125
    a = cfg.actor_rollout_ref
    assert a.actor.use_dynamic_bsz is True and a.actor.ppo_max_token_len_per_gpu == 45056
    assert a.rollout.log_prob_use_dynamic_bsz is True and a.ref.log_prob_max_token_len_per_gpu == 45056  # follow
    assert cfg.trainer.save_freq == 5 and cfg.data.max_response_length == 16384
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose("ppo_trainer", o + ["actor_rollout_ref.rollout.temprature=1.0"])
    with pytest.raises(ValueError, match="leave none for the trainer"):
        vrlt.teacher_rl_overrides({**job, "gpus": 1}, "/m/teacher", "/m/student", "/d/t.parquet", "/c", "/w/a.yaml")


def test_reward_loop_workers_get_their_gpus():
    """verl starts reward-loop workers without GPUs (Ray then hides every GPU from them); ours ask for them."""
    from types import SimpleNamespace

    cls = vrlt.reward_loop_manager_class(6)
    from verl.experimental.reward_loop import RewardLoopManager

    assert issubclass(cls, RewardLoopManager)
    asked = []

    class Worker:
        def options(self, **kw):
            asked.append(kw)
            return SimpleNamespace(remote=lambda config, address: SimpleNamespace(
                args=(config, address), __ray_ready__=SimpleNamespace(remote=lambda: "ready")))

    mgr = object.__new__(cls)
    mgr.config = SimpleNamespace(reward=SimpleNamespace(num_workers=2))
    mgr.reward_router_address, mgr.reward_loop_workers_class = "addr", Worker()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ray.get", lambda refs: refs)
        mgr._init_reward_loop_workers()
    assert asked == [{"name": f"reward_loop_worker_{i}", "num_gpus": 1.0, "num_cpus": 6.0} for i in (0, 1)]
    assert [w.args for w in mgr.reward_loop_workers] == [(mgr.config, "addr")] * 2


# ------------------------------------------------------------------------------------------ the teacher's rollout

class _Server:
    """Stand-in for verl's ``LLMServerClient``: records each request, answers with fixed token ids."""

    def __init__(self, answer, logprobs=None):
        self.answer, self.logprobs, self.requests = answer, logprobs, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.requests.append((list(prompt_ids), dict(sampling_params)))
        return TokenOutput(token_ids=list(self.answer), log_probs=self.logprobs, extra_fields={"seen": True})


def _agent_loop(tok, tmp_path, server, prompt_length=512, response_length=64):
    """The teacher's loop built as verl's agent-loop worker builds it: the YAML entry instantiated by Hydra with
    the worker's keyword arguments, over a trainer config composed from verl's own yaml with our overrides."""
    import hydra
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap

    loops = vrlt.write_agent_loop_config(tmp_path / "agent_loops.yaml")
    job = {"teacher_rl": {"steps": 2, "question_batch": 2, "n_samples": 4, "lr": 1e-6, "max_new_tokens": response_length},
           "verl": {"max_prompt_length": prompt_length}, "gpus": 2}
    cfg = _compose("ppo_trainer", vrlt.teacher_rl_overrides(job, "/m/t", "/m/s", "/d/t.parquet", "/c", str(loops)))
    (entry,) = [e for e in OmegaConf.load(loops) if e.name == cfg.actor_rollout_ref.rollout.agent.default_agent_loop]
    return hydra.utils.instantiate(config={"_target_": entry["_target_"]}, trainer_config=DictConfigWrap(config=cfg),
                                   server_manager=server, tokenizer=tok, processor=None, hf_model_type="qwen3",
                                   dataset_cls=None, data_config=DictConfigWrap(cfg.data), tools=ToolListWrap([]))


def test_teacher_rollout_continues_the_assistant_turn_with_the_local_engines_prompt_ids(tok, tmp_path):
    """verl's own ``single_turn_agent`` would open a new assistant turn after the solution block; ours sends the
    local engine's teacher prompt ids (the open turn) and returns the continuation as the response."""
    from rlrt.backends.verl.agent_loop import RLTTeacherAgentLoop

    expl = local.encode(tok, "7 + 12 = 19." + END_EXPLANATION) + [tok.eos_token_id]
    server = _Server(expl + [5, 6, 7], logprobs=[-0.5] * (len(expl) + 3))
    loop = _agent_loop(tok, tmp_path, server, response_length=len(expl))
    assert isinstance(loop, RLTTeacherAgentLoop)
    (row,) = vrlt.teacher_rl_rows([{"id": "q0", "question": Q[0], "solution": S[0], "answer": "19"}])
    out = asyncio.run(loop.run({"temperature": 0.7, "top_p": 1.0}, raw_prompt=row["prompt"],
                               extra_info=row["extra_info"], priority=3))
    want = local.encode(tok, local.teacher_prompt(tok, Q[0], S[0]))
    assert out.prompt_ids == want and server.requests == [(want, {"temperature": 0.7, "top_p": 1.0})]
    # the prompt ends inside the teacher's turn: the solution block and the opening tag, no second turn
    text = tok.decode(want)
    assert text.endswith(row["prompt"][1]["content"]) and text.count("assistant") == 1
    # what verl's own single-turn loop would have sent for the same messages: a second, empty assistant turn
    verls = tok.decode(loop.continuous_token_builder.build_initial_tokens(row["prompt"]))
    assert verls.count("assistant") == 2 and not verls.endswith(row["prompt"][1]["content"])
    assert out.response_ids == expl and out.response_mask == [1] * len(expl)  # cut at response_length
    assert out.response_logprobs == [-0.5] * len(expl) and out.extra_fields["seen"] is True
    # the reward reads the explanation straight off the response
    assert parse_explanation(tok.decode(out.response_ids, skip_special_tokens=True)) == "7 + 12 = 19."


def test_teacher_rollout_refuses_to_cut_a_prompt_and_names_what_is_missing(tok, tmp_path):
    loop = _agent_loop(tok, tmp_path, _Server([1]), prompt_length=8)
    (row,) = vrlt.teacher_rl_rows([{"id": "q0", "question": Q[0], "solution": S[0]}])
    with pytest.raises(ValueError, match="exceeds rollout.prompt_length=8 .*'q0'"):
        asyncio.run(loop.run({}, raw_prompt=row["prompt"], extra_info=row["extra_info"]))
    with pytest.raises(KeyError, match="solution"):
        asyncio.run(loop.run({}, raw_prompt=row["prompt"], extra_info={"question": Q[0]}))


# ------------------------------------------------------------------------ the teacher's SFT, distillation on vLLM

QUESTIONS = [{"id": f"q{i}", "question": Q[i], "solution": S[i], "answer": str(19 + i),
              "explanation": ["7 + 12 = 19.", "45 + 6 = 51. 51 + 3 = 54.", "Double nine."][i]} for i in range(3)]


def test_teacher_sft_through_verls_dataset_factory_trains_the_local_examples(tok, tmp_path):
    """The teacher's warm-up on verl: verl's own ``create_sft_dataset`` loads our dataset class from the overrides
    (``data.custom_cls``) and yields the local engine's ``teacher_example`` -- prompt ending inside the teacher's
    turn, loss on the explanation, its end tag and EOS only -- and verl's collator batches it."""
    from verl.trainer.sft_trainer import create_sft_dataset
    from verl.utils.dataset.dataset_utils import SFTTensorCollator

    path = rlt_sft.write_parquet(rlt_sft.teacher_sft_rows(QUESTIONS), tmp_path / "teacher_sft.parquet")
    job = {"teacher_sft": {"steps": 4, "batch_size": 2, "lr": 1e-5}, "max_length": 256, "seed": 0, "gpus": 1}
    cfg = _compose(rlt_sft.SFT_CONFIG, rlt_sft.sft_overrides(job, "/m/teacher", str(path), "/c", 3, "teacher_sft"))
    assert cfg.trainer.experiment_name == "rlt_teacher_sft" and cfg.data.custom_cls.name == "TeacherSFTDataset"
    ds = create_sft_dataset(str(path), cfg.data, tok, None)
    assert type(ds).__name__ == "TeacherSFTDataset" and len(ds) == 3
    for i, q in enumerate(QUESTIONS):
        ids, mask = local.teacher_example(tok, q["question"], q["solution"], q["explanation"])
        assert ds[i]["input_ids"].tolist() == ids and ds[i]["loss_mask"].tolist() == mask
        learned = tok.decode([t for t, m in zip(ids, mask) if m])
        assert learned == q["explanation"] + END_EXPLANATION + tok.eos_token
    batch = SFTTensorCollator(cfg.data.pad_mode)([ds[0], ds[1]])
    assert batch["input_ids"].is_nested and batch["loss_mask"].values().sum() == sum(sum(ds[i]["loss_mask"].tolist())
                                                                                       for i in (0, 1))
    right = rlt_sft.TeacherSFTDataset(str(path), tok, {"max_length": 256, "pad_mode": "right"})
    assert right[0]["input_ids"].shape == (256,) and right[0]["attention_mask"].sum() == len(ds[0]["input_ids"])
    with pytest.raises(ValueError, match="data.max_length=8"):
        rlt_sft.TeacherSFTDataset(str(path), tok, {"max_length": 8})
    with pytest.raises(KeyError, match="explanation"):
        rlt_sft.teacher_sft_rows([{k: v for k, v in QUESTIONS[0].items() if k != "explanation"}])


def _model_dir(root, context=4096):
    """A model folder with only the config.json the context check reads."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"max_position_embeddings": context}))
    return str(root)


def test_teacher_completions_on_vllm_send_the_local_prompt_ids(tok, tmp_path):
    """Distillation / reward-rank candidates on vLLM (a stand-in engine): the local engine's teacher prompt ids
    as token prompts, n completions per row in row order, the local sampler's settings; a short answer raises."""
    from types import SimpleNamespace

    made = {}

    class LLM:
        def generate(self, prompts, sp):
            made["prompts"], made["sp"] = prompts, sp
            return [SimpleNamespace(outputs=[SimpleNamespace(text=f"e{i}.{j}" + END_EXPLANATION) for j in range(p.n)])
                    for i, p in enumerate(sp)]

    def llm_factory(model, **kw):
        made["engine"] = (model, kw)
        return LLM()

    teacher = _model_dir(tmp_path / "teacher")
    out = vrlt.teacher_completions(teacher, QUESTIONS, 2, 64, 0.7, 5, gpus=2, llm_factory=llm_factory,
                                   sampling_params_factory=lambda **kw: SimpleNamespace(**kw), tokenizer=tok)
    assert out == [[f"e{i}.0" + END_EXPLANATION, f"e{i}.1" + END_EXPLANATION] for i in range(3)]
    assert made["prompts"] == [{"prompt_token_ids": local.encode(tok, local.teacher_prompt(tok, q["question"],
                                                                                            q["solution"]))}
                               for q in QUESTIONS]
    assert [vars(sp) for sp in made["sp"]] == [{"n": 2, "temperature": 0.7, "top_p": 1.0, "top_k": -1, "max_tokens": 64,
                                                "seed": vrlt.request_seed(5, q["question"])} for q in QUESTIONS]
    longest = max(len(p["prompt_token_ids"]) for p in made["prompts"])
    # max_model_len from the run's own lengths, never the model's whole context
    assert made["engine"] == (teacher, {"tensor_parallel_size": 2, "seed": 5, "max_model_len": longest + 64})

    def short(model, **kw):
        return SimpleNamespace(generate=lambda prompts, sp: [SimpleNamespace(outputs=[SimpleNamespace(text="x")])
                                                             for _ in prompts])

    with pytest.raises(ValueError, match="1 completions, expected 2"):
        vrlt.teacher_completions(teacher, QUESTIONS, 2, 64, 0.7, 5, llm_factory=short,
                                 sampling_params_factory=lambda **kw: SimpleNamespace(**kw), tokenizer=tok)


def test_teacher_completions_refuse_a_run_longer_than_the_teachers_context(tok, tmp_path):
    """vLLM would stop every explanation at the model's context whatever max_tokens says: a prompt + max_new_tokens
    over the model's config.json context is refused before the engine starts, naming the key and both numbers."""
    from types import SimpleNamespace

    started = []
    small = _model_dir(tmp_path / "small", context=64)
    with pytest.raises(ValueError, match=r"rlt\.teacher_rl\.max_new_tokens \(64\).*context of 64 tokens"):
        vrlt.teacher_completions(small, QUESTIONS, 1, 64, 0.7, 5, llm_factory=lambda m, **kw: started.append(m),
                                 sampling_params_factory=lambda **kw: SimpleNamespace(**kw), tokenizer=tok)
    assert started == []
    with pytest.raises(ValueError, match="no config.json"):
        vrlt.teacher_completions(str(tmp_path / "nowhere"), QUESTIONS, 1, 8, 0.7, 5,
                                 llm_factory=lambda m, **kw: started.append(m),
                                 sampling_params_factory=lambda **kw: SimpleNamespace(**kw), tokenizer=tok)
