"""Explore/exploit marker statistics (RLRT Appendix D, Table 2, Fig 3).

Two corpora are built from trajectories (one correct and one incorrect per problem): at every position the token
``argmax_v D̂_t(v)`` joins the *explore* corpus and ``argmin_v D̂_t(v)`` the *exploit* corpus. Token types are
then scored with the smoothed log-odds z-score of Monroe et al. (2008) in the form of the paper's Eq. 8:

    δ_v = log((e_v + α) / (E - e_v + α)) - log((x_v + α) / (X - x_v + α)),
    Var(δ_v) ≈ 1/(e_v + α) + 1/(x_v + α),        z_v = δ_v / sqrt(Var(δ_v)),     α = 0.5,

with ``e_v, x_v`` the counts of ``v`` in the explore / exploit corpus and ``E, X`` the corpus sizes (all
positions, i.e. before the alphabetic restriction below). ``z_v >> 0``: explore marker (teacher-suppressed);
``z_v << 0``: exploit marker (teacher-favoured).

Scored types: the decoded token, stripped of surrounding whitespace and lower-cased, kept when it is ASCII
alphabetic with ``min_chars..max_chars`` characters, occurs at least ``min_count`` times in the two corpora
combined and (optionally) is a whole word of the texts the model reads and writes (not a BPE fragment). Markers: ``|z_v| >= z_threshold`` and not a stop word (scikit-learn's ``ENGLISH_STOP_WORDS`` -- the
paper used NLTK's list, which needs a data download -- plus a configurable domain list).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.special import logit

# Discourse categories of the paper's Table 2 (both directions); a marker outside them is "Other".
PAPER_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Reflection": ("wait", "back", "hmm"),
    "Deliberation verb": ("let", "denote", "write", "note", "think", "consider", "look", "analyze"),
    "Metacognitive verb": ("check", "recall", "see"),
    "Alternative marker": ("another", "different", "alternative", "alternatively"),
    "Logical connective": ("therefore", "via", "similarly"),
    "Contrastive": ("still",),
    "Epistemic hedge": ("maybe", "perhaps"),
    "Causal pivot": ("since",),
    "Decision verb": ("determine", "define", "apply", "ensure", "means", "verify", "yield", "evaluate", "compute",
                      "conclude"),
    "Verdict adjective": ("valid", "incorrect", "correct", "right", "invalid"),
    "Consequential conn.": ("thus", "however", "though", "although"),
    "Finalization": ("final", "finally", "eventually"),
    "Outcome noun": ("conclusion", "result", "results"),
    "Implication": ("leads", "implies"),
    "Progression": ("continue",),
    "Specification": ("defined",),
}
CATEGORY_OF = {w: c for c, words in PAPER_CATEGORIES.items() for w in words}
_WORD = re.compile(r"[A-Za-z]+")

COLUMNS = ["token", "direction", "category", "z", "delta", "n_explore", "n_exploit", "total", "log2_ratio",
           "stopword", "marker"]


def monroe_z(e: np.ndarray, x: np.ndarray, E: float, X: float, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed log-odds ``(δ_v, z_v)`` of Eq. 8 for arrays of counts ``e`` (explore) and ``x`` (exploit).

    ``log((c + α) / (N - c + α)) = logit((c + α) / (N + 2α))``. Shapes: e, x (K,) -> two (K,) float arrays.
    """
    e, x = np.asarray(e, dtype=float), np.asarray(x, dtype=float)
    delta = logit((e + alpha) / (E + 2 * alpha)) - logit((x + alpha) / (X + 2 * alpha))
    var = 1.0 / (e + alpha) + 1.0 / (x + alpha)
    return delta, delta / np.sqrt(var)


def token_type(text: str, min_chars: int = 3, max_chars: int = 15) -> str | None:
    """The scored type of a decoded token: stripped, lower-cased, ASCII alphabetic of min..max chars; else None."""
    s = text.strip().lower()
    if min_chars <= len(s) <= max_chars and s.isascii() and s.isalpha():
        return s
    return None


