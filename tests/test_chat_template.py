"""Per-backbone ``chat_template_kwargs`` (issue 31 §3: RLRT Table 1's "Qwen3-8B (Thinking off)").

A Qwen3-style chat template with the ``enable_thinking`` switch (Qwen3's own logic: thinking off appends an empty
``<think>\\n\\n</think>\\n\\n`` block to the generation prompt) is put on the pipeline's own tokenizer stand-in, saved
into a tiny model folder, and every path that renders a prompt for a backbone is driven with and without
``{enable_thinking: false}``: the local engine's student and teacher prompts (one RL step), the verl teacher views,
verl's rollout prompt builder fed with the composed ``data.apply_chat_template_kwargs``, vLLM evaluation's requests,
the local evaluator (one stage run), the analyses' sampling and pair prompts, and the job configs the workflow
builds (paper.yaml: Qwen3-8B's jobs carry the switch, every other backbone's and the embedded default's do not).
The embedded default's prompt is pinned unchanged.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlrt.tasks.prompts import CHAT_TEMPLATE, chat_prompt, check_template_kwargs, user_message

ROOT = Path(__file__).resolve().parents[1]

# Qwen3's switch as its template has it (the rest trimmed to ChatML): thinking off = an empty think block.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
OFF = {"enable_thinking": False}
ASSISTANT = "<|im_start|>assistant\n"
THINK_OFF = ASSISTANT + "<think>\n\n</think>\n\n"
ROWS = [{"id": "p0", "question": "What is 3 + 4?", "answer": "7", "solution": ""},
        {"id": "p1", "question": "What is 10 + 5?", "answer": "15", "solution": ""}]


def thinking_off(text: str) -> bool:
    assert text.endswith(ASSISTANT) or text.endswith(THINK_OFF), text[-60:]
    return text.endswith(THINK_OFF)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Qwen3 model folder whose tokenizer (the pipeline's stand-in) carries the Qwen3-style template."""
    from rlrt.backends.local.model import build_model, save_checkpoint
    from rlrt.tasks.tokenizer import train_tokenizer

    tok = train_tokenizer([user_message(r["question"]) + " \\boxed{7} <think> </think>" for r in ROWS] * 20,
                          vocab_size=300)
    tok.chat_template = QWEN3_TEMPLATE
    torch.manual_seed(0)
    model = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512}, tok)
    d = tmp_path_factory.mktemp("qwen3_like") / "model"
    save_checkpoint(model, tok, d)
    return d


@pytest.fixture(scope="module")
def loaded(model_dir):
    from rlrt.backends.local.model import load_checkpoint

    model, tok = load_checkpoint(model_dir)
    assert tok.chat_template == QWEN3_TEMPLATE  # the folder carries it
    return model, tok


def decode(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)


def test_chat_prompt_switch_and_refused_keys(loaded):
    _, tok = loaded
    msg = user_message(ROWS[0]["question"])
    assert not thinking_off(chat_prompt(tok, msg))  # Qwen3's default: thinking on
    assert chat_prompt(tok, msg, {}) == chat_prompt(tok, msg, None) == chat_prompt(tok, msg)
    assert thinking_off(chat_prompt(tok, msg, OFF))
    assert chat_prompt(tok, msg, OFF) == chat_prompt(tok, msg) + "<think>\n\n</think>\n\n"
    # a key the template never reads would change nothing, silently: refused, naming it
    with pytest.raises(ValueError, match=r"\['enable_thinkng'\] not read by the model's chat template"):
        chat_prompt(tok, msg, {"enable_thinkng": False})
    with pytest.raises(ValueError, match="enable_thinking"):
        check_template_kwargs(CHAT_TEMPLATE, OFF)


def test_the_local_default_prompt_is_unchanged():
    """The embedded default sets no kwargs; its stand-in template renders exactly what it rendered before."""
    from rlrt.tasks.tokenizer import train_tokenizer

    tok = train_tokenizer(["What is 1 + 2? " + user_message("x")] * 20, vocab_size=300)
    expect = "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    assert chat_prompt(tok, "What is 1 + 2?") == chat_prompt(tok, "What is 1 + 2?", None) == expect


@pytest.mark.parametrize("kind,context", [("sibling", "3 + 4 = 7. \\boxed{7}"), ("reference", "3 + 4 = 7."),
                                          ("answer", "7")])
