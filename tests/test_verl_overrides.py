"""The verl overrides composed with verl 0.9.1's OWN shipped ppo_trainer.yaml (Hydra compose on CPU).

What this proves: every override names a key verl's config has (a plain override of a missing key is refused by
Hydra, checked below with a misspelled key), the composed values are the job config's (paper settings for GRPO,
RLRT, SDPO with lr x10, SRPO x5, GRPO+EB's loss variant, the embedded default's fixed micro-batches), verl's own
``validate_config`` accepts the result, string values survive Hydra's parser unchanged, and bench/gpu_smoke.py's
dry run produces overrides that compose and validate too.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("verl")
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.errors import ConfigCompositionException  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rlrt.backends.verl.overrides import LOSS_MODES, hydra_overrides, hydra_value  # noqa: E402
from rlrt.config import load, load_overlay  # noqa: E402
from rlrt.plan import run_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def verl_config_dir() -> str:
    import verl

    d = Path(verl.__file__).parent / "trainer" / "config"
    assert (d / "ppo_trainer.yaml").is_file()
    return str(d)


def compose_verl(overrides: list[str]):
    with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def validate(cfg) -> None:
    """verl's own config checks (the ones main_ppo runs before starting Ray)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    validate_config(cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    assert not need_critic(cfg) and not need_reference_policy(cfg)
    omega_conf_to_dataclass(cfg.algorithm)  # AlgoConfig incl. rollout_correction


@pytest.fixture(scope="module")
def paper():
    return load_overlay(ROOT / "config" / "paper.yaml")


def job(cfg, backbone: str, run: str, gpus: int = 2) -> dict:
    """The rl stage's --cfg as rules/common.smk rl_cfg builds it."""
    return {"rl": cfg["rl"], "method": run.split("@")[0], "run": run, "method_cfg": run_config(cfg, backbone, run),
            "backbone": {"name": backbone, "kind": cfg["backbones"][backbone]["kind"]},
            "max_response_length": cfg["backbones"][backbone]["max_response_length"], "seed": cfg["seed"],
            "grader_workers": 3, "tracking": {"uri": "file:///x/mlruns", "experiment": "rlrt-paper"},
            "backend": "verl", "verl": copy.deepcopy(cfg["verl"]), "gpus": gpus}


def overrides(j: dict, n_gpus: int = 2) -> list[str]:
    return hydra_overrides(j, model_path="/models/Qwen3-8B", train_file="/data/train.parquet",
                           val_file="/data/aime24.parquet", ckpt_dir="/scratch/ckpt/rlrt", n_gpus=n_gpus,
                           experiment_name="Qwen3-8B/rlrt")


def test_hydra_values_survive_hydra_parser():
    values = {"comma": "a,b", "quote": "it's", "slash": "/p/a b/c.parquet", "interp": "${oc.env:HOME}",
              "float_str": "1.0", "null_str": "null", "bs_mid": "a\\b", "bs_end": "end\\", "bs_quote": "x\\'y",
              "brackets": "[x]", "eq": "k=v", "small": 1e-06, "neg": -3, "none": None, "yes": True,
              "lst": ["console", "mlflow"], "nested": {"a": 1, "b": "c,d"}}
    cfg = compose_verl([f"++rlrt.{k}={hydra_value(v)}" for k, v in values.items()])
    got = OmegaConf.to_container(cfg.rlrt, resolve=True)
    assert got == values
    assert isinstance(got["small"], float) and isinstance(got["float_str"], str)