def stop_words(domain: Iterable[str] = ()) -> frozenset[str]:
    """scikit-learn's English stop words (318 words, ships with the package) plus a domain list (lower-cased)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | frozenset(w.lower() for w in domain)


def text_words(texts: Iterable[str]) -> frozenset[str]:
    """Lower-cased alphabetic runs of ``texts``: the whole words that occur in them."""
    return frozenset(w.lower() for t in texts for w in _WORD.findall(t))


def score_tokens(
    explore: Sequence[str], exploit: Sequence[str], *, alpha: float = 0.5, min_count: int = 30,
    z_threshold: float = 3.0, stopwords: Iterable[str] = frozenset(), min_chars: int = 3, max_chars: int = 15,
    words: frozenset[str] | None = None,
) -> pd.DataFrame:
    """Score every eligible token type of the two corpora (decoded token strings, one per position).

    ``words``: if given, only types in it are scored -- a sub-word fragment of the BPE vocabulary (``wri`` of
    ``write``) is a tokenizer artifact, not a word (the paper removes such artifacts with its domain list).

    Returns one row per scored type (columns ``COLUMNS``), sorted by z descending: ``direction`` is explore
    (z > 0) or exploit (z < 0), ``log2_ratio = log2((e + α)/(x + α))`` (Fig 3's x axis, smoothed so a zero count
    stays finite), ``marker`` = ``|z| >= z_threshold`` and not a stop word.
    """
    E, X = len(explore), len(exploit)
    ce = Counter(t for t in (token_type(s, min_chars, max_chars) for s in explore) if t)
    cx = Counter(t for t in (token_type(s, min_chars, max_chars) for s in exploit) if t)
    types = sorted(t for t in set(ce) | set(cx) if ce[t] + cx[t] >= min_count and (words is None or t in words))
    if not types:
        return pd.DataFrame(columns=COLUMNS)
    e = np.array([ce[t] for t in types], dtype=float)
    x = np.array([cx[t] for t in types], dtype=float)
    delta, z = monroe_z(e, x, E, X, alpha)
    stop = frozenset(stopwords)
    df = pd.DataFrame({
        "token": types,
        "direction": np.select([z > 0, z < 0], ["explore", "exploit"], "neutral"),
        "category": [CATEGORY_OF.get(t, "Other") for t in types],
        "z": z, "delta": delta,
        "n_explore": e.astype(int), "n_exploit": x.astype(int), "total": (e + x).astype(int),
        "log2_ratio": np.log2((e + alpha) / (x + alpha)),
        "stopword": [t in stop for t in types],
    })
    df["marker"] = (df["z"].abs() >= z_threshold) & ~df["stopword"]
    return df.sort_values("z", ascending=False, kind="stable").reset_index(drop=True)[COLUMNS]


def markers_markdown(df: pd.DataFrame, caption: str = "") -> str:
    """Table 2 layout: one row per (direction, category), markers ranked by |z| with their z in parentheses."""
    lines = [caption, ""] if caption else []
    lines += ["| Direction | Category | Tokens (z) |", "|---|---|---|"]
    m = df[df["marker"]] if len(df) else df
    if not len(m):
        lines.append("| - | - | no token type passed the filters |")
        return "\n".join(lines) + "\n"
    order = list(PAPER_CATEGORIES) + ["Other"]
    for direction in ("explore", "exploit"):
        d = m[m["direction"] == direction]
        first = True
        for cat in order:
            c = d[d["category"] == cat]
            if not len(c):
                continue
            c = c.reindex(c["z"].abs().sort_values(ascending=False, kind="stable").index)
            toks = ", ".join(f"{t} ({z:.1f})" for t, z in zip(c["token"], c["z"]))
            lines.append(f"| {direction.capitalize() if first else ''} | {cat} | {toks} |")
            first = False
    return "\n".join(lines) + "\n"
