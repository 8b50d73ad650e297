"""RLT at paper scale on verl 0.9.1: the teacher's reward as a verl reward manager, and the thin RL entry point.

The teacher's reward (RLT paper Sec. 3.3) needs two extra forward passes that no rule-based reward has: a frozen
*student* scores the explanation (r_SS on the solution tokens, its distribution on the explanation tokens) and
the *teacher* gives its own distribution on the same explanation tokens (r_KL). Both passes, the sequence
builders and the equations are the local engine's (``rlrt.backends.local.rlt.score_explanations`` ->
``rlrt.methods.rlt_reward``): this module only moves verl's batch into them and the rewards back, so the local
and the paper-scale rewards cannot drift apart (``tests/test_verl_rlt.py`` checks equality to 1e-5).

verl 0.9.1's reward path (read from the wheel): ``RewardLoopManager`` (``verl/experimental/reward_loop``) starts
``reward.num_workers`` Ray actors; each loads a manager class from the ``verl.experimental.reward_loop.
reward_manager`` registry (``reward.reward_manager.source: register``, ``name``) and calls ``await
run_single(data[i:i+1])`` once per sample, concurrently (``asyncio.gather``); the scalar ``reward_score`` of each
is put on the last valid response token by ``assemble_rm_scores``. The older ``verl.workers.reward_manager``
registry (batch ``__call__``) is no longer called by any 0.9.1 trainer. Since a model forward per sample is
wasteful, :class:`RLTRewardManager` gathers the concurrent ``run_single`` calls of a worker into micro-batches.

What has NEVER run (no GPU here): the manager inside verl's Ray reward workers, ``run_teacher_rl`` and
:func:`teacher_completions` on vLLM. Known gaps, reported to the lead (the first is why validation still refuses
``backend: verl`` with the RLT branch on):
* verl's reward workers are CPU actors (no ``num_gpus``): the frozen student and teacher then score on CPU,
  which at 7B is far too slow. Paper scale needs GPUs for these actors (a subclass of ``RewardLoopManager`` or
  a driver-side scoring hook); ``reward.num_workers`` is set to 1 so that only one copy of each model is loaded.
* r_KL's teacher distribution comes from a *frozen* teacher loaded by the manager (the SFT warm-up, the policy
  RL starts from), not from the current policy theta_old as in the local engine and the paper: verl's
  ``compute_log_prob`` returns sampled-token log-probs only, never the full-vocabulary distribution Eq. 4
  needs. The two agree at step 0 and drift apart as the teacher trains.
* ``score_explanations`` keeps (batch, length, vocabulary) logits: at 151k vocabulary and 16k-token responses
  ``micro_batch`` must be 1 and memory is still ~10 GB per pass.

The teacher's generation prompt ends inside its assistant turn (``teacher_prefix``), which verl's own
``single_turn_agent`` cannot continue (it always opens a fresh assistant turn): the rollout goes through
``rlrt.backends.verl.agent_loop.RLTTeacherAgentLoop`` (:data:`AGENT_NAME`), which builds the local engine's very
prompt ids; :func:`teacher_rl_overrides` makes it verl's default loop through the file
:func:`write_agent_loop_config` writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from rlrt.backends.local.rlt import score_explanations
from rlrt.tasks.prompts import user_message
from rlrt.tasks.rlt_format import parse_explanation, teacher_prefix

log = logging.getLogger("rlrt.verl.rlt")

REWARD_MANAGER = "rlt"  # verl ``reward.reward_manager.name``
AGENT_NAME = "rlt_teacher"  # verl ``rollout.agent.default_agent_loop`` of the teacher's RL
AGENT_LOOP_TARGET = "rlrt.backends.verl.agent_loop.RLTTeacherAgentLoop"  # what verl's workers instantiate for it


@dataclass(frozen=True)
class RLTRewardSettings:
    """The reward's constants (config ``rlt.teacher_rl``; paper: alpha 0.01, lambda 3, penalty -1, T 0.7)."""

    alpha: float = 0.01
    lam: float = 3.0
    temperature: float = 0.7  # rewards are scored at the sampling temperature (SakanaAI/RLT)
    missing_tag_penalty: float = -1.0
    micro_batch: int = 8

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RLTRewardSettings":
        """From the ``teacher_rl`` block (its ``lambda`` is ``lam``); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        d = {("lam" if k == "lambda" else k): v for k, v in d.items()}
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in names})


class _OnDevice(torch.nn.Module):
    """Runs a causal LM on its device for the CPU-side builders of the local engine: inputs move to the model,
    logits come back to the CPU (where the local engine keeps its masks and ids). A no-op on a CPU model."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.model = model
        self.device = torch.device(device)

    def forward(self, **kw):
        kw = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in kw.items()}
        out = self.model(**kw)
        out.logits = out.logits.float().cpu()
        return out


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class RLTScorer:
    """The RLT reward of raw teacher completions, batched and without gradients.

    ``teacher`` and ``student`` must share ``tokenizer`` (the explanation ids are the same in both contexts:
    RLT pairs models of one family). Completions are the text the teacher generated after its prefix.
    """

    def __init__(self, teacher, student, tokenizer, settings: RLTRewardSettings = RLTRewardSettings(),
                 device: torch.device | str | None = None):
        device = torch.device(device) if device is not None else default_device()
        self.teacher = _OnDevice(teacher.to(device).eval().requires_grad_(False), device)
        self.student = _OnDevice(student.to(device).eval().requires_grad_(False), device)
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
        """(N,) ``reward``, ``r_ss``, ``r_kl``, ``format_ok`` for N (question, solution, raw completion)."""
        if not (len(questions) == len(solutions) == len(completions)):
            raise ValueError(f"RLT reward: {len(questions)} questions, {len(solutions)} solutions, "
                             f"{len(completions)} completions")
        expl = [parse_explanation(c) for c in completions]
        s = self.settings
        out = score_explanations(self.teacher, self.student, self.tokenizer, questions, solutions, expl, s.alpha,
                                 s.lam, s.temperature, s.micro_batch, s.missing_tag_penalty)
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
    """(questions, solutions) from ``extra_info`` (written by :func:`teacher_rl_rows`); a clear error if absent."""
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