def test_misspelled_key_is_refused(paper):
    ok = overrides(job(paper, "Qwen3-8B", "rlrt"))
    compose_verl(ok)  # the real overrides compose
    with pytest.raises(ConfigCompositionException, match="lrr"):
        compose_verl(ok + ["actor_rollout_ref.actor.optim.lrr=1e-06"])
    j = job(paper, "Qwen3-8B", "rlrt")
    j["verl"]["extra_overrides"] = ["trainer.n_gpus_per_nodes=4"]  # a typo in site tuning fails the same way
    assert overrides(j)[-1] == "trainer.n_gpus_per_nodes=4"
    with pytest.raises(ConfigCompositionException):
        compose_verl(overrides(j))
    j["verl"]["extra_overrides"] = ["actor_rollout_ref.rollout.gpu_memory_utilization=0.85"]  # and wins last
    assert compose_verl(overrides(j)).actor_rollout_ref.rollout.gpu_memory_utilization == 0.85


def test_paper_rlrt_thinking(paper):
    c = compose_verl(overrides(job(paper, "Qwen3-8B", "rlrt")))
    a, r = c.actor_rollout_ref.actor, c.actor_rollout_ref.rollout
    # RLRT Table 5
    assert c.data.train_batch_size == 256 and a.ppo_mini_batch_size == 128 and r.n == 8
    assert c.data.max_prompt_length == 2048 and c.data.max_response_length == 20480
    assert r.temperature == 1.0 and r.name == "vllm"
    assert a.optim.lr == 1e-06 and a.optim.lr_warmup_steps == 10 and a.optim.weight_decay == 0.01
    assert a.optim.clip_grad == 1.0 and a.grad_clip == 1.0 and a.optim.lr_scheduler_type == "constant"
    assert (a.clip_ratio_low, a.clip_ratio_high, a.clip_ratio_c) == (0.2, 0.28, 3.0)
    assert a.loss_agg_mode == "token-mean" and a.policy_loss.loss_mode == "vanilla" and a.entropy_coeff == 0.0
    assert a.use_kl_loss is False and a.kl_loss_coef == 0.0
    assert c.algorithm.use_kl_in_reward is False and c.algorithm.kl_ctrl.kl_coef == 0.0
    assert c.algorithm.adv_estimator == "grpo" and c.algorithm.norm_adv_by_std_in_grpo is True
    assert c.algorithm.rollout_correction.rollout_is == "token"
    assert c.algorithm.rollout_correction.rollout_is_threshold == 2.0
    assert a.ppo_epochs == 1  # one PPO epoch per step, as the local engine
    # the verl block
    assert a.use_dynamic_bsz is True and a.ppo_max_token_len_per_gpu == 24576
    # the log-prob passes score teacher views too: one view, 22,528 + 20,480 (rlrt.backends.verl.memory)
    assert c.actor_rollout_ref.ref.log_prob_max_token_len_per_gpu == 43008 == r.log_prob_max_token_len_per_gpu
    assert r.tensor_model_parallel_size == 1 and r.gpu_memory_utilization == 0.6
    assert a.fsdp_config.param_offload is False and a.fsdp_config.optimizer_offload is False
    # trainer
    t = c.trainer
    assert t.use_v1 is False and t.nnodes == 1 and t.n_gpus_per_node == 2 and t.total_training_steps == 200
    assert t.save_freq == 10 and t.default_local_dir == "/scratch/ckpt/rlrt" and t.resume_mode == "auto"
    assert list(t.logger) == ["console", "mlflow"] and t.project_name == "rlrt-paper"
    assert t.experiment_name == "Qwen3-8B/rlrt" and t.val_before_train is False
    assert c.data.train_files == "/data/train.parquet" and c.actor_rollout_ref.model.path == "/models/Qwen3-8B"
    rf = Path(c.reward.custom_reward_function.path)
    assert rf == ROOT / "src" / "rlrt" / "backends" / "verl" / "reward.py"
    assert c.reward.custom_reward_function.name == "compute_score"
    # what the trainer reads: thinking-model overrides of RLRT (eps_w 0.2, lambda decay 30)
    assert c.rlrt.method == "rlrt" and c.rlrt.objective == "pg" and c.rlrt.teacher == "self"
    assert c.rlrt.settings.eps_w == 0.2 and c.rlrt.settings.lambda_decay_steps == 30
    assert c.rlrt.settings.lambda_init == 0.5 and c.rlrt.settings.lr is None
    assert c.rlrt.max_reprompt_length == 22528 and list(c.rlrt.save_steps) == [50, 100, 150]
    assert c.rlrt.backbone_kind == "thinking" and c.rlrt.grader_workers == 3
    validate(c)


