"""The method step inside verl 0.9.1's legacy ``RayPPOTrainer`` (``trainer.use_v1=false``), and its entry point.

Why this hook. ``RayPPOTrainer.fit`` runs, per step: rollouts -> reward -> ``_compute_old_log_prob`` ->
``compute_advantage`` (a module-level function, verl's ``algorithm.adv_estimator=grpo``) -> ``_update_actor``.
The narrowest place that sees the whole batch after θ_old's log-probs, while the actor still holds θ_old, is the
start of ``_update_actor``: :class:`RLRTRayTrainer` overrides it to rewrite ``advantages`` / ``returns`` with
``rlrt.methods.shaping.shape_advantages`` (through ``rlrt.backends.verl.batch``) -- group advantages, DIVER's bonus,
the teacher view scored by the actor's own ``compute_log_prob`` (``rlrt.backends.verl.teacher_view``), Eq. 7's
token weights, GRPO+EB's entropy advantage -- then hands the batch to verl's update, whose ``vanilla`` clipped loss
(token-mean) is the ``pg`` objective. verl's own GRPO advantage is computed first and overwritten (a cheap no-op
that keeps verl's config validation and estimator untouched). ``_compute_old_log_prob`` is wrapped only to keep
the rollout policy's entropy, which ``fit`` pops before the advantage step (GRPO+EB needs it).

The method comes from the ``rlrt`` node of the Hydra config (``rlrt.backends.verl.overrides``): ``rlrt.method``,
``rlrt.settings.*``, ``rlrt.max_reprompt_length``; ``rlrt.history_path`` (added by ``train.py``) receives one JSON
line of our step metrics (the local engine's keys, ``rlrt.backends.local.rl.step_metrics``) per step.

Entry point: ``python -m rlrt.backends.verl.trainer <hydra overrides>`` = verl's ``main_ppo`` with this trainer
(the legacy ``TaskRunner`` builds ``RayPPOTrainer`` by its module-global name; :class:`RLRTTaskRunner` points that
name at our subclass inside its own Ray actor process, then runs verl's unchanged ``run``).

SDPO / SRPO (the distilling objectives): their loss needs the teacher view's logits at the current student's
top-K in every micro-batch, so the actor's loss function is replaced (``set_loss_fn`` after the workers start)
by ``rlrt.backends.verl.loss.WorkerLoss``; each step puts the plan and every row's teacher view in the update batch
(``loss.update_fields``), sets ``response_mask`` to the plan's loss mask for the update (verl counts those tokens
for its token-mean) and asks verl's engine for the logits-processor call (:func:`topk_processor`: verl makes that
call only in its own distillation mode, which this trainer otherwise leaves off).

Checkpoints: ``_save_checkpoint`` prunes after verl's save (``rlrt.backends.verl.train.prune_checkpoints``).

What has NEVER run: all of this class inside Ray on GPUs. On CPU it runs inside verl's real loop (Ray, FSDP2 on
gloo, a ``transformers`` rollout, a tiny model): GRPO, RLRT and SDPO, kill and resume (tests/test_verl_cpu_smoke.py);
:func:`dump_step` (``rlrt.dump_dir``) lets that test compare each step's advantages with the local engine's. Tested
on CPU also: ``shape_batch``, ``VerlTeacher``, :func:`history_row`, :func:`method_from_config`,
:func:`topk_processor` around verl's own ``_update_actor``, :func:`point_runner_at`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from types import SimpleNamespace
from typing import Any, Mapping, Optional

import torch

from rlrt.backends.verl.batch import Grouped, shape_batch, ungroup
from rlrt.backends.verl.teacher_view import VerlTeacher, rows_needing_teacher
from rlrt.methods.objectives import get_objective
from rlrt.methods.registry import MethodSpec, get_method, objective_name
from rlrt.methods.settings import MethodSettings
from rlrt.methods.shaping import Shaped

log = logging.getLogger("rlrt.verl.trainer")



def _plain(node: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(node):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        pass
    return node


def method_from_config(config: Mapping) -> tuple[MethodSpec, MethodSettings, dict]:
    """(spec, settings, the ``rlrt`` node as a dict) from verl's config; clear errors when the node is absent."""
    node = _plain(config.get("rlrt")) if hasattr(config, "get") else None
    if not node or "method" not in node:
        raise KeyError("verl config has no 'rlrt.method': run through rlrt.backends.verl.train (its overrides add "
                       "the rlrt node)")
    spec = get_method(node["method"])
    settings = spec.make_settings(dict(node.get("settings") or {}), where="rlrt.settings")
    if float(getattr(settings, "ema_rate", 0.0) or 0.0) > 0:
        raise NotImplementedError(f"method {spec.name!r}: an EMA teacher (ema_rate > 0) is not supported on verl; "
                                  "the worker loss distils toward the frozen initial policy (the paper's rate 0)")
    return spec, settings, node


