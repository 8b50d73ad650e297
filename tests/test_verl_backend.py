"""The verl backend's trainer glue on CPU, with verl 0.9.1's own DataProto and padding helpers.

* every registered method: the advantages written into a (shuffled) verl batch equal the local engine's
  ``shape_advantages`` output to 1e-6, with the same fixed teacher log-probs on both paths;
* the teacher-view prompt ids equal the local engine's ``teacher_inputs`` on a Qwen-style byte-level tokenizer,
  responses are reused unchanged, and verl's own no-padding round trip slices the response part correctly;
* ``compute_score`` on real-looking answers (also from a thread, as verl's reward loop calls it);
* the pure parts of the loss, history and parquet conversion.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

pytest.importorskip("verl")

from verl import DataProto  # noqa: E402

from rlrt.backends.local.rl import teacher_inputs  # noqa: E402
from rlrt.backends.verl import batch as vb  # noqa: E402
from rlrt.backends.verl.teacher_view import VerlTeacher, build_teacher_batch, cap_middle, rows_needing_teacher  # noqa: E402
from rlrt.methods.registry import METHODS, get_method  # noqa: E402
from rlrt.methods.shaping import TeacherScores, shape_advantages  # noqa: E402
from rlrt.tasks.prompts import user_message  # noqa: E402
from rlrt.teacher import build_contexts  # noqa: E402

# Qwen3-style ChatML with a thinking prefix on the generation prompt (as Qwen3 with enable_thinking=False)
QWEN3_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
)


@pytest.fixture(scope="module")
def tok():
    """A byte-level BPE without merges (every byte one token) + ChatML specials; no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.add_tokens(["<think>", "</think>"])
    fast.chat_template = QWEN3_TEMPLATE
    return fast