def test_teacher_views_render_with_the_backbone_kwargs(loaded, kind, context):
    """The verl teacher view (ids and the ``VerlTeacher`` the trainer builds), the local engine's teacher inputs
    and the analyses' teacher / student prompts: thinking off when configured, on when not; the same ids on both
    engines."""
    pytest.importorskip("verl")
    from rlrt.analysis.views import student_prompt, teacher_prompt
    from rlrt.backends.local.rl import teacher_inputs
    from rlrt.backends.verl.teacher_view import VerlTeacher, teacher_prompt_ids

    _, tok = loaded
    msg = user_message(ROWS[0]["question"])
    for kw, off in ((OFF, True), (None, False)):
        ids = teacher_prompt_ids(tok, msg, context, kind, kw)
        text = decode(tok, ids)
        assert thinking_off(text) is off and context in text
        local_ids, local_mask, _ = teacher_inputs(tok, [msg], [[context, None]], kind, 2, kw)
        assert local_ids[0][local_mask[0].bool()].tolist() == ids
        assert thinking_off(decode(tok, local_ids[1][local_mask[1].bool()])) is off  # the bare prompt too
        teacher = VerlTeacher(SimpleNamespace(user_msgs=[msg], n=2), tok, None, None, 10_000, chat_template_kwargs=kw)
        assert teacher.inputs([[context, None]], kind, [0, 1])[0] == ids
        assert teacher_prompt(tok, ROWS[0]["question"], context, kind, kw) == ids
        assert thinking_off(decode(tok, student_prompt(tok, ROWS[0]["question"], kw))) is off


def _paper_job(backbone: str) -> dict:
    """The rl stage's --cfg for ``rlsd`` on ``backbone`` of paper.yaml, as rules/common.smk rl_cfg builds it."""
    from rlrt.config import load_overlay
    from rlrt.plan import chat_template_kwargs, run_config

    cfg = load_overlay(ROOT / "config" / "paper.yaml")
    kw = chat_template_kwargs(cfg, backbone)
    return {"rl": cfg["rl"], "method": "rlsd", "run": "rlsd", "method_cfg": run_config(cfg, backbone, "rlsd"),
            "backbone": {"name": backbone, "kind": cfg["backbones"][backbone]["kind"],
                         **({"chat_template_kwargs": kw} if kw else {})},
            "max_response_length": cfg["backbones"][backbone]["max_response_length"], "seed": cfg["seed"],
            "grader_workers": 1, "tracking": None, "backend": "verl", "verl": copy.deepcopy(cfg["verl"]), "gpus": 2}


@pytest.mark.parametrize("backbone,off", [("Qwen3-8B", True), ("Qwen3-4B-Base", False)])
def test_verl_rollout_prompts_take_the_composed_kwargs(loaded, backbone, off):
    """paper.yaml -> hydra overrides -> verl 0.9.1's own ppo_trainer.yaml (Hydra compose) -> the value verl's agent
    loop hands its Continuous Token builder (``data.apply_chat_template_kwargs``, read as ``AgentLoopBase`` does),
    which renders the rollout prompt: Qwen3-8B's is thinking off, Qwen3-4B-Base's untouched."""
    pytest.importorskip("verl")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    import verl
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from rlrt.backends.verl.overrides import hydra_overrides

    _, tok = loaded
    over = hydra_overrides(_paper_job(backbone), model_path="/m", train_file="/d/train.parquet",
                           val_file="/d/train.parquet", ckpt_dir="/c", n_gpus=2, experiment_name="x", n_cpus=8)
    with initialize_config_dir(config_dir=str(Path(verl.__file__).parent / "trainer" / "config"), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=over)
    kwargs = cfg.data.get("apply_chat_template_kwargs", {})  # AgentLoopBase.__init__ (verl 0.9.1)
    assert OmegaConf.to_container(kwargs) == (OFF if off else {})
    builder = create_continuous_token_builder(tok, hf_model_type="qwen3",
                                              chat_template_kwargs=OmegaConf.to_container(kwargs))
    msg = user_message(ROWS[1]["question"])
    ids = builder.build_initial_tokens([{"role": "user", "content": msg}])
    assert thinking_off(decode(tok, ids)) is off
    # the trainer's teacher views read the same node (rlrt.backends.verl.trainer)
    assert ids == tok(chat_prompt(tok, msg, dict(cfg.data.get("apply_chat_template_kwargs") or {})),
                      add_special_tokens=False)["input_ids"]