@contextlib.contextmanager
def topk_processor(trainer):
    """Within the block, verl's ``RayPPOTrainer._update_actor`` marks the update batch ``distillation_use_topk``
    (its engine then calls the actor's loss function on the full logits first; ``rlrt.backends.verl.loss``) with
    the policy loss kept. verl sets that flag only when its own distillation (a separate teacher model and its
    loss) is on; here only the flag is borrowed, for the length of one update."""
    import verl.trainer.ppo.ray_trainer as rt

    saved_fn, saved_cfg = rt.is_distillation_enabled, getattr(trainer, "distillation_config", None)
    rt.is_distillation_enabled = lambda cfg: True
    trainer.distillation_config = SimpleNamespace(distillation_loss=SimpleNamespace(
        loss_settings=SimpleNamespace(use_topk=True), use_task_rewards=True, use_policy_gradient=True))
    try:
        yield
    finally:
        rt.is_distillation_enabled, trainer.distillation_config = saved_fn, saved_cfg


def distill_update(trainer_update, batch, grouped: Grouped, teacher: VerlTeacher, plan) -> Any:
    """Run verl's update (``trainer_update(batch)``) for a distilling objective: the plan's fields and the teacher
    views in the batch, ``response_mask`` = the plan's loss mask, the logits-processor flag on; the batch is
    restored afterwards (verl's metrics read the real response mask)."""
    from rlrt.backends.verl.loss import update_fields

    td = batch.batch
    fields = {k: ungroup(grouped, v) for k, v in update_fields(plan, teacher.views()).items()}
    saved = td["response_mask"]
    for k, v in fields.items():
        td[k] = v
    td["response_mask"] = ungroup(grouped, plan.loss_mask).to(saved.dtype)
    try:
        return trainer_update(batch)
    finally:
        td["response_mask"] = saved
        for k in fields:
            del td[k]


def _pick(metrics: Mapping[str, Any], name: str) -> list[float]:
    """Values of verl's metric ``name`` (any prefix: ``actor/pg_clipfrac``), flattened to floats."""
    for key, value in metrics.items():
        if key == name or key.endswith("/" + name):
            vals = value if isinstance(value, (list, tuple)) else [value]
            return [float(v) for v in vals]
    return []


def history_row(step: int, grouped: Grouped, shaped: Shaped, actor_metrics: Mapping[str, Any],
                time_teacher: float, step_time: float) -> dict[str, float]:
    """Our per-step metrics (the local engine's keys) from the grouped batch, the shaping output and verl's actor
    metrics (``pg_loss``, ``pg_clipfrac``, ``ppo_kl``, ``grad_norm``, ``lr``). ``time_gen`` is not visible from
    the hook (verl logs it as ``timing_s/gen``) and is None."""
    from rlrt.backends.local.rl import step_metrics
    from rlrt.backends.local.rollout import Rollouts

    ro = Rollouts(None, None, grouped.response_ids, grouped.response_mask, [t for g in grouped.texts for t in g])
    ent = grouped.old_entropy if grouped.old_entropy is not None else torch.zeros_like(grouped.old_logp)
    stats = {"clip_frac": _pick(actor_metrics, "pg_clipfrac"), "approx_kl": _pick(actor_metrics, "ppo_kl"),
             "loss": _pick(actor_metrics, "pg_loss"), "grad_norm": _pick(actor_metrics, "grad_norm"),
             "distill": _pick(actor_metrics, "rlrt_distill")}  # rlrt.backends.verl.loss.DISTILL_METRIC
    row = step_metrics(step, grouped.rewards.reshape(-1), grouped.G, ro, ent, shaped, stats)
    lr = _pick(actor_metrics, "lr")
    return {**row, "lr": lr[-1] if lr else None, "time_gen": None, "time_grade": None, "time_old_logp": None,
            "time_teacher": time_teacher, "time_update": None, "step_time": step_time}