def teacher_rl_rows(rows: Sequence[dict], data_source: str = "rlt_teacher") -> list[dict]:
    """RLT question rows (id, question, solution, answer) -> verl RL parquet rows.

    ``prompt`` is the teacher's chat: the user turn, then its assistant text up to the explanation (what verl's
    dataset measures and filters by length; the rollout itself renders the prompt from ``extra_info`` through
    :data:`AGENT_LOOP_TARGET`). ``extra_info`` carries what the agent loop and the reward need;
    ``reward_model.ground_truth`` is the answer (unused by the RLT reward, required by verl).
    """
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in ("id", "question", "solution") if k not in r]
        if missing:
            raise KeyError(f"RLT teacher data row {i}: missing {missing}")
        out.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": user_message(r["question"])},
                       {"role": "assistant", "content": teacher_prefix(r["solution"])}],
            "ability": "explanation",
            "reward_model": {"style": "model", "ground_truth": str(r.get("answer", ""))},
            "extra_info": {"id": str(r["id"]), "index": i, "question": r["question"], "solution": r["solution"]},
        })
    return out


def teacher_completions(model: str, rows: Sequence[dict], n: int, max_new_tokens: int, temperature: float, seed: int,
                        gpus: int = 1, *, llm_factory=None, sampling_params_factory=None,
                        tokenizer=None) -> list[list[str]]:
    """``n`` raw teacher completions per (question, solution) row with vLLM: the paper-scale twin of the local
    engine's ``write_explanations`` (the distillation data, the reward-rank candidates).

    Prompts are the local engine's teacher prompt ids (``teacher_prompt``: the chat's generation prompt, then the
    solution block and the open explanation tag), handed to vLLM as token ids so that no template or special token
    differs; sampling as the local sampler's (temperature, no top-p / top-k cut). ``llm_factory(model,
    tensor_parallel_size=, seed=)`` / ``sampling_params_factory(**kw)`` default to vLLM (tests pass stand-ins);
    ``tokenizer`` to the model's. A missing or short output raises (a shifted list would pair explanations with
    the wrong questions). NEVER RUN with vLLM (no GPU here)."""
    from rlrt.backends.local.rlt import encode, teacher_prompt
    from rlrt.backends.verl.evaluate import default_llm_factory, default_sampling_params_factory

    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
    prompts = [{"prompt_token_ids": encode(tokenizer, teacher_prompt(tokenizer, r["question"], r["solution"]))}
               for r in rows]
    sp = (sampling_params_factory or default_sampling_params_factory)(
        n=int(n), temperature=float(temperature), top_p=1.0, top_k=-1, max_tokens=int(max_new_tokens), seed=int(seed))
    llm = (llm_factory or default_llm_factory)(str(model), tensor_parallel_size=int(gpus), seed=int(seed))
    outputs = llm.generate(prompts, sp)
    if len(outputs) != len(rows):
        raise ValueError(f"vLLM returned {len(outputs)} outputs for {len(rows)} teacher prompts")
    out = []
    for i, o in enumerate(outputs):
        texts = [c.text for c in o.outputs]
        if len(texts) != n:
            raise ValueError(f"teacher prompt {i} (id {rows[i].get('id')!r}): {len(texts)} completions, expected {n}")
        out.append(texts)
    return out