def test_grpo_base_has_no_std_normalisation(paper):
    c = compose_verl(overrides(job(paper, "Qwen3-4B-Base", "grpo")))
    assert c.algorithm.norm_adv_by_std_in_grpo is False
    assert c.actor_rollout_ref.actor.optim.lr == 1e-06 and c.rlrt.method == "grpo" and c.rlrt.teacher == "none"
    validate(c)


@pytest.mark.parametrize("run,lr,objective", [("sdpo", 1e-05, "sdpo"), ("srpo@beta=1.0", 5e-06, "srpo")])
def test_sdpo_srpo_learning_rate_and_loss(paper, run, lr, objective):
    c = compose_verl(overrides(job(paper, "Qwen3-4B-Instruct-2507", run)))
    assert c.actor_rollout_ref.actor.optim.lr == pytest.approx(lr, rel=1e-12)
    assert c.actor_rollout_ref.actor.policy_loss.loss_mode == LOSS_MODES[objective] == f"rlrt_{objective}"
    assert c.rlrt.objective == objective and c.rlrt.teacher == "frozen" and c.rlrt.run == run
    assert c.rlrt.settings.topk == 100 and c.rlrt.settings.ema_rate == 0.0
    assert c.algorithm.norm_adv_by_std_in_grpo is False
    if objective == "srpo":
        assert c.rlrt.settings.beta == 1.0
    validate(c)


def test_grpo_eb_loss_variant_sets_entropy_coeff(paper):
    j = job(paper, "Qwen3-8B-Base", "grpo_eb")
    assert compose_verl(overrides(j)).actor_rollout_ref.actor.entropy_coeff == 0.0  # default: advantage variant
    j["method_cfg"] = {"variant": "loss", "entropy_coeff": 0.003}
    c = compose_verl(overrides(j))
    assert c.actor_rollout_ref.actor.entropy_coeff == 0.003 and c.rlrt.objective == "pg_entropy"
    assert c.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"


def test_fixed_micro_batches_and_no_tracking():
    """The embedded default's rl block (question batch 16, mini-batch 4, micro-batch 16, lr 1.5e-5) with
    use_dynamic_bsz off and IS off: verl then needs per-GPU micro-batches, taken from rl.micro_batch."""
    cfg = load(ROOT / "config" / "config.yaml")
    paper_verl = load_overlay(ROOT / "config" / "paper.yaml")["verl"]
    j = job({**cfg, "verl": paper_verl}, "S-base", "rlrt", gpus=1)
    j["verl"].update(use_dynamic_bsz=False, rollout_is_threshold=None, save_freq=None)
    j["tracking"] = None
    c = compose_verl(overrides(j, n_gpus=1))
    a = c.actor_rollout_ref.actor
    assert cfg["rl"]["micro_batch"] == 16
    assert a.use_dynamic_bsz is False and a.ppo_micro_batch_size_per_gpu == 16
    assert c.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu == 16
    assert c.data.train_batch_size == 16 and a.ppo_mini_batch_size == 4 and a.optim.lr == 1.5e-05
    assert c.actor_rollout_ref.rollout.n == 8 and c.data.max_response_length == cfg["backbones"]["S-base"][
        "max_response_length"]
    assert c.algorithm.rollout_correction.rollout_is is None
    assert c.trainer.save_freq == 10  # falls back to rl.resume_every
    assert list(c.trainer.logger) == ["console"] and c.trainer.project_name == "rlrt"
    validate(c)


