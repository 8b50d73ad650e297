"""The teacher view: which context each sample gets, and the student's ids scored unchanged."""

from __future__ import annotations

import random

import pytest
import torch

from rlrt.teacher import build_contexts, sibling_context_index, teacher_user_message


def test_sibling_is_first_other_correct_rollout_never_itself():
    rewards = [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    assert sibling_context_index(rewards) == [
        [2, 0, 0, 0],          # sample 0 is correct: its context is the *other* correct one
        [1, None, 1, 1],       # the only correct sample gets no context (it would be itself)
        [None] * 4,            # all wrong: nobody gets a context
        [1, 0, 0, 0],
    ]


def test_build_contexts_strips_thinking_and_handles_kinds():
    rewards = [[0, 1]]
    responses = [["wrong <think>x</think> \\boxed{1}", "<think>long trace</think>\n3 + 4 = 7. \\boxed{7}"]]
    ctx = build_contexts("sibling", rewards, responses)
    assert ctx == [["3 + 4 = 7. \\boxed{7}", None]]
    ref = build_contexts("reference", rewards, responses, references=["3 + 4 = 7."])
    assert ref == [["3 + 4 = 7.", "3 + 4 = 7."]]
    assert build_contexts("none", rewards, responses) == [[None, None]]
    with pytest.raises(ValueError):
        build_contexts("oracle", rewards, responses)


def test_teacher_message_inserts_context_and_leaves_no_context_untouched():
    msg = "What is 3 + 4? Please reason step by step."
    assert teacher_user_message(msg, None, "sibling") == msg
    t = teacher_user_message(msg, "3 + 4 = 7.", "sibling")
    assert t.startswith(msg) and "Correct solution:\n\n3 + 4 = 7." in t
    r = teacher_user_message(msg, "3 + 4 = 7.", "reference")
    assert "Here is a reference solution:\n3 + 4 = 7." in r


@pytest.fixture(scope="module")
def tiny():
    from rlrt.backends.local.model import build_model
    from rlrt.tasks.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [f"What is {rng.randint(1, 99)} + {rng.randint(1, 99)}? \\boxed{{{rng.randint(1, 200)}}}" for _ in range(200)]
    tok = train_tokenizer(texts + ["Correct solution: Correctly solve the original question. user assistant"], 300)
    torch.manual_seed(0)
    model = build_model({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "num_key_value_heads": 1}, tok).eval()
    return model, tok


def test_teacher_pass_scores_the_students_ids_with_padding_invariance(tiny):
    """log P(y_t) from a left-padded batch with a swapped prompt equals scoring each sequence alone."""
    from rlrt.backends.local.rl import teacher_inputs
    from rlrt.tasks.prompts import chat_prompt
    from rlrt.backends.local.rollout import response_logits, sample, score_responses
    from rlrt.methods.losses import token_logprobs

    model, tok = tiny
    msgs = ["What is 3 + 4?", "What is 12 + 30?"]
    ro = sample(model, tok, [chat_prompt(tok, m) for m in msgs], n=2, max_new_tokens=8, seed=1)
    ctx = [["3 + 4 = 7.", None], [None, "12 + 30 = 42. \\boxed{42}"]]
    t_ids, t_mask, has = teacher_inputs(tok, msgs, ctx, "sibling", n=2)
    assert has.tolist() == [True, False, False, True]
    t_logp, _ = score_responses(model, t_ids, t_mask, ro.response_ids, ro.response_mask)
    s_logp, _ = score_responses(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask)
    # rows without a context see exactly the student prompt -> identical log-probs
    assert torch.allclose(t_logp[1], s_logp[1], atol=1e-5) and torch.allclose(t_logp[2], s_logp[2], atol=1e-5)
    # row 0, scored alone without padding: same numbers as in the padded batch
    p = t_ids[0][t_mask[0].bool()][None]
    r_len = int(ro.response_mask[0].sum())
    r = ro.response_ids[0, :r_len][None]
    alone = token_logprobs(response_logits(model, p, torch.ones_like(p), r, torch.ones_like(r)), r)
    assert torch.allclose(alone[0], t_logp[0, :r_len], atol=1e-5)
    assert not torch.allclose(t_logp[0, :r_len], s_logp[0, :r_len])  # the context changes P_T


def test_response_mask_stops_after_first_eos():
    from rlrt.backends.local.rollout import response_mask_from_ids

    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 5, 5, 5, 5], [2, 0, 0, 0, 0]])
    assert response_mask_from_ids(ids, eos_id=2).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_scoring_skips_common_padding_and_keeps_row_order(tiny):
    """Columns every row pads are not computed (their logits are 0), the real tokens' numbers do not move, and the
    length-sorted micro-batches of ``score_responses`` hand each row back in its own place."""
    from rlrt.backends.local.rollout import response_logits, sample, score_responses
    from rlrt.tasks.prompts import chat_prompt

    model, tok = tiny
    msgs = ["What is 3 + 4?", "What is 12 + 30 + 5?", "What is 1 + 1?"]
    ro = sample(model, tok, [chat_prompt(tok, m) for m in msgs], n=2, max_new_tokens=10, seed=3)
    pad = tok.pad_token_id
    # 5 extra left-padding columns on the prompts and 4 extra right-padding columns on the responses
    p_ids = torch.cat([torch.full((6, 5), pad), ro.prompt_ids], 1)
    p_mask = torch.cat([torch.zeros(6, 5, dtype=torch.long), ro.prompt_mask], 1)
    r_ids = torch.cat([ro.response_ids, torch.full((6, 4), pad)], 1)
    r_mask = torch.cat([ro.response_mask, torch.zeros(6, 4, dtype=torch.long)], 1)
    R = ro.response_ids.shape[1]
    with torch.no_grad():
        base = response_logits(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask)
        wide = response_logits(model, p_ids, p_mask, r_ids, r_mask)
    assert wide.shape == (6, R + 4, base.shape[-1])
    m = ro.response_mask.bool()
    assert torch.allclose(wide[:, :R][m], base[m], atol=1e-5)
    assert torch.count_nonzero(wide[:, R:]) == 0
    whole, _ = score_responses(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask, 0.7)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    for mb in (1, 2, 4):
        part, ent = score_responses(model, ro.prompt_ids[perm], ro.prompt_mask[perm], ro.response_ids[perm],
                                    ro.response_mask[perm], 0.7, micro_batch=mb, with_entropy=True)
        assert torch.allclose(part, whole[perm], atol=1e-5)
        assert torch.all(ent[ro.response_mask[perm] == 0] == 0) and torch.all(ent[ro.response_mask[perm] == 1] > 0)
    assert torch.all(whole[~m] == 0) and torch.all(whole[m] < 0)