try:  # verl is a test / GPU extra: without it the scorer and the builders still work, the manager does not
    from verl.experimental.reward_loop.reward_manager import register as _register
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase as _ManagerBase
except ImportError:
    _register, _ManagerBase = None, object


class RLTRewardManager(_ManagerBase):
    """verl reward manager for the RLT teacher: ``reward.reward_manager.name=rlt``, settings under
    ``reward.reward_kwargs`` (``teacher_path``, ``student_path``, the :class:`RLTRewardSettings` keys and
    ``batch_wait_s``). One :class:`RLTScorer` per worker process (class-level, loaded on first use).

    ``run_single`` calls of one worker wait until ``micro_batch`` have arrived or ``batch_wait_s`` has passed,
    then are scored together (``compute_score_batch`` sends a whole chunk at once, so they arrive together).
    """

    scorer: RLTScorer | None = None

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None, scorer: RLTScorer | None = None):
        super().__init__(config, tokenizer, compute_score)
        kw = dict(config.reward.get("reward_kwargs", {}) or {})
        self.batch_wait_s = float(kw.get("batch_wait_s", 0.05))
        if scorer is not None:
            type(self).scorer = scorer
        elif type(self).scorer is None:
            for k in ("teacher_path", "student_path"):
                if not kw.get(k):
                    raise KeyError(f"RLT reward manager: reward.reward_kwargs.{k} is not set")
            type(self).scorer = RLTScorer.from_paths(kw["teacher_path"], kw["student_path"],
                                                     RLTRewardSettings.from_dict(kw))
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None

    async def run_single(self, data) -> dict:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((data[-1:], fut))  # multi-sequence outputs: the last one, as verl's managers
        if len(self._pending) >= self.scorer.settings.micro_batch:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self.batch_wait_s, lambda: asyncio.ensure_future(self._flush()))
        return await fut

    async def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        from verl import DataProto

        try:
            async with self._lock:
                data = DataProto.concat([d for d, _ in batch])
                rm, extra = await asyncio.get_running_loop().run_in_executor(None, self.scorer.score_batch, data)
            idx = response_lengths(data) - 1
            for i, (_, fut) in enumerate(batch):
                fut.set_result({"reward_score": float(rm[i, idx[i]]),
                                "reward_extra_info": {k: v[i] for k, v in extra.items()}})
        except Exception as exc:  # every waiting sample fails loudly, none hangs
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)


if _register is not None:
    from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER as _REGISTERED

    if REWARD_MANAGER not in _REGISTERED:  # verl's workers load this file by path (a second module object)
        _register(REWARD_MANAGER)(RLTRewardManager)


def reward_loop_manager_class(reward_gpus: float):
    """verl's ``RewardLoopManager`` whose reward-loop workers each hold ``reward_gpus`` GPUs.

    verl 0.9.1 starts them as plain Ray actors (no ``num_gpus``): Ray then hides every GPU from them, and the RLT
    reward's two model passes would run on CPU. With GPUs left outside the trainer's pool (the job asks for
    ``trainer.n_gpus_per_node`` + ``reward_gpus`` x ``reward.num_workers``) each worker gets its own and
    :class:`RLTScorer` loads the models there (bf16)."""
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    class RLTRewardLoopManager(RewardLoopManager):
        def _init_reward_loop_workers(self):
            self.reward_loop_workers = [
                self.reward_loop_workers_class.options(name=f"reward_loop_worker_{i}", num_gpus=float(reward_gpus))
                .remote(self.config, self.reward_router_address)
                for i in range(int(self.config.reward.num_workers))]
            ray.get([w.__ray_ready__.remote() for w in self.reward_loop_workers])  # fail now if no GPU is free

    return RLTRewardLoopManager


def _task_runner():
    import ray
    import verl.experimental.reward_loop as reward_loop
    import verl.trainer.main_ppo_v0 as v0

    class _Runner(v0.TaskRunner.__ray_actor_class__):
        """verl's TaskRunner with the reward-loop manager of :func:`reward_loop_manager_class` (``RayPPOTrainer``
        imports it by name from ``verl.experimental.reward_loop`` when it builds its workers)."""

        def run(self, config):
            reward_loop.RewardLoopManager = reward_loop_manager_class(float(config.rlrt.reward_gpus))
            return super().run(config)

    return ray.remote(_Runner)