def test_bad_job_configs_fail_clearly(paper):
    j = job(paper, "Qwen3-8B", "rlrt")
    with pytest.raises(ValueError, match="n_gpus"):
        overrides(j, n_gpus=0)
    j2 = copy.deepcopy(j)
    j2["rl"] = {**j2["rl"], "clip_ratio_c": None}
    with pytest.raises(ValueError, match="clip_ratio_c"):
        overrides(j2)
    with pytest.raises(ValueError, match="verl"):
        overrides({**j, "verl": None})
    with pytest.raises(KeyError, match="method_cfg.eps_ww"):
        overrides({**j, "method_cfg": {"eps_ww": 0.5}})
    j3 = copy.deepcopy(j)
    del j3["verl"]["max_prompt_length"]
    with pytest.raises(KeyError, match="verl.max_prompt_length"):
        overrides(j3)
    j4 = copy.deepcopy(j)
    j4["rl"] = {**j4["rl"], "save_steps": [50, 105, 150, 200]}  # 105: never saved with save_freq 10; 200 = last
    with pytest.raises(ValueError, match=r"rl.save_steps \[105\] are not multiples of verl.save_freq = 10"):
        overrides(j4)


def test_save_freq_falls_back_to_the_last_step(paper):
    """No save_freq and no resume_every: verl still saves the last step (the final model is merged from it)."""
    j = job(paper, "Qwen3-8B", "rlrt")
    j["verl"]["save_freq"] = None
    j["rl"] = {**j["rl"], "resume_every": None, "save_steps": []}
    assert "trainer.save_freq=200" in overrides(j)


