"""The job config -> verl 0.9.1 Hydra overrides for ``verl.trainer.main_ppo`` (one pure function, no verl import).

Why a pure function over strings: verl's trainer is configured by composing its own ``ppo_trainer.yaml`` with
command-line overrides, so the only thing this repository owns is the list of overrides. Keeping it pure means
``tests/test_verl_overrides.py`` can compose verl's *shipped* yaml with exactly this list on a CPU and compare the
composed values with the job config -- a misspelled or renamed verl key fails there (Hydra refuses a plain
override of a key the config does not have), not three days into a cluster job.

Every value comes from the job config (``rl`` block, the method's settings, the ``verl`` block, the backbone's
``max_response_length``, ``seed``, ``tracking``) or is one of verl's own switches, named below with the reason:

* ``trainer.use_v1=false``: the DataProto ``RayPPOTrainer`` path ``rlrt.backends.verl.trainer`` subclasses (verl 0.9 defaults to V1).
* ``algorithm.adv_estimator=grpo`` and ``norm_adv_by_std_in_grpo`` = the method's ``norm_adv_by_std`` setting
  (GRPO/SDPO/SRPO off, RLSD/RLRT on: ``rlrt.methods.settings``); the trainer replaces the advantages through
  ``rlrt.methods.shaping.shape_advantages``, which reads the same setting.
* No KL (RLRT Table 5: KL coefficient 0): ``use_kl_loss=false``, ``use_kl_in_reward=false`` and both KL
  coefficients 0, so a trainer that switches ``use_kl_loss`` on only to get verl's reference worker (the frozen
  initial policy, SDPO's teacher at EMA rate 0) still adds no KL term.
* Rollout importance sampling (Table 5 "rollout IS clip 2"): ``algorithm.rollout_correction.rollout_is=token``
  (truncated per-token IS, verl's TIS) with ``rollout_is_threshold`` from ``verl.rollout_is_threshold``; null
  there leaves it off. The level ``token`` is this module's choice (:data:`ROLLOUT_IS_LEVEL`); the paper does not
  name one.
* ``entropy_coeff``: GRPO+EB's ``variant: loss`` only (its ``entropy_coeff`` setting), else 0.
* ``use_dynamic_bsz``: true -> ``ppo_max_token_len_per_gpu`` (the update's micro-batch; refused below one student
  sequence), and the log-prob passes' ``log_prob_max_token_len_per_gpu`` raised to one teacher view
  (``max_reprompt_length + max_response_length``) for a method with a teacher, since they also score teacher views
  (``rlrt.backends.verl.memory.log_prob_token_budget``); false -> verl requires per-GPU micro-batches, taken from
  ``rl.micro_batch``.
* ``data.apply_chat_template_kwargs`` (added with ``++`` into verl's empty dict): the backbone's
  ``chat_template_kwargs`` (paper.yaml: Qwen3-8B's ``enable_thinking: false``), which verl's dataset and agent loop
  render the rollout prompts with and ``rlrt.backends.verl.trainer`` reads back for the teacher views; ``{}`` else.
* ``trainer.val_before_train=false``: evaluation is its own stage (``rlrt.backends.verl.evaluate``) with the paper's
  sampling settings; verl's built-in validation (greedy, n=1) would only cost time.
* ``trainer.logger``: ``[console, mlflow]`` when tracking is configured (verl's MLflow logger reads
  ``MLFLOW_TRACKING_URI``, which ``rlrt.backends.verl.train`` exports), ``[console]`` otherwise.
* ``trainer.save_freq``: ``verl.save_freq`` (else ``rl.resume_every``, else ``rl.steps``); every ``rl.save_steps``
  entry must be a multiple of it (checked); ``resume_mode=auto`` resumes a requeued job from ``ckpt_dir``, which
  must NOT be a declared Snakemake output. ``trainer.max_actor_ckpt_to_keep`` / ``max_critic_ckpt_to_keep`` stay
  null (verl's own rotation would also delete the ``rl.save_steps`` checkpoints, and it forgets what it saved
  before a requeue): ``rlrt.backends.verl.trainer`` prunes instead, after every save, with
  ``rlrt.backends.verl.train.prune_checkpoints`` (the latest checkpoint whole, the ``rl.save_steps`` ones without
  their optimizer state, nothing else).
* ``actor_rollout_ref.rollout.max_model_len`` = ``verl.max_prompt_length`` + the backbone's
  ``max_response_length``: the run's own lengths, not the model's context (verl's default, 262,144 tokens for
  Qwen3-4B-Instruct-2507, would make vLLM reserve its KV cache for that). ``rlrt.backends.verl.train`` checks it
  against the model's context before starting.
* ``actor_rollout_ref.model.override_config.attn_implementation`` = ``verl.attn_implementation``
  (``flash_attention_2`` (verl's default) | ``sdpa`` | ``eager``): ``sdpa`` where flash-attn is not installed.
* ``ray_kwargs.ray_init.num_cpus`` / ``num_gpus``: the job's allocation (``n_cpus``: :func:`allocated_cpus`, i.e.
  ``SLURM_CPUS_PER_TASK``; ``n_gpus``: the GPUs the rule asked for), so that two jobs on one node do not each
  start Ray over the whole node.

Keys the trainer, loss and reward modules read (added with ``++`` (add or replace) under one top-level ``rlrt`` node,
which verl's yaml does not have and verl ignores), so that the Ray task runner and workers -- which only see the
Hydra config -- know the method:

* ``rlrt.method`` (str, registry name), ``rlrt.run`` (str, run id), ``rlrt.objective`` (str, registered objective
  from ``rlrt.methods.registry.objective_name``: ``pg`` | ``pg_entropy`` | ``sdpo`` | ``srpo``),
  ``rlrt.teacher`` (``none`` | ``self`` | ``frozen``), ``rlrt.backbone_kind``, ``rlrt.seed``,
  ``rlrt.grader_workers``, ``rlrt.max_reprompt_length`` (teacher-view prompt cap, ``verl.max_reprompt_length``),
  ``rlrt.settings.<field>``: every field of the method's settings after the run's overrides (``as_dict``; floats
  stay floats, ``null`` stays None). ``rlrt.save_steps`` (list of int): intermediate checkpoints the analyses read.
* ``actor_rollout_ref.actor.policy_loss.loss_mode``: ``vanilla`` (verl's dual-clip PPO loss; ``pg`` and
  ``pg_entropy`` are that loss, with ``entropy_coeff`` for the latter) or :data:`LOSS_MODES` ``[objective]`` for
  SDPO/SRPO, a name ``rlrt.backends.verl.plugin`` registers with ``register_policy_loss``.

``verl.extra_overrides`` are appended last, verbatim (site tuning: they win over everything above).
Nothing here has run inside verl's trainer (no GPU); the composition test is what has been checked.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from rlrt.methods.registry import get_method, objective_name
from rlrt.methods.settings import as_dict

ROLLOUT_IS_LEVEL = "token"
"""``algorithm.rollout_correction.rollout_is``: per-token truncated IS (verl's TIS) -- our reading of Table 5."""

LOSS_MODES = {"pg": "vanilla", "pg_entropy": "vanilla", "sdpo": "rlrt_sdpo", "srpo": "rlrt_srpo"}
"""Registered objective -> verl ``policy_loss.loss_mode``. The names that are not verl's own (``rlrt_sdpo`` /
``rlrt_srpo``) are registered by the project's plugin (``rlrt.backends.verl.plugin``, from this table)."""

ENTROPY_BONUS = {"pg": False, "pg_entropy": True, "sdpo": False, "srpo": False}
"""Registered objective -> whether verl's ``entropy_coeff`` carries the method's loss-level entropy bonus (GRPO+EB's
``variant: loss``); a table, so that no code branches on an objective's name."""

REWARD_FUNCTION = "compute_score"
"""Name of the reward function in ``rlrt/backends/verl/reward.py`` (verl ``custom_reward_function.name``)."""

ATTN_IMPLEMENTATIONS = ("flash_attention_2", "sdpa", "eager")
"""Allowed ``verl.attn_implementation`` values (the first is verl's default and this module's)."""

_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")


def hydra_run_dir(work: str | Path) -> str:
    """The override that puts Hydra's run folder (its log and the composed config) in the job's own work folder.

    By default Hydra writes ``outputs/<date>/<time>/`` under the current directory, which for a Snakemake job is
    the repository root: every verl job would leave a folder there. Passed on the command line of each verl entry
    point we start (RL, the RLT teacher's RL, SFT), never to the composed config."""
    return f"hydra.run.dir={hydra_value(str(Path(work) / 'hydra'))}"


def hydra_value(value: Any) -> str:
    """One Python value as a Hydra override value: null/true/false, ints, floats (``repr`` keeps 1e-06 exact),
    quoted strings, ``[..]`` lists and ``{..}`` dicts (recursively).

    Strings are always single-quoted: a bare ``1.0``, ``null`` or ``a,b`` would be parsed as a float, None or a
    list. Inside quotes Hydra needs ``\\'`` for a quote, doubled backslashes only where they precede a quote or
    end the string, and ``\\${`` so a path containing ``${`` is not resolved as an interpolation.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot pass a non-finite float ({value}) to verl")
        return repr(value)
    if isinstance(value, str):
        s = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)  # backslashes before a quote / at the end
        s = s.replace("'", "\\'").replace("${", "\\${")
        return f"'{s}'"
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str) or not _BARE.fullmatch(k) or "/" in k or "." in k:
                raise ValueError(f"dict key {k!r} cannot be passed to Hydra unquoted")
            items.append(f"{k}:{hydra_value(v)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    raise TypeError(f"cannot pass a {type(value).__name__} ({value!r}) to verl as a Hydra value")


def reward_function_path() -> str:
    """Absolute path of the reward module (verl loads ``custom_reward_function.path`` as a file)."""
    return str(Path(__file__).resolve().with_name("reward.py"))


def _require(d: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise KeyError(f"job config: {where}.{key} is missing (needed by the verl backend)")
    return d[key]


def save_freq(v: Mapping[str, Any], rl: Mapping[str, Any]) -> int:
    """``trainer.save_freq``: ``verl.save_freq``, else ``rl.resume_every``, else ``rl.steps`` (verl then saves only
    the last step, which the run's final model is merged from). verl saves at multiples of it and at the last step
    (the trainer keeps the latest and the ``rl.save_steps`` ones), so each ``rl.save_steps`` entry below
    ``rl.steps`` must be a multiple, or that intermediate checkpoint would silently never exist."""
    freq = next((int(x) for x in (v.get("save_freq"), rl.get("resume_every"), rl["steps"]) if x is not None), 0)
    if freq < 1:
        raise ValueError(f"verl.save_freq: {freq} (verl writes no checkpoint at all below 1, so no final model)")
    steps = int(rl["steps"])
    bad = [int(k) for k in rl.get("save_steps") or [] if 0 < int(k) < steps and int(k) % freq]
    if bad:
        raise ValueError(f"rl.save_steps {bad} are not multiples of verl.save_freq = {freq}: verl would never "
                         f"write those checkpoints")
    return freq


def allocated_cpus(env: Mapping[str, str] | None = None) -> int:
    """CPUs this job may use: ``SLURM_CPUS_PER_TASK`` under SLURM, else the CPUs this process is bound to
    (``os.sched_getaffinity``; ``os.cpu_count`` where that does not exist). ``ray_kwargs.ray_init.num_cpus``."""
    import os

    env = os.environ if env is None else env
    slurm = env.get("SLURM_CPUS_PER_TASK")
    if slurm:
        try:
            n = int(slurm)
        except ValueError:
            raise ValueError(f"SLURM_CPUS_PER_TASK={slurm!r} is not an integer") from None
        if n >= 1:
            return n
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return int(os.cpu_count() or 1)


def attn_implementation(v: Mapping[str, Any]) -> str:
    """``verl.attn_implementation`` (default ``flash_attention_2``), checked against :data:`ATTN_IMPLEMENTATIONS`."""
    impl = v.get("attn_implementation") or ATTN_IMPLEMENTATIONS[0]
    if impl not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"verl.attn_implementation: {impl!r} is not one of {list(ATTN_IMPLEMENTATIONS)}")
    return str(impl)


def hydra_overrides(job_cfg: Mapping[str, Any], *, model_path: str, train_file: str, val_file: str, ckpt_dir: str,
                    n_gpus: int, experiment_name: str, n_cpus: int | None = None) -> list[str]:
    """verl 0.9.1 Hydra overrides (``key=value`` strings, in order) for one RL run described by ``job_cfg``
    (the ``--cfg`` JSON of the rl stage: ``rl``, ``method``, ``run``, ``method_cfg``, ``backbone``,
    ``max_response_length``, ``seed``, ``tracking``, ``verl``). ``n_cpus``: Ray's CPUs (default
    :func:`allocated_cpus`). Raises ``KeyError`` / ``ValueError`` naming the job-config key when something the
    mapping needs is missing or unsupported."""
    rl = job_cfg["rl"]
    v = job_cfg.get("verl")
    if not v:
        raise ValueError("job config: 'verl' block is missing or null (backend: verl needs config/paper.yaml's "
                         "verl block)")
    if int(n_gpus) < 1:
        raise ValueError(f"n_gpus must be >= 1 for verl (got {n_gpus}); set resources.rl.gpus")
    spec = get_method(job_cfg["method"])
    settings = spec.make_settings(job_cfg.get("method_cfg") or {}, where="method_cfg")
    objective = objective_name(spec, settings)
    if objective not in LOSS_MODES:
        raise ValueError(f"method {spec.name!r}: objective {objective!r} has no verl loss mode (LOSS_MODES)")
    clip_c = _require(rl, "clip_ratio_c", "rl")
    if clip_c is None:
        raise ValueError("rl.clip_ratio_c: null (no dual-clip) is not available on the verl backend: verl's "
                         "vanilla loss always applies dual-clip; set a value > 1 (verl's default 3.0)")
    rollout = _require(v, "rollout", "verl")
    dynamic = bool(_require(v, "use_dynamic_bsz", "verl"))
    entropy_coeff = float(settings.entropy_coeff) if ENTROPY_BONUS[objective] else 0.0
    freq = save_freq(v, rl)
    attn = attn_implementation(v)
    max_prompt = int(_require(v, "max_prompt_length", "verl"))
    n_cpus = allocated_cpus() if n_cpus is None else int(n_cpus)
    if n_cpus < 1:
        raise ValueError(f"n_cpus must be >= 1 for Ray (got {n_cpus}); set resources.rl.cpus")
    tracking = job_cfg.get("tracking")
    seed = int(job_cfg["seed"])
    actor, ref, ro = "actor_rollout_ref.actor", "actor_rollout_ref.ref", "actor_rollout_ref.rollout"

    o: list[tuple[str, Any]] = [
        # data
        ("data.train_files", str(train_file)),
        ("data.val_files", str(val_file)),
        ("data.train_batch_size", int(rl["question_batch"])),
        ("data.max_prompt_length", max_prompt),
        ("data.max_response_length", int(job_cfg["max_response_length"])),
        ("data.seed", seed),
        # model
        ("actor_rollout_ref.model.path", str(model_path)),
        # actor: optimiser (AdamW, linear warm-up then constant, as the local engine's warmup_lr)
        (f"{actor}.optim.lr", float(settings.learning_rate(rl["lr"]))),
        (f"{actor}.optim.lr_warmup_steps", int(rl["warmup_steps"])),
        (f"{actor}.optim.weight_decay", float(rl["weight_decay"])),
        (f"{actor}.optim.clip_grad", float(rl["grad_clip"])),
        (f"{actor}.grad_clip", float(rl["grad_clip"])),  # the legacy dp_actor reads this one
        # actor: loss
        (f"{actor}.clip_ratio_low", float(rl["clip_low"])),
        (f"{actor}.clip_ratio_high", float(rl["clip_high"])),
        (f"{actor}.clip_ratio_c", float(clip_c)),
        (f"{actor}.loss_agg_mode", str(rl["loss_agg"])),
        (f"{actor}.policy_loss.loss_mode", LOSS_MODES[objective]),
        (f"{actor}.entropy_coeff", entropy_coeff),
        (f"{actor}.use_kl_loss", False),
        (f"{actor}.kl_loss_coef", 0.0),
        (f"{actor}.ppo_mini_batch_size", int(rl["mini_batch"])),
        (f"{actor}.use_dynamic_bsz", dynamic),
        (f"{actor}.fsdp_config.param_offload", bool(v.get("param_offload", False))),
        (f"{actor}.fsdp_config.optimizer_offload", bool(v.get("optimizer_offload", False))),
        (f"{ref}.fsdp_config.param_offload", bool(v.get("param_offload", False))),
    ]
    if dynamic:
        o.append((f"{actor}.ppo_max_token_len_per_gpu", int(_require(v, "ppo_max_token_len_per_gpu", "verl"))))
        # the log-prob passes also score teacher views (P' + R tokens, longer than any student row): their budget
        # is raised to one teacher view (rlrt.backends.verl.memory.log_prob_token_budget)
        from rlrt.backends.verl.memory import log_prob_token_budget, token_budget_problem

        problem = token_budget_problem(v, int(job_cfg["max_response_length"]))
        if problem:
            raise ValueError(f"verl.ppo_max_token_len_per_gpu: {problem}")
        lp = log_prob_token_budget(v, int(job_cfg["max_response_length"]), spec.teacher != "none")
        o += [(f"{ro}.log_prob_max_token_len_per_gpu", lp), (f"{ref}.log_prob_max_token_len_per_gpu", lp)]
    else:
        mb = int(_require(rl, "micro_batch", "rl"))
        o += [(f"{actor}.ppo_micro_batch_size_per_gpu", mb), (f"{ro}.log_prob_micro_batch_size_per_gpu", mb),
              (f"{ref}.log_prob_micro_batch_size_per_gpu", mb)]
    o += [
        # rollout
        (f"{ro}.name", str(_require(rollout, "name", "verl.rollout"))),
        (f"{ro}.n", int(rl["n_rollouts"])),
        (f"{ro}.temperature", float(rl["temperature"])),
        (f"{ro}.tensor_model_parallel_size", int(_require(rollout, "tensor_model_parallel_size", "verl.rollout"))),
        (f"{ro}.gpu_memory_utilization", float(_require(rollout, "gpu_memory_utilization", "verl.rollout"))),
        (f"{ro}.seed", seed),
        (f"{ro}.max_model_len", max_prompt + int(job_cfg["max_response_length"])),
        # algorithm
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.norm_adv_by_std_in_grpo", bool(settings.norm_adv_by_std)),
        ("algorithm.use_kl_in_reward", False),
        ("algorithm.kl_ctrl.kl_coef", 0.0),
    ]
    threshold = v.get("rollout_is_threshold")
    if threshold is not None:
        o += [("algorithm.rollout_correction.rollout_is", ROLLOUT_IS_LEVEL),
              ("algorithm.rollout_correction.rollout_is_threshold", float(threshold))]
    o += [
        # reward: the project's rule-based grader (rlrt.backends.verl.reward)
        ("reward.custom_reward_function.path", reward_function_path()),
        ("reward.custom_reward_function.name", REWARD_FUNCTION),
        # trainer
        ("trainer.use_v1", False),
        ("trainer.nnodes", 1),
        ("trainer.n_gpus_per_node", int(n_gpus)),
        ("trainer.total_training_steps", int(rl["steps"])),
        ("trainer.save_freq", freq),
        ("trainer.max_actor_ckpt_to_keep", None),  # pruned by our trainer instead (module docstring)
        ("trainer.max_critic_ckpt_to_keep", None),
        ("trainer.default_local_dir", str(ckpt_dir)),
        ("trainer.resume_mode", "auto"),
        ("trainer.val_before_train", False),
        ("trainer.logger", ["console", "mlflow"] if tracking else ["console"]),
        ("trainer.project_name", str((tracking or {}).get("experiment") or "rlrt")),
        ("trainer.experiment_name", str(experiment_name)),
        # Ray: the job's allocation, not the node
        ("ray_kwargs.ray_init.num_cpus", n_cpus),
    ]
    # the method, for the trainer / loss inside the Ray workers (see the module docstring)
    extra: list[tuple[str, Any]] = [
        ("rlrt.method", spec.name),
        ("rlrt.run", str(job_cfg.get("run") or spec.name)),
        ("rlrt.objective", objective),
        ("rlrt.teacher", spec.teacher),
        ("rlrt.backbone_kind", str(job_cfg["backbone"]["kind"])),
        ("rlrt.seed", seed),
        ("rlrt.grader_workers", int(job_cfg.get("grader_workers") or 1)),
        ("rlrt.max_reprompt_length", int(_require(v, "max_reprompt_length", "verl"))),
        ("rlrt.save_steps", [int(s) for s in rl.get("save_steps") or []]),
    ]
    extra += [(f"rlrt.settings.{k}", val) for k, val in as_dict(settings).items()]
    added = [  # keys verl's yaml does not have (an empty override_config, ray_init without num_gpus)
        ("actor_rollout_ref.model.override_config.attn_implementation", attn),
        ("ray_kwargs.ray_init.num_gpus", int(n_gpus)),
        # the backbone's chat-template variables (Qwen3-8B: enable_thinking false), into verl's empty dict: its
        # RLHFDataset and the agent loop's prompt builder render the rollout prompts with them, and the trainer's
        # teacher views read them back from there
        ("data.apply_chat_template_kwargs", dict(job_cfg["backbone"].get("chat_template_kwargs") or {})),
    ]
    out = [f"{k}={hydra_value(val)}" for k, val in o]
    out += [f"++{k}={hydra_value(val)}" for k, val in added + extra]
    out += [str(s) for s in (v.get("extra_overrides") or [])]
    return out


def format_command(overrides: Sequence[str], module: str = "rlrt.backends.verl.trainer") -> str:
    """A shell-quoted ``python -m <module> <overrides>`` line (for logs and ``bench/gpu_smoke.py --dry-run``)."""
    import shlex

    return " ".join(["python", "-m", module, *(shlex.quote(s) for s in overrides)])
