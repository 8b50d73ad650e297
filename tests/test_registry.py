"""The method registry, its settings classes, registered objectives and the backend-neutral ``shape_advantages``."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from rlrt.methods.objectives import OBJECTIVES
from rlrt.methods.registry import METHODS, get_method, table4_rows
from rlrt.methods.settings import field_doc, field_names
from rlrt.methods.shaping import TeacherScores, shape_advantages
from rlrt.methods.weights import rlrt_weight, rlsd_weight

ROOT = Path(__file__).resolve().parents[1]


def _rows():
    return {r["Method"]: r for r in table4_rows()}


def test_table4_is_read_off_the_wired_functions(monkeypatch):
    rows = _rows()
    assert rows["RLSD"]["Per-token weight w_t"] == "(P_T(y_t)/P_S(y_t))^sign(A)"
    assert rows["RLRT"]["Per-token weight w_t"] == "(P_S(y_t)/P_T(y_t))^sign(A)"
    assert rows["RLRT"]["Gate"] == "r=1 only" and rows["RLSD"]["Gate"] == rows["RLRT-all"]["Gate"] == "all"
    assert rows["RLSD"]["Context c"] == "ground truth" and rows["RLRT"]["Context c"] == "correct rollout"
    assert rows["GRPO"]["Per-token weight w_t"] == "1" and rows["GRPO"]["Context c"] == "-"
    assert rows["SRPO"]["Gate"] == "route by r" and rows["SDPO"]["Objective"].startswith("sdpo:")
    assert "min(alpha H_t, |A_t|/kappa)" in rows["GRPO+EB"]["Per-token weight w_t"]
    # mis-wiring RLSD to RLRT's weight function changes RLSD's row: the table cannot hide it
    monkeypatch.setitem(METHODS, "rlsd", dataclasses.replace(METHODS["rlsd"], weight_fn=rlrt_weight))
    assert _rows()["RLSD"]["Per-token weight w_t"] == "(P_S(y_t)/P_T(y_t))^sign(A)"


def test_weight_functions_compute_the_formulas_their_rows_show():
    """RLSD's row says (P_T/P_S)^sign(A), RLRT's (P_S/P_T)^sign(A): check the wired functions numerically, so
    swapping the functions (or their Table 4 labels) fails here."""
    delta = torch.tensor([[0.3, -0.7]])  # log P_T - log P_S
    for adv in (torch.tensor([1.5]), torch.tensor([-2.0])):
        sign = math.copysign(1.0, float(adv))
        expect_rlsd = torch.exp(sign * delta)
        assert torch.allclose(get_method("rlsd").weight_fn(delta, adv), expect_rlsd)
        assert torch.allclose(get_method("rlrt").weight_fn(delta, adv), 1 / expect_rlsd)
        assert get_method("rlrt_all").weight_fn is rlrt_weight and get_method("rlsd").weight_fn is rlsd_weight


def test_schema_lists_exactly_the_registered_methods():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert sorted(schema["$defs"]["method_name"]["enum"]) == sorted(METHODS)
    text = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert len(re.findall(r"\brlrt_all\b", text)) == 1  # the method names appear once, in method_name


def test_every_settings_field_is_documented_and_in_the_schema():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    keys = set(schema["$defs"]["method_settings"]["properties"])
    for spec in METHODS.values():
        for name in field_names(spec.settings):
            assert field_doc(spec.settings, name), f"{spec.settings.__name__}.{name} has no docstring line"
            assert name in keys, f"{name} of {spec.name} is not typed in the schema"


def test_settings_reject_unknown_keys_and_bad_choices():
    with pytest.raises(KeyError, match="methods.grpo.eps_w"):
        get_method("grpo").make_settings({"eps_w": 0.5})
    with pytest.raises(ValueError, match="methods.grpo_eb.variant"):
        get_method("grpo_eb").make_settings({"variant": "bleu"})
    assert get_method("rlsd").make_settings({"eps_w": 0.5}).eps_w == 0.5
    assert get_method("rlsd").default_settings().context == "reference"


def test_one_default_per_setting_config_only_overrides():
    """config.yaml's methods block holds only departures from the settings classes' defaults."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for name, values in cfg["methods"].items():
        if name == "run":
            continue
        defaults = get_method(name).defaults
        same = [k for k, v in (values or {}).items() if defaults.get(k) == v]
        assert not same, f"methods.{name} restates defaults {same}"


def test_engines_have_no_objective_string_branches():
    for path in (ROOT / "src" / "rlrt" / "backends").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"objective\s*==|==\s*[\"'](sdpo|srpo|pg)[\"']", text), path
        assert not re.search(r"spec\.name\s*==", text), path


def test_every_objective_and_method_registered_once():
    assert {"pg", "pg_entropy", "sdpo", "srpo"} <= set(OBJECTIVES)
    assert {s.objective for s in METHODS.values()} <= set(OBJECTIVES)


# ---- shape_advantages with a fake teacher: what a second backend would pass --------------------------------------

def _fake_teacher(delta: torch.Tensor, entropy: torch.Tensor | None = None):
    calls = []

    def score(contexts, kind, want_logp, want_entropy):
        calls.append((contexts, kind))
        has = torch.tensor([c is not None for g in contexts for c in g])
        return TeacherScores(has, (OLD + delta) if want_logp else None, entropy if want_entropy else None)

    return score, calls


OLD = torch.full((4, 3), -1.0)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]])
TEXTS = [["a", "b", "c", "d"]]