def main() -> None:
    """``python -m rlrt.backends.verl.rlt <hydra overrides>``: verl's ``main_ppo`` (plain GRPO: the teacher's RL
    needs no method step) with the reward-loop workers on GPUs (``rlrt.reward_gpus``)."""
    import hydra
    from verl.trainer import main_ppo

    @hydra.main(config_path=os.path.join(os.path.dirname(main_ppo.__file__), "config"), config_name="ppo_trainer",
                version_base=None)
    def _main(config):
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config
        from verl.utils.device import auto_set_device

        auto_set_device(config)
        validate_config(config=config, use_reference_policy=need_reference_policy(config),
                        use_critic=need_critic(config))
        main_ppo.run_ppo(config, task_runner_class=_task_runner())

    _main()


# ----------------------------------------------------------------------------------------------------------------
# Thin entry point (NEVER RUN: needs GPUs, vLLM and verl's Ray trainer)

def write_agent_loop_config(path: str | os.PathLike) -> Path:
    """The ``rollout.agent.agent_loop_config_path`` file: verl's agent-loop workers build :data:`AGENT_LOOP_TARGET`
    (with Hydra) for the agent name :data:`AGENT_NAME`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"- name: {AGENT_NAME}\n  _target_: {AGENT_LOOP_TARGET}\n")
    return p


def teacher_rl_overrides(job_cfg: dict[str, Any], teacher_path: str, student_path: str, train_file: str,
                         ckpt_dir: str, agent_loop_config: str) -> list[str]:
    """Hydra overrides for ``verl.trainer.main_ppo`` running RLT's teacher GRPO (RLT paper App.; SakanaAI/RLT:
    16 prompts x 64 samples, lr 1e-6, temperature 0.7, (r - mean)/(std + 1e-4), beta 0.04 KL to the SFT teacher).

    ``job_cfg``: ``teacher_rl`` (the rlt block), ``seed``, ``gpus``, ``verl`` (the paper overlay's block);
    ``agent_loop_config``: the file :func:`write_agent_loop_config` wrote (the rollout continues the teacher's turn).
    """
    rl = job_cfg["teacher_rl"]
    v = job_cfg.get("verl") or {}
    s = RLTRewardSettings.from_dict(rl)
    n, q = int(rl["n_samples"]), int(rl["question_batch"])
    mini = int(rl.get("mini_batch", q))
    beta = float(rl.get("beta", 0.04))
    rollout = v.get("rollout", {})
    gpus, reward_gpus = int(job_cfg.get("gpus") or 1), int(v.get("rlt_reward_gpus", 1))
    train_gpus = gpus - reward_gpus
    if train_gpus < 1:
        raise ValueError(f"RLT teacher RL on verl: {gpus} GPU(s) for the job, {reward_gpus} for the reward worker "
                         f"(verl.rlt_reward_gpus): none left for the trainer; give rlt_train more GPUs")
    o = [
        f"data.train_files={train_file}", "data.val_files=null", f"data.train_batch_size={q}",
        f"data.max_prompt_length={int(v.get('max_prompt_length', 2048))}",
        f"data.max_response_length={int(rl['max_new_tokens'])}",
        f"actor_rollout_ref.model.path={teacher_path}",
        f"actor_rollout_ref.rollout.n={n}", f"actor_rollout_ref.rollout.temperature={s.temperature}",
        f"actor_rollout_ref.rollout.name={rollout.get('name', 'vllm')}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={int(rollout.get('tensor_model_parallel_size', 1))}",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={float(rollout.get('gpu_memory_utilization', 0.6))}",
        f"actor_rollout_ref.rollout.agent.default_agent_loop={AGENT_NAME}",
        f"actor_rollout_ref.rollout.agent.agent_loop_config_path={agent_loop_config}",
        "data.filter_overlong_prompts=True",  # the agent loop refuses a prompt it would have to cut
        f"actor_rollout_ref.actor.optim.lr={float(rl['lr'])}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
        f"actor_rollout_ref.actor.clip_ratio_low={float(rl.get('clip_low', 0.2))}",
        f"actor_rollout_ref.actor.clip_ratio_high={float(rl.get('clip_high', 0.2))}",
        "actor_rollout_ref.actor.loss_agg_mode=token-mean", "actor_rollout_ref.actor.ppo_epochs=1",
        f"actor_rollout_ref.actor.clip_ratio_c={float(rl.get('clip_ratio_c') or 3.0)}",
        f"actor_rollout_ref.actor.optim.weight_decay={float(rl.get('weight_decay', 0.0))}",
        f"actor_rollout_ref.actor.grad_clip={float(rl.get('grad_clip', 1.0))}",
        f"actor_rollout_ref.actor.use_dynamic_bsz={bool(v.get('use_dynamic_bsz', True))}",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={int(v.get('ppo_max_token_len_per_gpu', 45056))}",
        f"actor_rollout_ref.actor.fsdp_config.param_offload={bool(v.get('param_offload', False))}",
        f"actor_rollout_ref.actor.fsdp_config.optimizer_offload={bool(v.get('optimizer_offload', False))}",
        f"actor_rollout_ref.actor.use_kl_loss={beta > 0}", f"actor_rollout_ref.actor.kl_loss_coef={beta}",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",  # k3, as the local engine
        "algorithm.adv_estimator=grpo", "algorithm.norm_adv_by_std_in_grpo=True", "algorithm.use_kl_in_reward=False",
        # loaded by file path in every reward worker (a name in verl's registry would exist only where this module
        # was imported); one worker, on its own GPUs (reward_loop_manager_class), so one copy of each model
        "reward.reward_manager.source=importlib",
        f"reward.reward_manager.module.path={Path(__file__).resolve().with_name('rlt_reward_manager.py')}",
        f"reward.reward_manager.name={RLTRewardManager.__name__}", "reward.num_workers=1",
        f"++rlrt.reward_gpus={reward_gpus}",
        f"+reward.reward_kwargs.teacher_path={teacher_path}", f"+reward.reward_kwargs.student_path={student_path}",
        f"+reward.reward_kwargs.alpha={s.alpha}", f"+reward.reward_kwargs.lam={s.lam}",
        f"+reward.reward_kwargs.temperature={s.temperature}",
        f"+reward.reward_kwargs.missing_tag_penalty={s.missing_tag_penalty}",
        f"+reward.reward_kwargs.micro_batch={s.micro_batch}",
        f"trainer.total_training_steps={int(rl['steps'])}", f"trainer.default_local_dir={ckpt_dir}",
        f"trainer.n_gpus_per_node={train_gpus}", "trainer.nnodes=1",
        "trainer.use_v1=False",  # the DataProto RayPPOTrainer whose reward-loop manager main() replaces
        f"trainer.save_freq={int(v.get('save_freq', 10))}", "trainer.resume_mode=auto",
        "trainer.project_name=rlrt", "trainer.experiment_name=rlt_teacher_rl", "trainer.test_freq=-1",
        "trainer.val_before_train=False",
        f"trainer.logger={'[console,mlflow]' if job_cfg.get('tracking') else '[console]'}",
        f"data.seed={int(job_cfg.get('seed', 0))}",
    ]
    return o + list(v.get("extra_overrides", []))


def run_teacher_rl(job_cfg: dict[str, Any], teacher_path: str, student_path: str, data_rows: Sequence[dict],
                   out: str | os.PathLike, work_dir: str | os.PathLike) -> Path:
    """The teacher's RL on verl: the RL parquet, ``python -m verl.trainer.main_ppo`` with
    :func:`teacher_rl_overrides` (rollouts through :data:`AGENT_LOOP_TARGET`, rewards through
    :class:`RLTRewardManager`), then the last actor checkpoint merged into a HF folder at ``out``.

    NEVER RUN (no GPU here). The checkpoints live under ``work_dir/ckpt`` (outside the rule's outputs, so that a
    requeued job resumes with ``resume_mode=auto``) and are removed once ``out`` is written. Step metrics go to
    verl's logger (MLflow under ``MLFLOW_TRACKING_URI`` when tracking is on).
    """
    from rlrt.backends.verl.rlt_sft import write_parquet
    from rlrt.backends.verl.train import merge_checkpoint

    work = Path(work_dir)
    train = work / "teacher_rl.parquet"
    write_parquet(teacher_rl_rows(data_rows), train)
    loops = write_agent_loop_config(work / "agent_loops.yaml")
    cmd = [sys.executable, "-m", "rlrt.backends.verl.rlt",
           *teacher_rl_overrides(job_cfg, teacher_path, student_path, str(train), str(work / "ckpt"), str(loops))]
    env = dict(os.environ)
    uri = (job_cfg.get("tracking") or {}).get("uri")
    if uri:  # else the workflow's MLFLOW_TRACKING_URI, inherited
        env["MLFLOW_TRACKING_URI"] = str(uri)
    log.info("verl teacher RL: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)
    steps = int(job_cfg["teacher_rl"]["steps"])
    merge_checkpoint(work / "ckpt" / f"global_step_{steps}" / "actor", Path(out))
    shutil.rmtree(work / "ckpt", ignore_errors=True)  # the run is complete: its resume state is no longer needed
    return Path(out)


if __name__ == "__main__":
    main()