def test_shared_prefix_logits_equal_one_pass_over_prompt_and_response(tiny):
    """Each distinct prompt prefilled once and its KV cache repeated to its rows gives the logits of one forward
    pass over prompt ⊕ response, for prompts of different lengths, repeated and interleaved, and a 1-token response."""
    from rlrt.backends.local.rollout import left_pad, response_logits, sample, shared_prefix_logits
    from rlrt.tasks.prompts import chat_prompt

    model, tok = tiny
    msgs = ["What is 3 + 4?", "What is 12 + 30 + 5 + 7?"]
    ro = sample(model, tok, [chat_prompt(tok, m) for m in msgs], n=3, max_new_tokens=9, seed=5)
    order = torch.tensor([0, 3, 1, 4, 2, 5])  # the two prompts interleaved
    p_ids, p_mask = ro.prompt_ids[order], ro.prompt_mask[order]
    r_ids, r_mask = ro.response_ids[order].clone(), ro.response_mask[order].clone()
    r_mask[5, 1:] = 0  # a 1-token response
    model.eval()
    with torch.no_grad():
        ref = response_logits(model, p_ids, p_mask, r_ids, r_mask)
    got = shared_prefix_logits(model, p_ids, p_mask, r_ids, r_mask)
    assert got.shape == ref.shape
    m = r_mask.bool()
    assert torch.allclose(got[m], ref[m], atol=1e-5)
    # one row alone (no padding, no sharing) agrees too
    p, r = p_ids[1][p_mask[1].bool()][None], r_ids[1][r_mask[1].bool()][None]
    alone = shared_prefix_logits(model, p, torch.ones_like(p), r, torch.ones_like(r))
    assert torch.allclose(alone[0], ref[1][m[1]], atol=1e-5)


def test_shared_prefix_gradients_equal_one_pass(tiny):
    """The update's loss through the shared prompt pass has the gradient of the loss over each row's own copy."""
    from rlrt.backends.local.rollout import response_logits, sample, shared_prefix_logits
    from rlrt.methods.losses import token_logprobs
    from rlrt.tasks.prompts import chat_prompt

    model, tok = tiny
    msgs = ["What is 3 + 4?", "What is 12 + 30 + 5 + 7?"]
    ro = sample(model, tok, [chat_prompt(tok, m) for m in msgs], n=3, max_new_tokens=9, seed=7)
    weights = torch.linspace(-1.0, 1.0, 6)[:, None]
    grads = []
    for fn in (response_logits, shared_prefix_logits):
        model.zero_grad(set_to_none=True)
        logits = fn(model, ro.prompt_ids, ro.prompt_mask, ro.response_ids, ro.response_mask)
        (token_logprobs(logits, ro.response_ids) * ro.response_mask * weights).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert any(a.abs().max() > 1e-3 for a in grads[0])
