"""The RLT engine on tiny random models: sequences are built from the same explanation ids in both contexts, the
batched reward equals a per-sample computation by hand, and a teacher step moves toward the higher reward."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from rlrt.backends.local import rlt
from rlrt.backends.local.rollout import Rollouts, left_pad, response_mask_from_ids
from rlrt.tasks.rlt_format import END_EXPLANATION, teacher_text

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


def model(tok, seed):
    from rlrt.backends.local.model import build_model

    torch.manual_seed(seed)
    return build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "num_key_value_heads": 1}, tok).eval()


def test_teacher_example_trains_on_the_explanation_only(tok):
    ids, mask = rlt.teacher_example(tok, Q[0], S[0], "7 + 12 = 19.")
    learned = [i for i, m in zip(ids, mask) if m]
    assert learned[-1] == tok.eos_token_id
    assert tok.decode(learned[:-1]) == "7 + 12 = 19." + END_EXPLANATION
    prompt = [i for i, m in zip(ids, mask) if not m]
    assert tok.decode(prompt) == rlt.teacher_prompt(tok, Q[0], S[0])  # the solution block is context, not target
    assert mask == sorted(mask)  # one contiguous target at the end


def test_student_sequence_masks_and_shared_explanation_ids(tok):
    e_ids = rlt.encode(tok, "7 + 12 = 19.")
    s = rlt.student_seq(tok, Q[0], e_ids, S[0])
    assert [t for t, m in zip(s.response, s.explanation_mask) if m] == e_ids  # the very same ids
    assert tok.decode([t for t, m in zip(s.response, s.solution_mask) if m]) == S[0]
    assert not any(a and b for a, b in zip(s.explanation_mask, s.solution_mask))
    ids, mask = rlt.student_example(tok, Q[0], "7 + 12 = 19.", S[0])
    assert ids == s.prompt + s.response and sum(mask) == len(s.response)
    assert tok.decode(s.response[:-1]) == ("<|begin_of_thought|>7 + 12 = 19.<|end_of_thought|>\n\n"
                                          "<|begin_of_solution|>" + S[0] + "<|end_of_solution|>")


def _by_hand(teacher, student, tok, q, s, e, alpha, lam):
    """One unpadded sequence per context; the reductions written out."""
    e_ids = rlt.encode(tok, e)
    st = rlt.student_seq(tok, q, e_ids, s)
    ids = torch.tensor([st.prompt + st.response])
    with torch.no_grad():
        logits = student(input_ids=ids).logits[0].float()
    P = len(st.prompt)
    s_logp = torch.log_softmax(logits[P - 1:-1], -1)  # predicts response tokens
    tok_lp = s_logp.gather(-1, torch.tensor(st.response)[:, None])[:, 0]
    sol = tok_lp[torch.tensor(st.solution_mask).bool()]
    r_ss = sol.mean() + alpha * sol.min()
    tp = rlt.encode(tok, rlt.teacher_prompt(tok, q, s))
    with torch.no_grad():
        t_logits = teacher(input_ids=torch.tensor([tp + e_ids])).logits[0].float()
    lt = torch.log_softmax(t_logits[len(tp) - 1:-1], -1)
    h = len(rlt.encode(tok, "<|begin_of_thought|>"))
    ls = s_logp[h:h + len(e_ids)]
    kl = (lt.exp() * (lt - ls)).sum(-1)
    r_kl = kl.mean() + alpha * kl.max()
    return float(r_ss), float(r_kl), float(r_ss - lam * r_kl)


def test_batched_reward_matches_per_sample_by_hand(tok):
    teacher, student = model(tok, 1), model(tok, 2)
    expl = ["7 + 12 = 19.", "45 + 6 = 51. 51 + 3 = 54. Done, the sum is 54.", None, "9 + 9"]
    qs, ss = [Q[0], Q[1], Q[2], Q[2]], [S[0], S[1], S[2], S[2]]
    out = rlt.score_explanations(teacher, student, tok, qs, ss, expl, alpha=0.01, lam=3.0, micro_batch=2)
    assert out["format_ok"].tolist() == [True, True, False, True]
    assert out["reward"][2] == -1.0  # missing tags
    for i in (0, 1, 3):
        r_ss, r_kl, r = _by_hand(teacher, student, tok, qs[i], ss[i], expl[i], 0.01, 3.0)
        assert out["r_ss"][i].item() == pytest.approx(r_ss, abs=1e-4)
        assert out["r_kl"][i].item() == pytest.approx(r_kl, abs=1e-4)
        assert out["reward"][i].item() == pytest.approx(r, abs=1e-4)
        assert r_kl > 0  # two different random models disagree


def _rollouts(tok, prompts, completions):
    p_ids, p_mask = left_pad([rlt.encode(tok, p) for p in prompts], tok.pad_token_id)
    resp = [rlt.encode(tok, c) + [tok.eos_token_id] for c in completions]
    width = max(len(r) for r in resp)
    r_ids = torch.full((len(resp), width), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(resp):
        r_ids[i, :len(r)] = torch.tensor(r)
    return Rollouts(p_ids, p_mask, r_ids, response_mask_from_ids(r_ids, tok.eos_token_id), list(completions))


def test_teacher_step_moves_toward_the_higher_reward(tok, monkeypatch):
    teacher, student = model(tok, 3), model(tok, 4)
    row = {"question": Q[1], "solution": S[1]}
    completions = ["3 + 45 = 48. 48 + 6 = 54." + END_EXPLANATION, "45 + 45 = 9." + END_EXPLANATION,
                   "no closing tag", "6 + 3 = 9. 9 + 45 = 54." + END_EXPLANATION]
    prompt = rlt.teacher_prompt(tok, row["question"], row["solution"])
    ro = _rollouts(tok, [prompt] * 4, completions)
    monkeypatch.setattr(rlt, "sample", lambda *a, **k: ro)
    from rlrt.backends.local.rollout import score_responses

    before, _ = score_responses(teacher, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 0.7)
    expl = [rlt.parse_explanation(c) for c in completions]
    # random models give r ~ -log(V) - 3 KL, far below -1: the failure penalty must be lower still (see config)
    reward = rlt.score_explanations(teacher, student, tok, [row["question"]] * 4, [row["solution"]] * 4, expl,
                                    temperature=0.7, missing_tag_penalty=-100.0)["reward"]  # the sampling temperature
    cfg = rlt.TeacherRLConfig(steps=1, question_batch=1, n_samples=4, mini_batch=1, lr=3e-3, max_new_tokens=32,
                              missing_tag_penalty=-100.0)
    opt = torch.optim.AdamW(teacher.parameters(), lr=cfg.lr, weight_decay=0.0)
    m = rlt.teacher_step(teacher, student, tok, opt, [row], 0, cfg, ref=copy.deepcopy(teacher))
    assert m["format_ok"] == 0.75 and m["reward_mean"] == pytest.approx(float(reward.mean()), abs=1e-5)
    after, _ = score_responses(teacher, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 0.7)
    gain = ((after - before) * ro.response_mask).sum(-1)  # change of each completion's log-likelihood
    best, worst = int(reward.argmax()), int(reward.argmin())
    assert worst == 2  # the format failure
    assert gain[best] > 0 > gain[worst]


def test_teacher_step_with_no_signal_leaves_the_teacher_unchanged(tok, monkeypatch):
    teacher, student = model(tok, 5), model(tok, 6)
    row = {"question": Q[0], "solution": S[0]}
    ro = _rollouts(tok, [rlt.teacher_prompt(tok, Q[0], S[0])] * 2, ["no tag", "still none"])
    monkeypatch.setattr(rlt, "sample", lambda *a, **k: ro)
    before = [p.detach().clone() for p in teacher.parameters()]
    cfg = rlt.TeacherRLConfig(steps=1, question_batch=1, n_samples=2, mini_batch=1, lr=1e-2, max_new_tokens=8)
    # plain SGD: the gradient itself must vanish (Adam would blow float noise of the reference's separate scoring
    # pass, ~1e-6 in log-prob, up to a step of lr)
    m = rlt.teacher_step(teacher, student, tok, torch.optim.SGD(teacher.parameters(), lr=1e-2), [row], 0, cfg,
                         ref=copy.deepcopy(teacher))
    assert m["reward_mean"] == -1.0 and m["format_ok"] == 0.0 and abs(m["kl_ref"]) < 1e-6
    # equal rewards: zero advantage; at the reference the k3 KL has zero gradient: nothing moves
    assert all(torch.allclose(a, b, rtol=0.0, atol=1e-7) for a, b in zip(before, teacher.parameters()))


def test_teacher_kl_term_pulls_toward_the_reference(tok, monkeypatch):
    """With no reward signal, beta * KL(pi_theta || pi_ref) alone moves a drifted teacher back toward the SFT
    reference (J_RLT's beta term; SakanaAI/RLT beta = 0.04), and not at all with beta = 0."""
    from rlrt.backends.local.rollout import score_responses

    ref, student = model(tok, 5), model(tok, 6)
    row = {"question": Q[0], "solution": S[0]}
    ro = _rollouts(tok, [rlt.teacher_prompt(tok, Q[0], S[0])] * 2, ["no tag", "still none"])
    monkeypatch.setattr(rlt, "sample", lambda *a, **k: ro)
    ref_logp, _ = score_responses(ref, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 0.7)

    def gap(m):
        logp, _ = score_responses(m, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 0.7)
        return float(((logp - ref_logp).abs() * ro.response_mask).sum())

    for beta in (0.0, 1.0):
        teacher = copy.deepcopy(ref)
        with torch.no_grad():
            for p in teacher.parameters():
                p.add_(0.05 * torch.randn_like(p))
        before = gap(teacher)
        cfg = rlt.TeacherRLConfig(steps=1, question_batch=1, n_samples=2, mini_batch=1, lr=1e-2, max_new_tokens=8,
                                  beta=beta)
        m = rlt.teacher_step(teacher, student, tok, torch.optim.AdamW(teacher.parameters(), lr=1e-2,
                                                                      weight_decay=0.0), [row], 0, cfg, ref=ref)
        if beta:
            assert m["kl_ref"] > 0 and gap(teacher) < before
        else:
            assert gap(teacher) == before
