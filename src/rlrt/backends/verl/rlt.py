"""RLT at paper scale on verl 0.9.1: the teacher's RL -- its verl config, its data and its entry point.

The teacher's reward (RLT paper Sec. 3.3) needs two extra forward passes that no rule-based reward has: a frozen
*student* scores the explanation (r_SS on the solution tokens, its distribution on the explanation tokens) and
the *teacher* gives its own distribution on the same explanation tokens (r_KL). The branch is split by idea:

* ``rlt_scorer`` -- :class:`RLTScorer`: both passes and the equations are the local engine's
  (``rlrt.backends.local.rlt.score_explanations`` -> ``rlrt.methods.rlt_reward``), run on the models' device;
* ``rlt_reward_loop`` -- :class:`RLTRewardManager` (verl's per-sample ``run_single`` contract, micro-batched) and
  the reward-loop workers that hold a GPU each (:func:`reward_loop_manager_class`);
* ``rlt_generate`` -- the teacher's completions on vLLM (distillation data, reward-rank candidates);
* this module -- the RL parquet rows, the Hydra overrides of verl's ``ppo_trainer`` and ``main``.

Known gaps (NEVER RUN: no GPU here):
* r_KL's teacher distribution comes from a *frozen* teacher loaded by the reward workers (the SFT warm-up, the
  policy RL starts from), not from the current policy theta_old as in the local engine and the paper: verl's
  ``compute_log_prob`` returns sampled-token log-probs only, never the full-vocabulary distribution Eq. 4
  needs. The two agree at step 0 and drift apart as the teacher trains.
* GPU split: ``verl.rlt_reward_gpus`` reward workers (one GPU each) and the rest of the job's GPUs for the
  trainer, which must divide the rollout batch (``question_batch`` x ``n_samples``) and its mini-batches:
  verl's batch balancing and its engine workers assert it (:func:`gpu_split_problem`).

The teacher's generation prompt ends inside its assistant turn (``teacher_prefix``), which verl's own
``single_turn_agent`` cannot continue (it always opens a fresh assistant turn): the rollout goes through
``rlrt.backends.verl.agent_loop.RLTTeacherAgentLoop`` (:data:`AGENT_NAME`), which builds the local engine's very
prompt ids; :func:`teacher_rl_overrides` makes it verl's default loop through the file
:func:`write_agent_loop_config` writes.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from rlrt.backends.verl.rlt_generate import request_seed, teacher_completions
from rlrt.backends.verl.rlt_reward_loop import REWARD_MANAGER, RLTRewardManager, reward_loop_manager_class
from rlrt.backends.verl.rlt_scorer import (RLTRewardSettings, RLTScorer, decode_responses, default_device,
                                           response_lengths, sample_fields, sample_texts)
from rlrt.tasks.prompts import user_message
from rlrt.tasks.rlt_format import teacher_prefix

__all__ = ["AGENT_LOOP_TARGET", "AGENT_NAME", "REWARD_MANAGER", "RLTRewardManager", "RLTRewardSettings", "RLTScorer",
           "decode_responses", "default_device", "gpu_split_problem", "request_seed", "response_lengths",
           "reward_loop_manager_class", "run_teacher_rl", "sample_fields", "sample_texts", "teacher_completions",
           "teacher_rl_overrides", "teacher_rl_rows", "write_agent_loop_config"]

log = logging.getLogger("rlrt.verl.rlt")

AGENT_NAME = "rlt_teacher"  # verl ``rollout.agent.default_agent_loop`` of the teacher's RL
AGENT_LOOP_TARGET = "rlrt.backends.verl.agent_loop.RLTTeacherAgentLoop"  # what verl's workers instantiate for it


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


def gpu_split_problem(gpus: int, reward_gpus: int, question_batch: int, mini_batch: int, n_samples: int) -> str | None:
    """Why verl cannot train the teacher's RL with ``gpus`` for the job, ``reward_gpus`` of them the reward
    workers', or None. The trainer's ``gpus - reward_gpus`` data-parallel ranks must divide the rollout batch
    (verl's ``_balance_batch``: ``len % k == 0``) and each mini-batch of ``mini_batch x n_samples`` sequences
    (``engine_workers``: ``mini_batch_size % dp_size == 0``)."""
    train = gpus - reward_gpus
    if train < 1:
        return f"{gpus} GPU(s) leave none for the trainer next to the reward workers' {reward_gpus}"
    for what, size in (("rollout batch", question_batch * n_samples), ("mini-batch", mini_batch * n_samples)):
        if size % train:
            return (f"the trainer's {train} GPU(s) ({gpus} - {reward_gpus} for the reward) do not divide the "
                    f"{what} of {size} sequences")
    return None


def _task_runner():
    import ray
    import verl.experimental.reward_loop as reward_loop
    import verl.trainer.main_ppo_v0 as v0

    class _Runner(v0.TaskRunner.__ray_actor_class__):
        """verl's TaskRunner with the reward-loop manager of :func:`reward_loop_manager_class` (``RayPPOTrainer``
        imports it by name from ``verl.experimental.reward_loop`` when it builds its workers)."""

        def run(self, config):
            reward_loop.RewardLoopManager = reward_loop_manager_class(float(config.rlrt.reward_cpus))
            return super().run(config)

    return ray.remote(_Runner)


def main() -> None:
    """``python -m rlrt.backends.verl.rlt <hydra overrides>``: verl's ``main_ppo`` (plain GRPO: the teacher's RL
    needs no method step) with the reward-loop workers on a GPU each and ``rlrt.reward_cpus`` CPUs each."""
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

    ``job_cfg``: ``teacher_rl`` (the rlt block), ``seed``, ``gpus``, ``cpus`` (the job's threads), ``verl`` (the
    paper overlay's block); ``agent_loop_config``: the file :func:`write_agent_loop_config` wrote (the rollout
    continues the teacher's turn). ``train_file`` is also verl's validation file: the legacy TaskRunner always
    builds a validation dataset (``data.val_files=null`` fails there) and ``test_freq=-1`` leaves it unused.
    Ray gets the job's CPUs (``ray_init.num_cpus``); each of the ``verl.rlt_reward_gpus`` reward workers (one GPU
    each) gets half of them divided among the workers, the trainer's workers the rest.
    """
    rl = job_cfg["teacher_rl"]
    v = job_cfg.get("verl") or {}
    s = RLTRewardSettings.from_dict(rl)
    n, q = int(rl["n_samples"]), int(rl["question_batch"])
    mini = int(rl.get("mini_batch", q))
    beta = float(rl.get("beta", 0.04))
    rollout = v.get("rollout", {})
    gpus, reward_gpus = int(job_cfg.get("gpus") or 1), int(v.get("rlt_reward_gpus", 1))
    problem = gpu_split_problem(gpus, reward_gpus, q, mini, n)
    if problem:
        raise ValueError(f"RLT teacher RL on verl (resources.rlt_train.gpus, verl.rlt_reward_gpus): {problem}")
    train_gpus = gpus - reward_gpus
    cpus = int(job_cfg.get("cpus") or os.cpu_count() or 1)
    reward_cpus = max(1, cpus // (2 * reward_gpus))
    o = [
        f"data.train_files={train_file}", f"data.val_files={train_file}", f"data.train_batch_size={q}",
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
        # was imported); one worker per reward GPU (reward_loop_manager_class), each with its copy of both models
        "reward.reward_manager.source=importlib",
        f"reward.reward_manager.module.path={Path(__file__).resolve().with_name('rlt_reward_manager.py')}",
        f"reward.reward_manager.name={RLTRewardManager.__name__}", f"reward.num_workers={reward_gpus}",
        f"++rlrt.reward_cpus={reward_cpus}", f"ray_kwargs.ray_init.num_cpus={cpus}",
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
    from rlrt.backends.verl.overrides import hydra_run_dir
    from rlrt.backends.verl.rlt_sft import write_parquet
    from rlrt.backends.verl.train import merge_checkpoint

    work = Path(work_dir)
    train = work / "teacher_rl.parquet"
    write_parquet(teacher_rl_rows(data_rows), train)
    loops = write_agent_loop_config(work / "agent_loops.yaml")
    cmd = [sys.executable, "-m", "rlrt.backends.verl.rlt",
           *teacher_rl_overrides(job_cfg, teacher_path, student_path, str(train), str(work / "ckpt"), str(loops)),
           hydra_run_dir(work)]
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
