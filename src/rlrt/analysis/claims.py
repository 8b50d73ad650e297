"""How sure a comparison is: paired differences over seeds x problems, an interval that keeps its level at the
number of seeds a study has, and a verdict.

Every claim of the two papers that the pipeline tests is a *directional* comparison of two arms on the same test
problems (RLRT vs GRPO, RLRT-all vs RLRT, ...), each arm trained with the same seeds. The procedure, fixed before
looking at any number:

* per arm, a (S, P) matrix: S seeds (the same seed indices in both arms: seed s of RLRT and seed s of GRPO start
  from the same weights and see the same questions in the same order) x P test problems, each entry a per-problem
  score (avg@n as a fraction, or an unbiased pass@k);
* the statistic: the mean over seeds and problems of ``a - b`` (paired by seed and problem);
* its 95 % interval (:func:`seed_t`): a t interval over the S per-seed paired means ``m_s = mean_p(a_s - b_s)``
  with S - 1 degrees of freedom, ``mean(m) +- t_{S-1} sd(m) / sqrt(S)``;
* the verdict, for a claim that ``a`` beats ``b`` (``direction=+1``, or loses to it with -1): the interval
  entirely on the claimed side of 0 -> "reproduced"; entirely on the other side -> "not reproduced"; containing
  0 -> "inconclusive".

Why a t interval over seeds. A training seed moves *every* problem's score of a run together (a run is a little
better or worse everywhere), so the S per-seed means are the independent replicates, and their spread ``sd(m)``
(reported per claim as the seed-level sd) holds both that seed-level variance and the sampling noise of the P
problems' avg@n. With S = 3 the percentile bootstrap of the earlier version resampled three values: its
interval is the spread of means of three draws with replacement, which is too narrow by about sqrt(S / (S - 1))
and ignores that sd(m) itself is estimated from 2 degrees of freedom -- a simulation under the null (issue 36)
gave 5-21 % false verdicts at a nominal 5 %. The t interval is exact for normal per-seed means (a mean of 256
problems' scores is close to normal) at any S >= 2, needs no resampling, and tests/test_claims_calibration.py
checks its level by simulation. It treats the test problems as fixed, as the papers do (their claims are about
these benchmarks, not about new problems); a hierarchical model would add nothing the per-seed means do not
carry at S = 3, and a studentized bootstrap of three values is not defined better than the t.

With one seed there is no seed-level variance to estimate: the interval (:func:`problem_t`) is then a t over the
P per-problem paired differences (the within-run sampling noise only), and the table says "1 seed" beside the
verdict: such a verdict says the two *runs* differ, not that the *methods* do.

A correlation claim (RLT's reward rank predicts student accuracy, :func:`pearson_over_seeds`): per seed s the
Pearson r_s of (rank, that seed's students' mean accuracy), Fisher's z_s = atanh(r_s), a t interval over the S
values of z (S - 1 df) mapped back with tanh. Fisher's z makes r's sampling distribution close to normal with a
variance that does not depend on r, so the t over seeds has the right level, and the interval stays in [-1, 1];
averaging r itself is biased toward 0 and its interval can leave [-1, 1]. One seed: the earlier percentile
bootstrap over problems (:func:`bootstrap_pearson`), labelled as problem-level.

:func:`seeds_needed` says how many seeds would make a claim decidable at the effect and seed-level sd measured.
The earlier percentile bootstrap (:func:`paired_bootstrap`) stays only to say which verdicts the change of
interval changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
N_BOOT = 10_000


@dataclass(frozen=True)
class Comparison:
    """A paired difference and its interval. ``diff``, ``lo``, ``hi``, ``se`` are in the scores' units; ``se`` is
    the standard deviation of the bootstrap statistic (the standard error over seeds and problems), so
    ``diff / se`` is the difference in standard errors (the claims issue's learning target: > 3)."""

    diff: float
    lo: float
    hi: float
    n_seeds: int
    n_problems: int
    se: float = float("nan")
    seed_sd: float = float("nan")  # sd of the per-seed statistics (NaN with one seed)
    method: str = "percentile bootstrap"  # how the interval was made (shown in the table)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, alpha: float = 0.05,
                     seed: int = 0) -> Comparison:
    """The earlier interval, kept only to report which verdicts :func:`seed_t` changed (and, through
    :func:`bootstrap_pearson`, the 1-seed reward-rank interval): the mean paired difference ``a - b`` of two (S, P)
    score matrices and its (1 - alpha) percentile interval, resampling seeds (rows) and problems (columns)
    independently with replacement. Too narrow at 2-3 seeds (module docstring): never a verdict of its own.

    Raises ValueError when the shapes differ, a matrix is empty, or a score is not finite."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two (seeds, problems) matrices of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    d = a - b
    S, P = d.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, S, size=(n_boot, S))
    cols = rng.integers(0, P, size=(n_boot, P))
    # mean over the resampled seeds x problems grid = mean over seeds of (mean over problems of the row)
    stats = np.array([d[r][:, c].mean() for r, c in zip(rows, cols)])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return Comparison(float(d.mean()), float(lo), float(hi), S, P,
                      float(stats.std(ddof=1)) if n_boot > 1 else float("nan"))


def verdict(lo: float, hi: float, direction: int = 1) -> str:
    """The verdict for a claim that the difference is > 0 (``direction=+1``) or < 0 (-1), given its interval."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    lo, hi = (lo, hi) if direction == 1 else (-hi, -lo)
    if lo > 0:
        return REPRODUCED
    if hi < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def _ranks_and_scores(x, y) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (R,) and ``y`` (R, P) or (S, R, P) as float arrays, ``y`` as (S, R, P); refused unless R >= 3, P >= 1
    and every value is finite."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if y.ndim == 2:
        y = y[None]
    if y.ndim != 3 or y.shape[1] != x.shape[0] or x.shape[0] < 3 or y.shape[2] == 0:
        raise ValueError(f"need >= 3 ranks and a (ranks, problems) or (seeds, ranks, problems) array, got "
                         f"{x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("scores must be finite")
    return x, y


def bootstrap_pearson(x: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT, alpha: float = 0.05,
                      seed: int = 0) -> Comparison:
    """Pearson r between ``x`` (R,) (e.g. the reward rank) and the mean accuracy of ``y`` per rank, with a
    percentile interval. ``y`` is (R, P) (ranks x problems: problems are resampled) or (S, R, P) (seeds x ranks x
    problems: seeds and problems are resampled independently, as in :func:`paired_bootstrap`). ``n_seeds`` reports
    S (1 for a 2-D ``y``), ``n_problems`` P. Draws where the resampled accuracies are all equal (r undefined) are
    left out; an undefined point estimate gives NaN bounds."""
    x, y = _ranks_and_scores(x, y)
    S, R, P = y.shape

    def r(v: np.ndarray) -> float:
        if np.std(v) == 0 or np.std(x) == 0:
            return float("nan")
        return float(np.corrcoef(x, v)[0, 1])

    rng = np.random.default_rng(seed)
    per_seed = y  # (S, R, P)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, S, size=S)
        cols = rng.integers(0, P, size=P)
        draws[i] = r(per_seed[rows][:, :, cols].mean(axis=(0, 2)))
    draws = draws[np.isfinite(draws)]
    point = r(y.mean(axis=(0, 2)))
    if not draws.size or not np.isfinite(point):
        return Comparison(point, float("nan"), float("nan"), S, P)
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Comparison(point, float(lo), float(hi), S, P)


SEED_T = "t over seeds"
PROBLEM_T = "1 seed: t over problems"


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two (seeds, problems) matrices of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    return a, b


def mean_t(values: np.ndarray, alpha: float = 0.05):
    """(mean, lo, hi, se) of the (1 - alpha) t interval of the mean of ``values`` along its last axis (n values,
    n - 1 df): floats for a 1-D input, arrays of the leading shape otherwise (the calibration test calls it on
    (replicates, seeds) at once). One value: its mean with NaN bounds and se; all equal: a zero-width interval.
    Raises ValueError when the last axis is empty."""
    v = np.asarray(values, dtype=float)
    n = v.shape[-1] if v.ndim else 0
    if n == 0:
        raise ValueError("no values")
    m = v.mean(axis=-1)
    if n < 2:
        nan = np.full_like(m, np.nan)
        out = (m, nan, nan, nan)
    else:
        se = v.std(axis=-1, ddof=1) / np.sqrt(n)
        h = float(_stats.t.ppf(1 - alpha / 2, n - 1)) * se
        out = (m, m - h, m + h, se)
    return tuple(float(x) for x in out) if v.ndim == 1 else out


def fisher_t(r: np.ndarray, alpha: float = 0.05):
    """(r, lo, hi, se_z): the t interval of the mean of Fisher's z = atanh(r) along the last axis (correlations of
    the seeds, n - 1 df), mapped back with tanh; r clipped to |r| <= 1 - 1e-9 (a perfect r has infinite z)."""
    z = np.arctanh(np.clip(np.asarray(r, dtype=float), -1 + 1e-9, 1 - 1e-9))
    mz, lo, hi, se = mean_t(z, alpha)
    return np.tanh(mz), np.tanh(lo), np.tanh(hi), se


def seed_t(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> Comparison:
    """Mean paired difference ``a - b`` of two (S, P) score matrices with the (1 - alpha) t interval over the S
    per-seed paired means (S - 1 df); ``seed_sd`` is their sd. One seed: :func:`problem_t`.

    Raises ValueError when the shapes differ, a matrix is empty, or a score is not finite."""
    a, b = _check_pair(a, b)
    S, P = a.shape
    if S == 1:
        return problem_t(a[0], b[0], alpha)
    m = (a - b).mean(axis=1)  # (S,) per-seed paired means
    diff, lo, hi, se = mean_t(m, alpha)
    return Comparison(diff, lo, hi, S, P, se, float(m.std(ddof=1)), SEED_T)


def problem_t(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, label: str = PROBLEM_T) -> Comparison:
    """One seed: the mean paired difference of two (P,) score vectors, t interval over the P per-problem
    differences (P - 1 df). No seed-level sd (NaN): the interval holds the sampling noise within the run only."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two score vectors of one length, got {a.shape} and {b.shape}")
    diff, lo, hi, se = mean_t(a - b, alpha)
    return Comparison(diff, lo, hi, 1, a.size, se, float("nan"), label)


def welch_t(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, label: str = "1 seed: Welch t over problems"
            ) -> Comparison:
    """Unpaired: mean(a) - mean(b) of two samples of independent units (e.g. per-problem flip rates of two
    checkpoints, whose hard problems differ) with Welch's t interval (Welch-Satterthwaite df). NaNs are dropped;
    fewer than 2 units on a side gives NaN bounds. ``n_problems`` is the smaller sample size."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not a.size or not b.size:
        raise ValueError("both samples need a finite value")
    diff = float(a.mean() - b.mean())
    n = min(a.size, b.size)
    if a.size < 2 or b.size < 2:
        return Comparison(diff, float("nan"), float("nan"), 1, n, float("nan"), float("nan"), label)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(va + vb))
    if se == 0:
        return Comparison(diff, diff, diff, 1, n, 0.0, float("nan"), label)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    h = float(_stats.t.ppf(1 - alpha / 2, df)) * se
    return Comparison(diff, diff - h, diff + h, 1, n, se, float("nan"), label)


def seeds_needed(diff: float, seed_sd: float, alpha: float = 0.05, max_seeds: int = 1000) -> float:
    """The fewest seeds S >= 2 whose t interval (S - 1 df), at the measured difference ``diff`` and per-seed sd
    ``seed_sd``, would exclude 0: the smallest S with ``t_{S-1} seed_sd / sqrt(S) < |diff|``. NaN when either is
    not finite or diff is 0; inf when more than ``max_seeds`` would be needed. A planning number at the point
    estimates, not a power calculation (at that S the verdict comes out decided about half the time)."""
    if not (np.isfinite(diff) and np.isfinite(seed_sd)) or diff == 0:
        return float("nan")
    if seed_sd == 0:
        return 2.0
    S = np.arange(2, max_seeds + 1)
    ok = _stats.t.ppf(1 - alpha / 2, S - 1) * seed_sd / np.sqrt(S) < abs(diff)
    return float(S[ok][0]) if ok.any() else float("inf")


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of ``x`` (R,) with each row of ``y`` (S, R); NaN where a row (or x) is constant."""
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((xc ** 2).sum() * (yc ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (yc * xc).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def pearson_over_seeds(x: np.ndarray, y: np.ndarray, alpha: float = 0.05, n_boot: int = N_BOOT,
                       seed: int = 0) -> Comparison:
    """Pearson r between ``x`` (R,) (the reward rank) and the mean accuracy per rank, over seeds: ``y`` is
    (S, R, P). Per seed r_s, Fisher z_s = atanh(r_s) (clipped to |r| <= 1 - 1e-9), the t interval of mean z over
    the seeds whose r is defined (S' - 1 df), mapped back with tanh; ``seed_sd`` is the sd of r_s. One seed (or
    one defined r_s): :func:`bootstrap_pearson` over problems, labelled so."""
    x, y = _ranks_and_scores(x, y)
    S, R, P = y.shape
    r = pearson_rows(x, y.mean(axis=2))
    r = r[np.isfinite(r)]
    if r.size < 2:
        c = bootstrap_pearson(x, y, n_boot=n_boot, alpha=alpha, seed=seed)
        label = "1 seed: bootstrap over problems" if S == 1 else f"{r.size} of {S} seeds define r: bootstrap"
        return Comparison(c.diff, c.lo, c.hi, S, P, c.se, float("nan"), label)
    point, lo, hi, se = fisher_t(r, alpha)
    return Comparison(float(point), float(lo), float(hi), S, P, float(se), float(r.std(ddof=1)),
                      "Fisher z, t over seeds")


# ---- claims 9-12: the reflection-injection (RLRT Fig 6) and distribution-shift (Fig 7) studies ----

def _hard_flips(records, run: str | None, step: int | None, position: str):
    """Per-problem flip->R rates (the fraction of a problem's wrong hard-bin rollouts that the injection made
    right: the rate of :func:`rlrt.analysis.injection.flip_table`, per problem) at one checkpoint and position,
    as a pandas Series indexed by problem. ``step`` 0 is the untrained checkpoint, whatever run labels it."""
    r = records[(records["bin"] == "hard") & (records["before"] == 0) & (records["position"] == position)]
    r = r[r["step"] == step] if step == 0 else r[(r["run"] == run) & (r["step"] == step)]
    if step == 0 and r["run"].nunique() > 1:  # the same untrained checkpoint studied under several labels
        r = r[r["run"] == ("base" if "base" in set(r["run"]) else sorted(set(r["run"]))[0])]
    return (r["after"] == 1).groupby(r["problem"]).mean()


def flip_positions(records, run: str, pos_a: str, pos_b: str, alpha: float = 0.05) -> Comparison:
    """Claim 9 (Fig 6a, step 0): flip->R at ``pos_a`` (max_kl) minus at ``pos_b`` (random), paired by problem
    (each wrong rollout is injected at every position), t interval over the problems both positions cover.
    ``records``: the reflection study's one-row-per-continuation table (``run, step, problem, rollout, bin,
    position, before, after``). ``run`` "base" means the untrained checkpoint (step 0)."""
    step = 0 if run == "base" else int(records.loc[records["run"] == run, "step"].max())
    a, b = _hard_flips(records, run, step, pos_a), _hard_flips(records, run, step, pos_b)
    common = a.index.intersection(b.index)
    if not len(common):
        raise ValueError(f"no hard-bin problem has flips at both {pos_a} and {pos_b} (run {run}, step {step})")
    return problem_t(a[common].to_numpy(), b[common].to_numpy(), alpha,
                     label=f"1 seed: paired t over {len(common)} problems")


def flip_checkpoints(records, run: str, position: str, alpha: float = 0.05) -> tuple[Comparison, int]:
    """Claim 10 (Fig 6a): ``run``'s flip->R at ``position`` at its last checkpoint minus at step 0 (the untrained
    model), Welch t over problems (each checkpoint's hard bin holds its own problems: unpaired). Returns the
    comparison and the last step."""
    steps = records.loc[records["run"] == run, "step"]
    if not len(steps):
        raise ValueError(f"the reflection study has no checkpoint of {run!r}")
    last = int(steps.max())
    if last == 0:
        raise ValueError(f"the reflection study has only step 0 of {run!r}")
    a, b = _hard_flips(records, run, last, position), _hard_flips(records, run, 0, position)
    if not len(a) or not len(b):
        raise ValueError(f"no wrong hard-bin rollout at step {last if not len(a) else 0} of {run!r}")
    return welch_t(a.to_numpy(), b.to_numpy(), alpha, label=f"1 seed: Welch t over {len(a)} / {len(b)} problems"
                   ), last


def shift_prompts(shift: dict, run_a: str, run_b: str, stat: str, threshold: float | None = None,
                  alpha: float = 0.05) -> tuple[Comparison, str]:
    """Claims 11, 12 (Fig 7b, c): per hard prompt (the same prompts for every run), ``run_a`` minus ``run_b`` of
    ``stat``: ``overlap`` = the mean top-K overlap with the base at the largest k over the prompt's high-divergence
    positions; ``tail`` = the fraction of those positions whose new top-1 had base probability below ``threshold``
    (the configured tail threshold nearest to it in log scale). Paired t over the prompts where both runs have a
    high-divergence position. ``shift``: the study's JSON with ``results[run]["per_prompt"]`` (lists over
    prompts: ``overlap_k`` and ``tail`` (prompts x thresholds), NaN where a prompt has no high position). Returns
    the comparison and a note on what was compared."""
    res = shift.get("results") or {}
    for run in (run_a, run_b):
        if "per_prompt" not in (res.get(run) or {}):
            raise ValueError(f"the shift study's output has no per-prompt statistics for {run!r} (an earlier code "
                             "version wrote it: rerun analysis_shift)")
    if stat == "overlap":
        a = np.asarray(res[run_a]["per_prompt"]["overlap_k"], dtype=float)
        b = np.asarray(res[run_b]["per_prompt"]["overlap_k"], dtype=float)
        note = f"top-{shift['ks'][-1]} overlap with the base at JS > {shift['js_threshold']}"
    elif stat == "tail":
        th = np.asarray(shift["tail_thresholds"], dtype=float)
        i = int(np.argmin(np.abs(np.log10(th) - np.log10(threshold))))
        a = np.asarray(res[run_a]["per_prompt"]["tail"], dtype=float)[:, i]
        b = np.asarray(res[run_b]["per_prompt"]["tail"], dtype=float)[:, i]
        note = f"top-1 with p_base < {th[i]:g} among JS > {shift['js_threshold']} positions"
    else:
        raise ValueError(f"unknown shift statistic {stat!r}")
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        raise ValueError(f"no prompt has a high-divergence position under both {run_a} and {run_b}")
    return problem_t(a[ok], b[ok], alpha, label=f"1 seed: paired t over {int(ok.sum())} prompts"), note