def _smoke_module():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "bench" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_smoke_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RLRT_SMOKE_MODEL", raising=False)
    smoke = _smoke_module()
    assert smoke.main(["--dry-run", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("python -m rlrt.backends.verl.trainer ")
    assert out[-1] == "eval requests: 8 prompts x n=16 samples = 128 responses (max_tokens 1024)"
    ovr = out[1:-1]
    c = compose_verl(ovr)
    assert c.trainer.total_training_steps == 2 and c.trainer.n_gpus_per_node == 1
    assert c.data.train_batch_size == 8 and c.actor_rollout_ref.rollout.n == 4
    assert c.actor_rollout_ref.rollout.gpu_memory_utilization == 0.4
    assert c.data.train_files == str(tmp_path / "data" / "train.parquet") and c.rlrt.method == "rlrt"
    validate(c)
    from rlrt.io import read_problems

    train = read_problems(tmp_path / "data" / "train.parquet")
    test = read_problems(tmp_path / "data" / "smoke_test.parquet")
    assert len(train) == 32 and len(test) == 8
    a, b = (int(x) for x in test[0]["question"].removeprefix("What is ").removesuffix("?").split(" + "))
    assert test[0]["answer"] == str(a + b)


def test_gpu_smoke_dry_run_of_the_worker_side_loss(tmp_path, capsys, monkeypatch):
    """``--method sdpo``: the smoke run takes SDPO's path (its loss-mode name, lr x 10, its Table 5 settings)."""
    monkeypatch.delenv("RLRT_SMOKE_MODEL", raising=False)
    smoke = _smoke_module()
    assert smoke.main(["--dry-run", "--method", "sdpo", "--work", str(tmp_path)]) == 0
    c = compose_verl(capsys.readouterr().out.splitlines()[1:-1])
    assert c.rlrt.method == "sdpo" and c.rlrt.settings.topk == 100 and c.rlrt.settings.alpha == 0.5
    assert c.actor_rollout_ref.actor.policy_loss.loss_mode == "rlrt_sdpo"
    assert c.actor_rollout_ref.actor.optim.lr == pytest.approx(10 * 1e-6)
    validate(c)


def test_gpu_smoke_without_model_exits_clearly(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RLRT_SMOKE_MODEL", raising=False)
    smoke = _smoke_module()
    with pytest.raises(SystemExit) as e:
        smoke.main(["--work", str(tmp_path)])
    assert e.value.code == 2 and "RLRT_SMOKE_MODEL" in capsys.readouterr().err
    monkeypatch.setenv("RLRT_SMOKE_MODEL", str(tmp_path / "nope"))
    with pytest.raises(SystemExit) as e:
        smoke.main(["--work", str(tmp_path)])
    assert e.value.code == 2 and "no config.json" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "data")  # nothing written before the preconditions pass


def test_ray_gets_the_slurm_allocation_not_the_node(paper, monkeypatch):
    """Under SLURM (a fake job env here) Ray is started with the job's CPUs and the rule's GPUs."""
    from rlrt.backends.verl.overrides import allocated_cpus

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "32")
    assert allocated_cpus() == 32
    c = compose_verl(overrides(job(paper, "Qwen3-8B", "rlrt"), n_gpus=2))
    assert c.ray_kwargs.ray_init.num_cpus == 32 and c.ray_kwargs.ray_init.num_gpus == 2
    validate(c)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")  # not under SLURM: the CPUs this process is bound to
    assert allocated_cpus() == len(os.sched_getaffinity(0))
    assert allocated_cpus({"SLURM_CPUS_PER_TASK": "6"}) == 6
    with pytest.raises(ValueError, match="SLURM_CPUS_PER_TASK='x'"):
        allocated_cpus({"SLURM_CPUS_PER_TASK": "x"})
    explicit = hydra_overrides(job(paper, "Qwen3-8B", "rlrt"), model_path="/m", train_file="/t", val_file="/t",
                               ckpt_dir="/c", n_gpus=1, experiment_name="e", n_cpus=5)
    assert "ray_kwargs.ray_init.num_cpus=5" in explicit and "++ray_kwargs.ray_init.num_gpus=1" in explicit


def test_rollout_context_attention_and_checkpoint_rotation(paper):
    """The rollout's max_model_len is the run's own prompt + response (not the model's 262k for the 2507
    instruct model), the attention implementation is the verl block's, and verl's own checkpoint rotation stays
    off (the trainer prunes, keeping rl.save_steps)."""
    j = job(paper, "Qwen3-4B-Instruct-2507", "rlrt")
    c = compose_verl(overrides(j))
    assert c.actor_rollout_ref.rollout.max_model_len == 2048 + 20480
    assert c.actor_rollout_ref.model.override_config.attn_implementation == "flash_attention_2"  # default
    assert c.trainer.max_actor_ckpt_to_keep is None and c.trainer.max_critic_ckpt_to_keep is None
    validate(c)
    j["verl"]["attn_implementation"] = "sdpa"
    c = compose_verl(overrides(j))
    assert c.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    j["verl"]["attn_implementation"] = "flash_attention_3"
    with pytest.raises(ValueError, match="verl.attn_implementation: 'flash_attention_3'"):
        overrides(j)


def test_attn_implementation_is_validated_by_the_schema(tmp_path):
    from rlrt.config import ConfigError, load

    for value, ok in (("sdpa", True), ("eager", True), ("flash", False)):
        overlay = tmp_path / f"{value}.yaml"
        overlay.write_text(f"verl: {{attn_implementation: {value}}}\n")
        if ok:
            assert load(ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml", overlay)["verl"][
                "attn_implementation"] == value
        else:
            with pytest.raises(ConfigError, match="verl.attn_implementation"):
                load(ROOT / "config" / "config.yaml", ROOT / "config" / "paper.yaml", overlay)


def test_hydra_run_dir_is_the_jobs_own_work_folder(tmp_path):
    """Hydra would write outputs/<date>/<time>/ under the job's working directory (the repository root for a
    Snakemake job); every verl entry point we start gets hydra.run.dir inside its work folder instead, parsed back
    by Hydra's own override parser to exactly that path (quotes, spaces and '$' included)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rlrt.backends.verl.overrides import hydra_run_dir

    work = tmp_path / "my run's $dir"
    (o,) = OverridesParser.create().parse_overrides([hydra_run_dir(work)])
    assert o.key_or_group == "hydra.run.dir" and o.value() == str(work / "hydra")