def dump_step(folder: str, step: int, grouped: Grouped, shaped: Shaped, verl_advantages: Optional[torch.Tensor]
              ) -> str:
    """``<folder>/step_<step>.pt``: one step's rollouts and advantages in grouped order, for comparing this
    backend's method step with the local engine's on the same rollouts (``rlrt.dump_dir``; off by default, the CPU
    smoke sets it). ``verl_advantages`` = what verl's own estimator wrote before :func:`shape_batch` replaced it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step_{int(step)}.pt")
    mask = grouped.response_mask.float()
    torch.save({
        "step": int(step), "rewards": grouped.rewards.clone(), "texts": grouped.texts,
        "user_msgs": grouped.user_msgs, "problems": grouped.problems, "references": grouped.references,
        "response_ids": grouped.response_ids.clone(), "response_mask": grouped.response_mask.clone(),
        "old_logp": grouped.old_logp.clone(), "token_adv": (shaped.token_adv.float() * mask).clone(),
        "verl_advantages": (verl_advantages[grouped.order].float() * mask) if verl_advantages is not None else None,
    }, path)
    return path


def _trainer_class():
    """Defined lazily: importing verl's ray trainer pulls in Ray, which the CPU tests of this module avoid."""
    from verl.protocol import pad_dataproto_to_divisor, unpad_dataproto
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    class RLRTRayTrainer(RayPPOTrainer):
        """``RayPPOTrainer`` whose advantages come from ``shape_advantages`` (see the module docstring)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.rlrt_spec, self.rlrt_settings, self.rlrt_node = method_from_config(self.config)
            self.rlrt_objective = objective_name(self.rlrt_spec, self.rlrt_settings)
            self.rlrt_distils = get_objective(self.rlrt_objective).uses_teacher_logits
            self._rlrt_entropy: Optional[torch.Tensor] = None
            self._rlrt_t0 = time.perf_counter()
            log.info("rlrt: method %s, settings %s", self.rlrt_spec.name, self.rlrt_settings)

        def init_workers(self):
            super().init_workers()
            if self.rlrt_distils:  # SDPO / SRPO: the actor's loss is ours (rlrt.backends.verl.loss)
                from verl.utils.config import omega_conf_to_dataclass

                from rlrt.backends.verl.loss import WorkerLoss

                rollout = self.config.actor_rollout_ref.rollout
                self.actor_rollout_wg.set_loss_fn(WorkerLoss(
                    omega_conf_to_dataclass(self.config.actor_rollout_ref.actor), self.rlrt_objective,
                    self.rlrt_settings, float(rollout.temperature),
                    teacher_path=str(self.config.actor_rollout_ref.model.path)))

        def fit(self):
            self._rlrt_t0 = time.perf_counter()  # step 1's step_time starts here, not when the workers started
            return super().fit()

        def _save_checkpoint(self):
            """verl's save, then :func:`rlrt.backends.verl.train.prune_checkpoints`: the latest checkpoint whole,
            the ``rlrt.save_steps`` ones without optimizer state, nothing else (verl's own rotation is off)."""
            super()._save_checkpoint()
            from rlrt.backends.verl.train import prune_checkpoints

            removed = prune_checkpoints(str(self.config.trainer.default_local_dir),
                                        list(self.rlrt_node.get("save_steps") or []))
            if removed:
                log.info("rlrt: pruned %d checkpoint paths after step %d", len(removed), int(self.global_steps))

        def _compute_old_log_prob(self, batch):
            out, mfu = super()._compute_old_log_prob(batch)
            self._rlrt_entropy = out.batch["entropys"].detach().float().clone()  # fit pops it before the advantage
            return out, mfu

        def _teacher_log_prob(self, tdp):
            """θ_old's (log-probs, entropy) on a teacher-view DataProto, padded to the actor's data-parallel size."""
            dp = self._get_dp_size(self.actor_rollout_wg, "actor")
            padded, pad = pad_dataproto_to_divisor(tdp, dp)
            out, _ = RayPPOTrainer._compute_old_log_prob(self, padded)
            out = unpad_dataproto(out, pad)
            return out.batch["old_log_probs"], out.batch["entropys"]

        def _update_actor(self, batch):
            t0 = time.perf_counter()
            step = int(self.global_steps) - 1  # verl counts steps from 1, the method schedules from 0
            spec, settings = self.rlrt_spec, self.rlrt_settings
            P = batch.batch["prompts"].shape[-1]
            teachers: list[VerlTeacher] = []

            def make_teacher(grouped: Grouped) -> VerlTeacher:
                att = batch.batch["attention_mask"][:, P:][grouped.order]
                t = VerlTeacher(grouped, self.tokenizer, att, self._teacher_log_prob,
                                int(self.rlrt_node.get("max_reprompt_length") or 0),
                                needed=lambda has, want_ent: rows_needing_teacher(spec, settings, grouped.rewards,
                                                                                  has, want_ent),
                                meta_info={"temperature": batch.meta_info.get("temperature", 1.0)},
                                chat_template_kwargs=dict(self.config.data.get("apply_chat_template_kwargs") or {}))
                teachers.append(t)
                return t

            ent = self._rlrt_entropy
            if ent is not None and ent.shape != batch.batch["response_mask"].shape:
                ent = None  # not this batch's (never expected): GRPO+EB then raises inside shape_advantages
            verl_adv = batch.batch["advantages"].clone() if "advantages" in batch.batch.keys() else None
            grouped, shaped = shape_batch(spec, settings, batch, self.tokenizer, step, make_teacher, ent)
            t_teacher = time.perf_counter() - t0
            if self.rlrt_node.get("dump_dir"):
                dump_step(self.rlrt_node["dump_dir"], step, grouped, shaped, verl_adv)
            if self.rlrt_distils:
                with topk_processor(self):
                    out = distill_update(super()._update_actor, batch, grouped, teachers[0], shaped.plan)
            else:
                out = super()._update_actor(batch)
            metrics = out.meta_info.setdefault("metrics", {})
            row = history_row(step, grouped, shaped, metrics, t_teacher, time.perf_counter() - self._rlrt_t0)
            self._rlrt_t0 = time.perf_counter()
            metrics.update({f"rlrt/{k}": v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"})
            if teachers:
                metrics["rlrt/teacher_rows"] = float(teachers[0].n_scored)
                metrics["rlrt/teacher_truncated"] = float(teachers[0].n_truncated)
            path = self.rlrt_node.get("history_path")
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                with open(path, "a") as f:
                    f.write(json.dumps(row) + "\n")
            return out

    return RLRTRayTrainer


def point_runner_at(runner_cls: type, trainer_cls: type) -> int:
    """Make the ``run`` of ``runner_cls`` (and its bases) build ``trainer_cls`` where it says ``RayPPOTrainer``;
    returns how many ``run`` functions were pointed.

    Setting ``verl.trainer.main_ppo_v0.RayPPOTrainer`` alone is not enough: Ray ships the runner class to its
    actor with cloudpickle, which copies a class it cannot import by name -- ours is local, and so is its base
    ``TaskRunner.__ray_actor_class__`` (the module name ``TaskRunner`` is Ray's wrapper) -- together with its
    functions, each with a copied globals dict. verl's ``run`` then looked ``RayPPOTrainer`` up in that copy and
    trained plain verl GRPO, never calling our ``_update_actor`` (found by the CPU smoke: no history rows)."""
    import verl.trainer.main_ppo_v0 as v0

    v0.RayPPOTrainer = trainer_cls
    n = 0
    for klass in runner_cls.__mro__:
        code = getattr(klass.__dict__.get("run"), "__code__", None)
        if code is not None and "RayPPOTrainer" in code.co_names:
            fn = klass.__dict__["run"]
            fn.__globals__["RayPPOTrainer"] = trainer_cls
            n += 1
    return n


def _task_runner():
    import ray
    import verl.trainer.main_ppo_v0 as v0

    class _Runner(v0.TaskRunner.__ray_actor_class__):
        """verl's legacy TaskRunner with ``RayPPOTrainer`` pointed at :class:`RLRTRayTrainer` in this process."""

        def run(self, config):
            import rlrt.backends.verl.plugin  # noqa: F401 - registrations, also inside this actor

            if not point_runner_at(type(self), _trainer_class()):
                raise RuntimeError("verl's TaskRunner.run no longer builds RayPPOTrainer by name: rlrt's trainer "
                                   "would not be used (verl version?)")
            return super().run(config)

    return ray.remote(_Runner)


def main() -> None:
    """verl's ``main_ppo`` (validate, then ``run_ppo``) with :class:`RLRTTaskRunner`; Hydra overrides on argv."""
    import hydra
    from verl.trainer import main_ppo

    config_dir = os.path.join(os.path.dirname(main_ppo.__file__), "config")

    @hydra.main(config_path=config_dir, config_name="ppo_trainer", version_base=None)
    def _main(config):
        from verl.trainer.ppo.utils import need_critic, need_reference_policy
        from verl.utils.config import validate_config
        from verl.utils.device import auto_set_device

        auto_set_device(config)
        method_from_config(config)  # fail here, not inside Ray, on a missing or unsupported method
        if config.trainer.use_v1:
            raise ValueError("rlrt's verl trainer needs trainer.use_v1=false (the DataProto RayPPOTrainer)")
        validate_config(config=config, use_reference_policy=need_reference_policy(config),
                        use_critic=need_critic(config))
        main_ppo.run_ppo(config, task_runner_class=_task_runner())

    _main()


if __name__ == "__main__":
    main()