def test_rlrt_shaping_by_hand():
    """One group r = [1, 0, 1, 0], teacher log-ratio Δ = 0.5 everywhere: A = (r - 0.5)/(std + 1e-6) with
    std = sqrt(1/3); correct rows get A·[(1-λ) + λ·clip(exp(-Δ), 0, 2)] (RLRT: w = exp(-sign(A)Δ)), wrong rows A."""
    spec = get_method("rlrt")
    settings = spec.default_settings()  # λ 0.5, ε_w 1.0, sibling
    score, calls = _fake_teacher(torch.full((4, 3), 0.5))
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    sh = shape_advantages(spec, settings, rewards, TEXTS, ["ref"], OLD, None, MASK, 0, score)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    w = 0.5 + 0.5 * math.exp(-0.5)
    expect = torch.tensor([[a * w] * 3, [-a, -a, 0], [a * w] * 3, [-a, 0, 0]])
    assert torch.allclose(sh.token_adv, expect, atol=1e-6)
    assert calls[0][1] == "sibling" and calls[0][0][0] == ["c", "a", "a", "a"]  # first other correct rollout
    assert sh.plan.pg_rows.all() and not sh.plan.distill_rows.any() and sh.lam == 0.5
    # the teacher's log-ratio is kept on the weighted tokens only (the correct rows' masked tokens)
    assert sh.weighted_rows.tolist() == [True, False, True, False]
    assert torch.equal(sh.delta, torch.tensor([[0.5] * 3, [0.0] * 3, [0.5] * 3, [0.0] * 3]))
    assert get_method("grpo").weight_fn is None
    grpo = shape_advantages(get_method("grpo"), get_method("grpo").default_settings(), rewards, TEXTS, ["r"], OLD,
                            None, MASK, 0)
    assert grpo.delta is None and grpo.weighted_rows is None


def test_rlsd_shaping_by_hand():
    """RLSD: reference context on every row, w = exp(sign(A)Δ) clipped to [0.8, 1.2], λ 0.5 at step 0."""
    spec = get_method("rlsd")
    score, calls = _fake_teacher(torch.full((4, 3), 0.5))
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    sh = shape_advantages(spec, spec.default_settings(), rewards, TEXTS, ["the ref"], OLD, None, MASK, 0, score)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    up, down = 0.5 + 0.5 * min(math.exp(0.5), 1.2), 0.5 + 0.5 * max(math.exp(-0.5), 0.8)
    expect = torch.tensor([[a * up] * 3, [-a * down, -a * down, 0], [a * up] * 3, [-a * down, 0, 0]])
    assert torch.allclose(sh.token_adv, expect, atol=1e-6)
    assert calls[0][1] == "reference" and calls[0][0][0] == ["the ref"] * 4
    assert sh.weighted_rows.all() and torch.equal(sh.delta, 0.5 * MASK)  # RLSD's gate: every row, masked tokens


def test_grpo_eb_entropy_advantage_by_hand():
    """psi = min(alpha H, |A|/kappa) with alpha 0.4, kappa 2: H = 1 -> min(0.4, |A|/2)."""
    spec = get_method("grpo_eb")
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # A = r - 0.25 (no std normalisation)
    ent = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.1, 0.1, 0.1], [1.0, 1.0, 1.0]])
    sh = shape_advantages(spec, spec.default_settings(), rewards, TEXTS, ["r"], OLD, ent, MASK, 0)
    expect = torch.tensor([[0.75 + 0.375] * 3, [-0.25 + 0.125, -0.25 + 0.125, 0],
                           [-0.25 + 0.04] * 3, [-0.25 + 0.125, 0, 0]])
    assert torch.allclose(sh.token_adv, expect, atol=1e-6)
    assert (sh.token_adv[1:][MASK[1:].bool()] < 0).all()  # never flips a negative advantage
    flat = shape_advantages(spec, spec.default_settings(), torch.ones(1, 4), TEXTS, ["r"], OLD, ent, MASK, 0)
    assert torch.equal(flat.token_adv, torch.zeros(4, 3))  # no signal, no entropy term
    loss = shape_advantages(spec, spec.make_settings({"variant": "loss"}), rewards, TEXTS, ["r"], OLD, ent, MASK, 0)
    assert loss.objective == "pg_entropy" and torch.allclose(loss.token_adv[0], torch.full((3,), 0.75))


def test_srpo_plan_routes_and_weights():
    spec = get_method("srpo")
    ent = torch.tensor([[0.0] * 3, [1.0] * 3, [0.0] * 3, [2.0] * 3])
    score, _ = _fake_teacher(torch.zeros(4, 3), ent)
    rewards = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    sh = shape_advantages(spec, spec.make_settings({"beta": 1.0}), rewards, TEXTS, ["r"], OLD, None, MASK, 0, score)
    assert sh.plan.pg_rows.tolist() == [True, False, True, False]
    assert sh.plan.distill_rows.tolist() == [False, True, False, True]
    routed = (MASK * sh.plan.distill_rows[:, None]).bool()
    w = sh.plan.distill_weight[routed]
    raw = torch.tensor([math.exp(-1), math.exp(-1), math.exp(-2)])
    assert torch.allclose(w, raw / raw.mean())


def test_sdpo_plan_masks_rows_without_context():
    spec = get_method("sdpo")
    score, _ = _fake_teacher(torch.zeros(4, 3))
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # row 0 has no *other* correct sibling
    sh = shape_advantages(spec, spec.default_settings(), rewards, TEXTS, ["r"], OLD, None, MASK, 0, score)
    assert sh.plan.distill_rows.tolist() == [False, True, True, True]
    assert sh.plan.loss_mask[0].sum() == 0 and torch.equal(sh.plan.loss_mask[1:], MASK[1:])


def test_teacher_methods_need_a_scorer():
    with pytest.raises(ValueError, match="score_teacher"):
        shape_advantages(get_method("rlrt"), get_method("rlrt").default_settings(), torch.ones(1, 4), TEXTS, ["r"],
                         OLD, None, MASK, 0)