QUESTIONS = ["What is 2+3?", "Compute 4*5.", "What is 7-1?"]
ANSWERS = ["5", "20", "6"]
# (G, n) responses; rewards 1 where the boxed answer is right. Group 0 mixed, 1 all wrong, 2 mixed.
RESPONSES = [
    ["<think>add</think> 2+3=5 so \\boxed{5}", "2+3=6 \\boxed{6}", "<think>hm</think>3+2=5 \\boxed{5}", "no"],
    ["\\boxed{9}", "4*5=21 \\boxed{21}", "\\boxed{1}", "4+5=9"],
    ["7-1=6 \\boxed{6}", "\\boxed{6} since 6+1=7", "7-1=5 \\boxed{5}", "\\boxed{8}"],
]
REWARDS = [[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
G, N = 3, 4


def _fixture_batch(tok, seed=0):
    """The CPU engine's tensors (grouped order) and a shuffled verl DataProto holding the same rollouts."""
    g = torch.Generator().manual_seed(seed)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    resp = [tok(r, add_special_tokens=False)["input_ids"] + [eos] for grp in RESPONSES for r in grp]
    R = max(len(r) for r in resp) + 2
    B = G * N
    response_ids = torch.full((B, R), pad, dtype=torch.long)
    response_mask = torch.zeros(B, R, dtype=torch.long)
    for i, r in enumerate(resp):
        response_ids[i, :len(r)] = torch.tensor(r)
        response_mask[i, :len(r)] = 1
    prompts = [tok.apply_chat_template([{"role": "user", "content": user_message(q)}], tokenize=False,
                                       add_generation_prompt=True) for q in QUESTIONS]
    p_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts for _ in range(N)]
    from rlrt.backends.verl.teacher_view import left_pad

    prompt_ids, prompt_mask = left_pad(p_ids, pad)
    old_logp = -torch.rand(B, R, generator=g) * 3 * response_mask
    old_ent = torch.rand(B, R, generator=g) * 2 * response_mask
    t_logp = old_logp + torch.randn(B, R, generator=g) * 0.7 * response_mask
    t_ent = torch.rand(B, R, generator=g) * response_mask
    rewards = torch.tensor(REWARDS, dtype=torch.float32)
    cpu = dict(response_ids=response_ids, response_mask=response_mask, old_logp=old_logp, old_ent=old_ent,
               t_logp=t_logp, t_ent=t_ent, rewards=rewards,
               texts=tok.batch_decode(response_ids, skip_special_tokens=True),
               user_msgs=[user_message(q) for q in QUESTIONS], refs=[f"The answer is {a}." for a in ANSWERS])
    # verl rows: shuffled (as _balance_batch does), uid per group, token-level rewards on the last token
    perm = torch.randperm(B, generator=g)
    tlr = torch.zeros(B, R)
    tlr[torch.arange(B), response_mask.sum(-1) - 1] = rewards.reshape(-1)
    uids = np.array([f"uid-{i // N}" for i in range(B)], dtype=object)
    raw = vb.as_object_array([[{"role": "user", "content": user_message(QUESTIONS[i // N])}] for i in range(B)])
    extra = vb.as_object_array([{"solution": cpu["refs"][i // N], "index": i // N} for i in range(B)])
    tensors = {"prompts": prompt_ids, "responses": response_ids, "response_mask": response_mask,
               "input_ids": torch.cat([prompt_ids, response_ids], 1),
               "attention_mask": torch.cat([prompt_mask, response_mask], 1),
               "token_level_rewards": tlr, "token_level_scores": tlr.clone(), "old_log_probs": old_logp}
    dp = DataProto.from_dict(tensors={k: v[perm] for k, v in tensors.items()},
                             non_tensors={"uid": uids[perm.numpy()], "raw_prompt": raw[perm.numpy()],
                                          "extra_info": extra[perm.numpy()]},
                             meta_info={"temperature": 1.0})
    return cpu, dp, perm


def _cpu_expectation(spec, settings, cpu, step):
    """The local engine's call: shape_advantages with a fake teacher returning the fixed scores."""
    def score(contexts, kind, want_logp, want_entropy):
        has = torch.tensor([c is not None for grp in contexts for c in grp])
        return TeacherScores(has, cpu["t_logp"] if want_logp else None, cpu["t_ent"] if want_entropy else None)

    texts = [cpu["texts"][i * N:(i + 1) * N] for i in range(G)]
    return shape_advantages(spec, settings, cpu["rewards"], texts, cpu["refs"], cpu["old_logp"], cpu["old_ent"],
                            cpu["response_mask"], step, score)


def _fake_compute(cpu, calls):
    """Stand-in for the actor's compute_log_prob: finds each teacher row's response among the batch rows (the
    teacher view must carry the student's ids unchanged) and returns that row's fixed teacher scores."""
    def compute(tdp):
        resp = tdp.batch["responses"]
        idx = [int(torch.nonzero((cpu["response_ids"] == r).all(-1))[0]) for r in resp]
        calls.append((tdp, idx))
        return cpu["t_logp"][idx], cpu["t_ent"][idx]
    return compute


@pytest.mark.parametrize("name", sorted(METHODS))
def test_backend_advantages_equal_cpu_engine_for_every_method(tok, name):
    spec = get_method(name)
    settings = spec.make_settings({})
    step = 3
    cpu, dp, perm = _fixture_batch(tok)
    expected = _cpu_expectation(spec, settings, cpu, step)
    calls = []
    P = dp.batch["prompts"].shape[-1]

    def make(grouped):
        return VerlTeacher(grouped, tok, dp.batch["attention_mask"][:, P:][grouped.order], _fake_compute(cpu, calls),
                           4096, needed=lambda has, we: rows_needing_teacher(spec, settings, grouped.rewards, has, we),
                           meta_info=dict(dp.meta_info))

    old_ent_verl = cpu["old_ent"][perm]  # the trainer's copy of entropys, in verl's row order
    grouped, shaped = vb.shape_batch(spec, settings, dp, tok, step, make, old_ent_verl)
    got = dp.batch["advantages"]
    want = expected.token_adv[perm] * cpu["response_mask"][perm]  # CPU row perm[j] sits at verl row j
    assert torch.allclose(got, want.float(), atol=1e-6), name
    assert torch.equal(dp.batch["returns"], got)
    if spec.weight_fn is not None:  # the teacher changed something, and only needed rows were scored
        plain = expected.adv[:, None] * cpu["response_mask"]
        assert not torch.allclose(expected.token_adv, plain)
        scored = sorted(i for _, idx in calls for i in idx)
        need = rows_needing_teacher(spec, settings, cpu["rewards"], expected.has_context, False)
        assert scored == torch.nonzero(need).flatten().tolist()
        assert len(scored) < G * N
    if spec.teacher == "none":
        assert calls == []


def test_group_rows_orders_groups_by_first_row_and_rejects_unequal_groups(tok):
    cpu, dp, perm = _fixture_batch(tok)
    grouped = vb.group_rows(dp, tok)
    for gi, uid in enumerate(grouped.uids):
        rows = grouped.order[gi * N:(gi + 1) * N]
        assert all(dp.non_tensor_batch["uid"][r] == uid for r in rows.tolist())
        assert rows.tolist() == sorted(rows.tolist())
        orig = int(uid.split("-")[1])
        assert grouped.user_msgs[gi] == user_message(QUESTIONS[orig])
        assert grouped.rewards[gi].tolist() == [REWARDS[orig][int(perm[r]) % N] for r in rows.tolist()]
    with pytest.raises(ValueError, match="unequal size"):
        vb.group_order(["a", "a", "b"])


def test_teacher_view_ids_equal_the_cpu_engines(tok):
    cpu, dp, perm = _fixture_batch(tok)
    grouped = vb.group_rows(dp, tok)
    for kind in ("sibling", "reference"):
        contexts = build_contexts(kind, grouped.rewards.tolist(), grouped.texts, grouped.references)
        local_ids, local_mask, has = teacher_inputs(tok, grouped.user_msgs, contexts, kind, N)
        P = dp.batch["prompts"].shape[-1]
        t = VerlTeacher(grouped, tok, dp.batch["attention_mask"][:, P:][grouped.order], None, 100000)
        rows = list(range(G * N))
        ours = t.inputs(contexts, kind, rows)
        for r in rows:
            assert ours[r] == local_ids[r][local_mask[r].bool()].tolist()
        if kind == "sibling":  # the context is visible in the prompt, thinking stripped
            gq = grouped.user_msgs.index(user_message(QUESTIONS[0]))  # its first rollout thinks: "<think>add</think>"
            r = gq * N + 1  # context = rollout 0 of that group
            text = tok.decode(ours[r])
            section = text.split("Correct solution:")[1].split("Correctly solve")[0]
            assert "2+3=5 so" in section and "<think>" not in section and "add" not in section
            assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_teacher_batch_layout_survives_verls_no_padding_round_trip(tok):
    from verl.workers.utils.padding import left_right_2_no_padding, no_padding_2_padding

    cpu, dp, _ = _fixture_batch(tok)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    rows = [0, 4, 9]
    resp, mask = cpu["response_ids"][rows], cpu["response_mask"][rows]
    tdp = build_teacher_batch(prompts, resp, mask, mask, tok.pad_token_id, {"temperature": 1.0})
    assert torch.equal(tdp.batch["input_ids"][:, -resp.shape[1]:], resp)
    assert tdp.batch["position_ids"][1, :4].tolist() == [0, 0, 0, 1]  # 2 pads, then 8, 9 at positions 0, 1
    assert tdp.batch["position_ids"][1, 4].item() == 2  # the response continues the count
    assert tdp.meta_info["global_token_num"] == (torch.tensor([3, 2, 4]) + mask.sum(-1)).tolist()
    td = left_right_2_no_padding(tdp.to_tensordict())
    # a "model output" equal to the next token id at every position: sliced back, it must give the responses
    vals = td["input_ids"].values()
    offsets = td["input_ids"].offsets()
    nxt = torch.zeros_like(vals)
    for s, e in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        nxt[s:e - 1] = vals[s + 1:e]
    out = no_padding_2_padding(nxt, td)
    assert torch.equal(out * mask, resp * mask)


def test_cap_middle_keeps_head_and_tail():
    assert cap_middle(list(range(10)), 4) == ([0, 1, 8, 9], True)
    assert cap_middle(list(range(3)), 4) == ([0, 1, 2], False)
    assert cap_middle(list(range(5)), 3) == ([0, 3, 4], True)


def test_compute_score_real_answers():
    from rlrt.backends.verl.reward import compute_score

    assert compute_score("aime24", "so the answer is \\boxed{204}", "204") == 1.0
    assert compute_score("math500", "thus \\boxed{\\frac{1}{2}}", "0.5") == 1.0  # math-verify, in a worker process
    assert compute_score("math500", "\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}") == 1.0
    assert compute_score("math500", "\\boxed{3/5}", "\\frac{3}{4}") == 0.0
    assert compute_score("aime24", "I think it is 204", "204") == 0.0  # no box
    assert compute_score("gpqa_diamond", "\\boxed{(B)}", "B") == 1.0
    assert compute_score("gpqa_diamond", "\\boxed{A, B}", "B") == 0.0
    out = []
    th = threading.Thread(target=lambda: out.append(compute_score("x", "\\boxed{2\\sqrt{2}}", "\\sqrt{8}")))
    th.start()
    th.join(60)
    assert out == [1.0]  # from a thread (verl's run_in_executor): math-verify still runs, with timeouts


def test_compute_score_grades_countdown_rows_as_countdown(tmp_path):
    """Cold-start GRPO directly on countdown (the RLT branch's cdgrpo runs) on verl: the rows carry the countdown
    source and the reward checks the equation, as the local engine's countdown grader does."""
    from rlrt.backends.verl import train as vtrain
    from rlrt.backends.verl.reward import COUNTDOWN, compute_score
    from rlrt.tasks import countdown

    key = countdown.answer_key([3, 5, 7], 22)
    assert compute_score(COUNTDOWN, "\\boxed{3 * 5 + 7}", key) == 1.0
    assert compute_score(COUNTDOWN, "\\boxed{3 + 5 + 7}", key) == 0.0  # 15, not 22
    assert compute_score(COUNTDOWN, "\\boxed{22}", key) == 0.0  # the target alone is no equation
    assert compute_score("synthetic", "\\boxed{22}", "22") == 1.0
    seen = {}

    def fake_run(cmd, check, env):  # stop at the trainer: only the parquet matters here
        import pyarrow.parquet as pq

        seen["rows"] = pq.read_table(next(a for a in cmd if a.startswith("data.train_files=")).split("=", 1)[1]
                                     ).to_pylist()
        raise RuntimeError("stop")

    data = tmp_path / "cd.jsonl"
    data.write_text('{"id": "c0", "question": "Use 3, 5, 7 to make 22.", "answer": %s}\n' % json.dumps(key))
    job = {"method": "grpo", "run": "cdgrpo-base", "backbone": {"name": "S-base"}, "task": "countdown",
           "rl": {"steps": 2}, "verl": {"max_prompt_length": 256}, "max_response_length": 256}
    model = tmp_path / "model"  # the context check reads its config.json before anything starts
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vtrain.subprocess, "run", fake_run)
        mp.setattr("rlrt.backends.verl.overrides.hydra_overrides",
                   lambda job_cfg, train_file, **kw: [f"data.train_files={train_file}"])
        with pytest.raises(RuntimeError, match="stop"):
            vtrain.run(job, model=str(model), data=str(data), out=str(tmp_path / "out"),
                       metrics=str(tmp_path / "m.json"), checkpoints=None, gpus=1)
    assert [r["data_source"] for r in seen["rows"]] == [COUNTDOWN] and seen["rows"][0]["reward_model"] == {
        "style": "rule", "ground_truth": key}


def test_pg_micro_batch_loss_equals_verls_vanilla_loss():
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla
    from verl.workers.config import ActorConfig

    from rlrt.backends.verl.loss import micro_batch_loss
    from rlrt.methods.objectives import all_rows_plan

    g = torch.Generator().manual_seed(0)
    b, R, V = 4, 6, 11
    logits = torch.randn(b, R, V, generator=g, dtype=torch.float64)
    ids = torch.randint(0, V, (b, R), generator=g)
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    old = logp + torch.randn(b, R, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(b, R, generator=g, dtype=torch.float64)
    mask = torch.ones(b, R, dtype=torch.float64)
    mask[1, 4:] = 0
    plan = all_rows_plan(torch.zeros(b), None, mask, None, None)
    ours, terms = micro_batch_loss("pg", None, logits=logits, logp=logp, old_logp=old, token_adv=adv,
                                   response_mask=mask, plan=plan, teacher_logits=None, temperature=1.0,
                                   clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0, loss_agg="token-mean")
    cfg = ActorConfig(strategy="fsdp", clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0,
                      ppo_micro_batch_size_per_gpu=1, ppo_mini_batch_size=1, rollout_n=1)
    theirs, _ = compute_policy_loss_vanilla(old, logp, adv, mask, "token-mean", cfg)
    assert abs(float(ours) - float(theirs)) < 1e-6


def test_sdpo_micro_batch_loss_is_zero_when_teacher_equals_student():
    from rlrt.backends.verl.loss import micro_batch_loss, plan_rows
    from rlrt.methods.objectives import sdpo_plan

    settings = get_method("sdpo").make_settings({})
    g = torch.Generator().manual_seed(1)
    b, R, V = 3, 5, 9
    logits = torch.randn(b, R, V, generator=g)
    logp = torch.log_softmax(logits, -1)[..., 0]
    mask = torch.ones(b, R)
    plan = sdpo_plan(torch.zeros(b), torch.tensor([True, False, True]), mask, None, settings)
    kw = dict(logits=logits, logp=logp, old_logp=logp, token_adv=torch.zeros(b, R), response_mask=mask,
              plan=plan_rows(plan, slice(0, b)), temperature=1.0, clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0,
              loss_agg="token-mean")
    same, _ = micro_batch_loss("sdpo", settings, teacher_logits=lambda: logits.clone(), **kw)
    assert abs(float(same)) < 1e-6
    other, terms = micro_batch_loss("sdpo", settings, teacher_logits=lambda: torch.zeros(b, R, V), **kw)
    assert float(other) > 1e-3 and terms.distill is not None
    from rlrt.backends.verl.loss import worker_loss_only

    with pytest.raises(NotImplementedError, match="WorkerLoss"):
        worker_loss_only(logp, logp, logp, mask)


def test_history_row_has_the_local_keys(tok):
    from rlrt.backends.verl.trainer import history_row

    spec = get_method("rlrt")
    settings = spec.make_settings({})
    cpu, dp, _ = _fixture_batch(tok)
    grouped, shaped = vb.shape_batch(spec, settings, dp, tok, 0,
                                     lambda gr: VerlTeacher(gr, tok, gr.response_mask, _fake_compute(cpu, []), 4096))
    metrics = {"actor/pg_clipfrac": [0.1, 0.3], "actor/ppo_kl": 0.01, "actor/pg_loss": [0.5], "actor/grad_norm": 2.0,
               "actor/lr": 1e-6, "actor/rlrt_distill": [0.2, 0.4]}
    row = history_row(4, grouped, shaped, metrics, 1.5, 10.0)
    assert row["distill_loss"] == pytest.approx(0.3)  # WorkerLoss's metric (rlrt.backends.verl.loss.DISTILL_METRIC)
    for key in ("step", "reward_mean", "accuracy", "solve_rate", "mixed_groups", "response_length", "entropy",
                "clip_frac", "approx_kl", "loss", "grad_norm", "weight_mean", "weight_max", "context_frac",
                "distill_frac", "distill_loss", "diversity_bonus", "lambda", "lr", "time_gen", "time_teacher",
                "step_time"):
        assert key in row, key
    assert row["step"] == 4 and row["clip_frac"] == pytest.approx(0.2) and row["lr"] == 1e-6
    assert row["reward_mean"] == pytest.approx(4 / 12)  # REWARDS: 2 + 0 + 2 correct of 12
    assert row["solve_rate"] == pytest.approx(200 / 3)
    json.dumps(row)


def test_method_from_config_refuses_an_ema_teacher_and_a_missing_node():
    from omegaconf import OmegaConf

    from rlrt.backends.verl.trainer import method_from_config

    spec, settings, node = method_from_config(OmegaConf.create({"rlrt": {"method": "rlrt",
                                                                         "settings": {"eps_w": 0.5}}}))
    assert spec.name == "rlrt" and settings.eps_w == 0.5
    assert method_from_config(OmegaConf.create({"rlrt": {"method": "sdpo", "settings": {}}}))[0].name == "sdpo"
    with pytest.raises(NotImplementedError, match="ema_rate"):
        method_from_config(OmegaConf.create({"rlrt": {"method": "sdpo", "settings": {"ema_rate": 0.1}}}))
    with pytest.raises(KeyError, match="rlrt.method"):
        method_from_config(OmegaConf.create({"trainer": {}}))


def test_verl_rows_parquet_history_and_summary(tmp_path):
    import pyarrow.parquet as pq

    from rlrt.backends.verl.train import read_history, summarize, verl_rows, write_verl_parquet

    rows = [{"id": "a1", "question": "What is 1+1?", "answer": "2", "solution": "1+1=2", "source": "aime24"},
            {"id": "a2", "question": "What is 2+2?", "answer": "4", "solution": "", "source": "aime24"}]
    out = verl_rows(rows)
    assert out[0]["prompt"] == [{"role": "user", "content": user_message("What is 1+1?")}]
    assert out[1]["reward_model"] == {"style": "rule", "ground_truth": "4"}
    assert out[0]["extra_info"]["solution"] == "1+1=2" and out[1]["extra_info"]["index"] == 1
    path = tmp_path / "train.parquet"
    write_verl_parquet(out, path)
    back = pq.read_table(path).to_pylist()
    assert back[0]["data_source"] == "aime24" and back[1]["extra_info"]["user_message"] == user_message("What is 2+2?")
    with pytest.raises(ValueError, match="a3"):
        verl_rows([{"id": "a3", "question": "q", "answer": ""}])
    hist = tmp_path / "h.jsonl"
    hist.write_text("\n".join(json.dumps(r) for r in [
        {"step": 0, "reward_mean": 0.1, "step_time": 2.0, "time_teacher": 1.0},
        {"step": 1, "reward_mean": 0.9, "step_time": 4.0, "time_teacher": 1.0},
        {"step": 1, "reward_mean": 0.5, "step_time": 4.0, "time_teacher": 3.0}]) + "\n")  # step 1 redone
    h = read_history(hist)
    assert [r["reward_mean"] for r in h] == [0.1, 0.5]
    s = summarize(h, method="rlrt", run="rlrt", backbone="b")
    assert s["steps"] == 2 and s["reward_first"] == 0.1 and s["reward_last"] == 0.5
    assert s["mean_step_time"] == 3.0 and s["mean_teacher_time"] == 2.0


@pytest.mark.parametrize("objective", ["sdpo", "srpo"])
def test_worker_loss_equals_the_local_micro_batch_through_verls_no_padding_layout(tok, objective):
    """SDPO / SRPO's worker-side loss on verl (``rlrt.backends.verl.loss.WorkerLoss``), called as verl's engine
    calls it -- logits processor on the packed, temperature-scaled logits, then the loss on ``model_output`` --
    over a batch in verl's own no-padding layout (``left_right_2_no_padding``): the loss and the student's
    gradients equal the local engine's micro-batch (``micro_batch_loss``, teacher logits from the local engine's
    ``response_logits`` on the same teacher views)."""
    from verl.utils import tensordict_utils as tu

    from rlrt.backends.verl.loss import TOKEN_LOSS, WorkerLoss, micro_batch_loss
    from test_verl_sdpo_memory import _case

    c = _case(tok, objective)
    student, teacher, settings, T, td, packed = c["student"], c["teacher"], c["settings"], c["T"], c["td"], c["packed"]
    want, want_grad = c["want"], c["want_grad"]
    loss_fn = WorkerLoss(c["cfg"], objective, settings, T, teacher=teacher)
    out = loss_fn(student_logits=packed, data=td)
    assert out[TOKEN_LOSS].shape == (1, c["n_real"])
    offsets = td["input_ids"].offsets()
    model_output = {TOKEN_LOSS: torch.nested.nested_tensor_from_jagged(out[TOKEN_LOSS].squeeze(0), offsets)}
    got, metrics = loss_fn(model_output=model_output, data=td, dp_group=None)
    assert abs(float(got) - float(want)) < 1e-9 and float(want) != 0.0
    # the distillation term reaches verl's metrics (history's distill_loss; it was missing: always 0 on verl)
    want_distill = micro_batch_loss(objective, settings, logits=c["logits"].detach(), logp=c["logp"].detach(),
                                    old_logp=c["old"], token_adv=c["adv"], response_mask=c["rmask"], plan=c["plan"],
                                    teacher_logits=lambda: c["t_logits"],
                                    temperature=T, clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0,
                                    loss_agg="token-mean")[1].distill
    assert want_distill is not None and want_distill > 0
    assert metrics["actor/rlrt_distill"].aggregate() == pytest.approx(want_distill, rel=1e-6)
    got.backward()
    for a, b in zip(want_grad, [p.grad for p in student.parameters()]):
        assert torch.allclose(a, b, atol=1e-9), float((a - b).abs().max())
    # a mini-batch without a loss token: zero, not 0/0
    tu.assign_non_tensor(td, batch_num_tokens=0)
    zero, _ = loss_fn(model_output=model_output, data=td, dp_group=None)
    assert float(zero) == 0.0


def test_distilling_update_reaches_verls_engine_with_the_flag_the_plan_and_the_teacher_views(tok):
    """SDPO on verl, trainer side: verl's own ``RayPPOTrainer._update_actor`` (run on a stand-in trainer whose
    worker group records what it is sent) hands the actor a no-padding batch marked ``distillation_use_topk`` with
    the policy loss kept, carrying the plan and every row's teacher view in verl's row order and the plan's loss
    mask as the tokens verl counts; afterwards the batch is as before and verl's flag is off again."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    import verl.trainer.ppo.ray_trainer as rt
    from verl.utils import tensordict_utils as tu

    from rlrt.backends.verl.loss import FIELDS
    from rlrt.backends.verl.trainer import distill_update, topk_processor

    cpu, dp, perm = _fixture_batch(tok)
    spec = get_method("sdpo")
    settings = spec.make_settings({})
    A = dp.batch["attention_mask"].shape[1]
    dp.batch["position_ids"] = (dp.batch["attention_mask"].cumsum(1) - 1).clamp(min=0)
    teachers, seen = [], {}
    P = dp.batch["prompts"].shape[1]

    def make_teacher(grouped):
        t = VerlTeacher(grouped, tok, dp.batch["attention_mask"][:, P:][grouped.order], _fake_compute(cpu, []), 0)
        teachers.append(t)
        return t

    grouped, shaped = vb.shape_batch(spec, settings, dp, tok, 0, make_teacher)
    mask_before = dp.batch["response_mask"].clone()

    class Workers:
        def update_actor(self, td):
            seen["td"] = td
            return tu.assign_non_tensor(TensorDict({}, batch_size=[]), metrics={"mfu": 0.0})

    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"multi_turn": {"enable": False}, "temperature": 1.0,
                                                              "n": N},
                                                  "actor": {"calculate_entropy": False, "entropy_coeff": 0.0,
                                                            "ppo_mini_batch_size": G, "ppo_epochs": 1,
                                                            "data_loader_seed": 0, "shuffle": False}},
                            "distillation": {"enabled": False}})
    trainer = SimpleNamespace(config=cfg, actor_rollout_wg=Workers(), distillation_config=None)
    with topk_processor(trainer):
        distill_update(lambda b: RayPPOTrainer._update_actor(trainer, b), dp, grouped, teachers[0], shaped.plan)
    td = seen["td"]
    assert tu.get(td, "distillation_use_topk") is True and tu.get(td, "distillation_only") is False
    assert td["input_ids"].is_nested  # verl's no-padding layout
    plan = shaped.plan
    rows = torch.empty(G * N, dtype=torch.long)
    rows[grouped.order] = torch.arange(G * N)  # verl row -> grouped row
    assert torch.equal(td["loss_mask"], plan.loss_mask[rows].to(td["loss_mask"].dtype))  # what verl counts
    assert torch.equal(td[FIELDS["distill_rows"]], plan.distill_rows[rows])
    # each verl row's teacher view: the context prompt the local engine builds, then that row's own response
    from rlrt.backends.local.rl import teacher_inputs

    contexts = teachers[0].contexts
    ids, mask, has = teacher_inputs(tok, grouped.user_msgs, contexts, teachers[0].kind, N)
    t_ids, t_att = td[FIELDS["teacher_input_ids"]], td[FIELDS["teacher_attention_mask"]]
    R = dp.batch["responses"].shape[1]
    for v in range(G * N):
        g = int(rows[v])
        want = ids[g][mask[g].bool()].tolist()
        assert t_ids[v, :-R][t_att[v, :-R].bool()].tolist() == want
        assert torch.equal(t_ids[v, -R:], dp.batch["responses"][v])
    assert torch.equal(dp.batch["response_mask"], mask_before) and FIELDS["loss_mask"] not in dp.batch.keys()
    assert rt.is_distillation_enabled(OmegaConf.create({"enabled": False})) is False and trainer.distillation_config is None
