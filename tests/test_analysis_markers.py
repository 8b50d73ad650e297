"""Monroe et al. smoothed log-odds z-scores by hand, token-type filter, stop words, Table 2 layout."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlrt.analysis.markers import markers_markdown, monroe_z, score_tokens, stop_words, text_words, token_type


def test_monroe_z_matches_a_hand_computation():
    e, x, E, X, a = 40, 10, 1000, 1200, 0.5
    delta = math.log((e + a) / (E - e + a)) - math.log((x + a) / (X - x + a))
    z = delta / math.sqrt(1 / (e + a) + 1 / (x + a))
    d, zz = monroe_z(np.array([e]), np.array([x]), E, X, a)
    assert d[0] == pytest.approx(delta, rel=1e-12)
    assert zz[0] == pytest.approx(z, rel=1e-12)
    assert z == pytest.approx(4.5179, abs=1e-4)  # the number itself, so a sign or variance slip shows


def test_monroe_z_symmetry_and_zero_counts():
    d, z = monroe_z(np.array([5, 0, 7]), np.array([0, 5, 7]), 100, 100)
    assert z[0] == pytest.approx(-z[1]) and z[0] > 0
    assert z[2] == pytest.approx(0.0)
    assert np.isfinite(d).all()


def test_token_type_filter():
    assert token_type(" Wait") == "wait"
    assert token_type("Check\n") == "check"
    assert token_type("ab") is None  # too short
    assert token_type("x" * 16) is None  # too long
    assert token_type("x" * 15) == "x" * 15
    assert token_type("12a") is None and token_type("é té") is None and token_type("re-do") is None
    assert token_type("<think>") is None
    assert token_type("ab", min_chars=2) == "ab"


def test_stop_words_include_sklearn_and_domain():
    s = stop_words(["Boxed"])
    assert {"the", "and", "boxed"} <= s
    assert "wait" not in s and "check" not in s


def test_score_tokens_counts_z_and_markers():
    explore = [" wait"] * 30 + [" the"] * 20 + [" check"] * 12 + ["7"] * 38
    exploit = [" final"] * 30 + [" the"] * 22 + [" check"] * 10 + [" rare"] * 2 + ["+"] * 36
    df = score_tokens(explore, exploit, alpha=0.5, min_count=5, z_threshold=3.0, stopwords=stop_words(),
                      min_chars=3, max_chars=15)
    assert set(df["token"]) == {"wait", "the", "check", "final"}  # "rare" under min_count, "7"/"+" not alphabetic
    row = df.set_index("token").loc["wait"]
    _, z = monroe_z(np.array([30]), np.array([0]), 100, 100, 0.5)
    assert row["z"] == pytest.approx(z[0]) and row["direction"] == "explore" and row["marker"]
    assert row["log2_ratio"] == pytest.approx(math.log2(30.5 / 0.5))
    fin = df.set_index("token").loc["final"]
    assert fin["direction"] == "exploit" and fin["marker"] and fin["category"] == "Finalization"
    the = df.set_index("token").loc["the"]
    assert the["stopword"] and not the["marker"]  # stop word
    chk = df.set_index("token").loc["check"]
    assert abs(chk["z"]) < 3 and not chk["marker"] and chk["category"] == "Metacognitive verb"
    assert list(df["z"]) == sorted(df["z"], reverse=True)


def test_markdown_groups_by_direction_and_category():
    explore = [" wait"] * 30 + [" hmm"] * 40 + ["x"] * 30
    exploit = [" final"] * 30 + [" thus"] * 30 + ["x"] * 40
    df = score_tokens(explore, exploit, min_count=5, stopwords=frozenset())
    md = markers_markdown(df, "cap")
    assert md.startswith("cap")
    lines = [ln for ln in md.splitlines() if ln.startswith("| Explore") or ln.startswith("| Exploit")]
    assert lines[0].startswith("| Explore | Reflection |") and "wait (" in lines[0] and "hmm (" in lines[0]
    assert lines[1].startswith("| Exploit | Consequential conn. | thus (")
    assert any(ln.startswith("|  | Finalization | final (") for ln in md.splitlines())
    empty = markers_markdown(score_tokens(["a"], ["b"], min_count=5), "")
    assert "no token type passed" in empty


def test_words_only_drops_bpe_fragments():
    words = text_words(["Let me write it. <think>", "So the answer is \\boxed{3}."])
    assert {"write", "think", "answer", "boxed", "let"} <= words and "wri" not in words
    explore = [" wri"] * 20 + [" write"] * 20 + ["7"] * 60
    exploit = [" answer"] * 20 + ["+"] * 80
    kept = score_tokens(explore, exploit, min_count=5, words=words)
    assert set(kept["token"]) == {"write", "answer"}
    assert set(score_tokens(explore, exploit, min_count=5)["token"]) == {"wri", "write", "answer"}