def test_vllm_evaluation_requests(loaded):
    from rlrt.backends.verl.evaluate import build_requests

    _, tok = loaded
    assert all(thinking_off(p) for p in build_requests(ROWS, tok, {"chat_template_kwargs": OFF}))
    assert not any(thinking_off(p) for p in build_requests(ROWS, tok, {}))


def test_local_evaluation_stage(model_dir, tmp_path):
    """``rlrt.stages.evaluate`` on the local engine: the example prompt of its JSON is thinking off with the
    backbone's kwargs in the job config, on without them."""
    from rlrt.io import write_problems
    from rlrt.stages import evaluate as stage

    data = tmp_path / "aime24.parquet"
    write_problems(data, [{**r, "explanation": "", "source": "t"} for r in ROWS])
    cfg = {"n": 1, "ks": [1], "temperature": 0.7, "top_p": 0.8, "top_k": 20, "max_problems": None, "batch_size": 4,
           "backbone": "Qwen3-8B", "method": "base", "seed": 1, "max_new_tokens": 3, "grader_workers": 1,
           "tracking": None, "backend": "local", "gpus": 0}
    for kw, off in ((OFF, True), (None, False)):
        out = tmp_path / f"eval_{off}.json"
        job = {**cfg, **({"chat_template_kwargs": kw} if kw else {})}
        stage.main(["--cfg", json.dumps(job), "--model", str(model_dir), "--data", str(data), "--out", str(out)])
        assert thinking_off(json.loads(out.read_text())["splits"]["aime24"]["example"]["prompt"]) is off


def test_local_rl_step_renders_student_and_teacher_prompts_with_the_kwargs(loaded, monkeypatch):
    """One RL step of RLSD (answer context) on the local engine: the sampled prompts and the teacher's prompts are
    thinking off with ``RLConfig.chat_template_kwargs``, and the teacher is shown the gold answer."""
    from rlrt.backends.local import rl as engine
    from rlrt.methods.registry import get_method

    model, tok = loaded
    seen: dict[str, list] = {"student": [], "teacher": []}
    real_sample, real_inputs = engine.sample, engine.teacher_inputs

    def spy_sample(m, t, prompts, *a, **k):
        seen["student"] += list(prompts)
        return real_sample(m, t, prompts, *a, **k)

    def spy_inputs(t, user_msgs, contexts, kind, n, template_kwargs=None):
        ids, mask, has = real_inputs(t, user_msgs, contexts, kind, n, template_kwargs)
        seen["teacher"] += [decode(t, ids[k][mask[k].bool()]) for k in range(ids.shape[0])]
        return ids, mask, has

    monkeypatch.setattr(engine, "sample", spy_sample)
    monkeypatch.setattr(engine, "teacher_inputs", spy_inputs)
    spec = get_method("rlsd")
    settings = spec.make_settings({"context": "answer"})
    for kw, off in ((OFF, True), (None, False)):
        seen["student"].clear()
        seen["teacher"].clear()
        cfg = engine.RLConfig(steps=1, question_batch=2, mini_batch=2, n_rollouts=2, max_response_length=3,
                              micro_batch=4, chat_template_kwargs=kw)
        opt = torch.optim.AdamW(model.parameters(), lr=0.0)
        engine.rl_step(model, tok, opt, spec, settings, cfg, ROWS, 0, lambda texts, answers: [1.0, 0.0] * 2)
        assert len(seen["student"]) == 2 and all(thinking_off(p) is off for p in seen["student"])
        assert len(seen["teacher"]) == 4 and all(thinking_off(p) is off for p in seen["teacher"])
        assert "Here is a reference solution:\n7\n\n" in seen["teacher"][0]
        assert "Here is a reference solution:\n15\n\n" in seen["teacher"][2]


def test_analysis_sampling(loaded):
    from rlrt.analysis.views import sample_groups

    model, tok = loaded
    sampling = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
    for kw, off in ((OFF, True), (None, False)):
        groups = sample_groups(model, tok, ROWS, 1, 2, sampling, 0, lambda t, a: [0.0] * len(t), template_kwargs=kw)
        ro = groups.rollouts
        assert all(thinking_off(decode(tok, ro.prompt_ids[k][ro.prompt_mask[k].bool()])) is off
                   for k in range(len(ROWS)))


def test_config_key():
    """paper.yaml turns Qwen3-8B's thinking off and nothing else; a stand-in (rlrt's own template, no switch) or an
    RLT backbone (whose prompts do not pass the variables) with kwargs, or a value of the wrong type, is refused
    naming the key."""
    from rlrt.config import ConfigError, load, load_overlay, validate
    from rlrt.plan import chat_template_kwargs

    paper = load_overlay(ROOT / "config" / "paper.yaml")
    assert {b: chat_template_kwargs(paper, b) for b in paper["backbones"] if chat_template_kwargs(paper, b)} == \
        {"Qwen3-8B": OFF}
    default = load(ROOT / "config" / "config.yaml")
    assert not any(chat_template_kwargs(default, b) for b in default["backbones"])
    stand_in = next(b for b, v in default["backbones"].items() if v["mode"] == "pretrain")
    cfg = copy.deepcopy(default)
    cfg["backbones"][stand_in]["chat_template_kwargs"] = dict(OFF)
    with pytest.raises(ConfigError, match=rf"^config key 'backbones\.{stand_in}\.chat_template_kwargs': "
                                          r"\['enable_thinking'\] not read by a stand-in's chat template"):
        validate(cfg)
    cfg = copy.deepcopy(paper)
    cfg["backbones"]["Qwen2.5-7B-Instruct"]["chat_template_kwargs"] = dict(OFF)
    with pytest.raises(ConfigError, match=r"^config key 'backbones\.Qwen2\.5-7B-Instruct\.chat_template_kwargs': "
                                          r"'Qwen2\.5-7B-Instruct' is an RLT backbone"):
        validate(cfg)
    cfg = copy.deepcopy(paper)
    cfg["backbones"]["Qwen3-8B"]["chat_template_kwargs"] = {"enable_thinking": [False]}
    with pytest.raises(ConfigError, match=r"^config key 'backbones\.Qwen3-8B\.chat_template_kwargs\.enable_thinking'"):
        validate(cfg)


def test_job_configs_carry_the_kwargs_of_their_backbone_only(tmp_path):
    """`snakemake -n -p` on paper.yaml: the rl, evaluate and analysis jobs of Qwen3-8B carry
    ``{enable_thinking: false}`` (rl: under ``backbone``), no other backbone's job does; the embedded default's
    jobs carry no such key at all (their params, and so their outputs, stay as they were)."""
    def shell_cfgs(config: str) -> list[tuple[str, dict]]:
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
               str(tmp_path / Path(config).stem), "-n", "-p", "--cores", "32", "--configfile", config]
        env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = []
        for ln in (proc.stdout + proc.stderr).splitlines():
            if not re.search(r"-m rlrt\.stages\.\w+ .*--cfg ", ln):
                continue
            words = shlex.split(ln)  # the rules quote every value (:q), so read the line as the shell does
            out.append((words[words.index("-m") + 1], json.loads(words[words.index("--cfg") + 1])))
        return out

    def backbone(stage: str, c: dict) -> str | None:
        b = c.get("backbone")
        return b.get("name") if isinstance(b, dict) else b

    def kwargs(c: dict):
        return (c.get("backbone") if isinstance(c.get("backbone"), dict) else c).get("chat_template_kwargs")

    paper = shell_cfgs(str(ROOT / "config" / "paper.yaml"))
    q8 = [(s, c) for s, c in paper if backbone(s, c) == "Qwen3-8B"]
    stages = {s for s, _ in q8}
    assert {"rlrt.stages.rl", "rlrt.stages.evaluate", "rlrt.stages.analysis_heatmaps",
            "rlrt.stages.analysis_markers", "rlrt.stages.analysis_reflection"} <= stages, stages
    assert all(kwargs(c) == OFF for s, c in q8 if s != "rlrt.stages.backbone"), \
        [s for s, c in q8 if kwargs(c) != OFF]
    assert not any(kwargs(c) for s, c in paper if backbone(s, c) not in ("Qwen3-8B", None)
                   and s != "rlrt.stages.backbone")
    default = shell_cfgs(str(ROOT / "config" / "config.yaml"))
    assert default and not any("chat_template_kwargs" in json.dumps(c) for _, c in default)
