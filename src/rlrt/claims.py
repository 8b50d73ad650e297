"""Which headline claims of the two papers the pipeline tests, and which runs each one compares: one definition
for ``rules/claims.smk`` (which seeded runs and evaluations to make) and ``rlrt.stages.claims`` (what to compare).
The statistics live in :mod:`rlrt.analysis.claims`.

Every claim is a list of *rows*. A comparison row is arm ``a`` vs arm ``b`` on the same test problems, each arm
trained with seed indices 0 .. ``claims.seeds`` - 1 (seed 0 is the plain run of the DAG, seed k > 0 the run
``<run>+seed=<k>``: :func:`rlrt.plan.seeded`), with the direction the paper claims (+1: a beats b, -1: a loses
to b). A correlation row (claim 8) is the reward-rank study's students over the same seeds. An arm names

* ``kind``: ``eval`` (``eval/<backbone>/<run>.json``: avg@n per problem), ``passk`` (``eval_passk/...``: pass@k
  at the row's ``k`` per problem), ``rlt`` (``rlt/eval/<student>/<model>/arithmetic.json``: avg@n) or ``rltcd``
  (the same model's ``countdown.json``);
* ``backbone`` (an RL backbone, or the RLT student) and ``run`` (run id or RLT model; ``base`` = the untrained
  backbone, which has no seed: its one evaluation stands for every seed).

The claims, in the papers' words (RLRT = arXiv 2605.10781, RLT = arXiv 2506.08388): 1, 2 RLRT beats GRPO / RLSD on
the base models (RLRT Table 1); 3 RLRT-all loses to gated RLRT (Fig 9a); 4 a larger eps_w is better (Fig 9b); 5
SDPO / SRPO collapse on base models (App. F.2; "not run at this scale" where methods.skip leaves them off, as
paper.yaml does); 6 RLRT leads GRPO / GRPO+EB / DIVER in pass@k at k = 1, 16, 256 on Fig 8's splits (each k capped
at Fig 8's n); 7 RLT's raw explanations distil better students (RLT Table 1); 8 the reward rank predicts student
accuracy (RLT Fig 5 right); 9 reflection injected at max-KL positions flips wrong->right more often than at random
ones, and 10 RLRT's flip rate rises over training (RLRT Fig 6a); 11 RLRT keeps less of the base's top-k and 12
promotes more base-tail tokens than GRPO (Fig 7b, c) -- 9-12 from the analysis studies (seed 0's checkpoints: one
seed, intervals over problems / prompts); 13 RLRT beats GRPO / RLSD on the post-trained backbones of
``claims.backbones`` (Tables 1, 3); 14 GRPO from the RLT student beats GRPO from the reference student (RLT Table
2); 15 the student of RLT's zero-shot countdown explanations beats direct countdown RL and the reference student
(RLT Fig 5 left). Each row names its paper number's key (``paper``) in config/paper_numbers.yaml.

Claim 0 is not a paper's claim but the precondition of every other one, the claims issue's learning check: GRPO
beats the untrained backbone on each claims backbone -- one row over every test split's problems pooled (as the
other claims are scored), then one row per split (``split``) -- so the table says how many standard errors RL
moves held-out accuracy by at this scale.

A claim whose ingredients the config does not plan (no ``experiments.fig8``, no ``rlt`` block, ...) is one row
with ``missing`` saying what is not configured, so the table shows it rather than dropping it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rlrt.plan import plain_runs, seeded, sweep_runs

__all__ = ["Arm", "ClaimRow", "claim_rows", "claim_runs", "claim_rlt_models", "claim_files", "claims_inputs",
           "claims_plan", "planned_runs"]


@dataclass(frozen=True)
class Arm:
    kind: str  # eval | passk | rlt
    backbone: str
    run: str

    def label(self) -> str:
        return f"{self.backbone} {self.run}"


@dataclass(frozen=True)
class ClaimRow:
    claim: int  # 1..8, the numbering; 0 = the learning check (GRPO > the untrained backbone)
    text: str  # the paper's claim, in a few words
    source: str  # where the paper makes it
    where: str  # the backbone / setting of this row
    a: Arm | None = None
    b: Arm | None = None
    direction: int = 1
    metric: str = "avg@n"  # avg@n | pass@k (the largest k) | pearson_r
    arms: tuple[Arm, ...] = field(default_factory=tuple)  # correlation rows: one arm per rank, in rank order
    missing: str | None = None  # why this claim cannot be tested under the config
    split: str | None = None  # score one test split only (None: every test split's problems, one after another)
    splits: tuple[str, ...] | None = None  # score these test splits' problems, one after another (claim 6: Fig 8's)
    k: int | None = None  # pass@k rows: this k (None: the largest k the evaluation reports)
    paper: str | None = None  # the key of the paper's own number in config/paper_numbers.yaml
    # analysis rows (claims 9-12: Fig 6 / Fig 7 studies, seed 0's checkpoints): the study's output file under the
    # results folder and what to compare (rlrt.stages.claims reads them)
    study: str | None = None
    spec: tuple[tuple[str, Any], ...] = ()

    def all_arms(self) -> list[Arm]:
        return [x for x in (self.a, self.b) if x is not None] + list(self.arms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _claims_backbones(cfg: dict[str, Any], base: bool) -> list[str]:
    """claims.backbones of kind ``base`` (base=True: claims 0-2, 4, 5) or post-trained (False: claim 13)."""
    kinds = {b: (cfg.get("backbones") or {}).get(b, {}).get("kind") for b in (cfg.get("claims") or {}).get(
        "backbones") or []}
    return [b for b, kind in kinds.items() if (kind == "base") == base]


def _base_backbones(cfg: dict[str, Any]) -> list[str]:
    return _claims_backbones(cfg, True)


def paper_model(cfg: dict[str, Any], backbone: str) -> str:
    """The paper's model a backbone is (paper scale) or stands in for (``stand_in_for``, the embedded default)."""
    return ((cfg.get("backbones") or {}).get(backbone) or {}).get("stand_in_for") or backbone


#: Fig 8's k values the paper reads (RLRT Sec. 6.4: "at every k from 1 to 256")
FIG8_KS = (1, 16, 256)
#: Fig 7(c)'s base-probability threshold the paper quotes ("under 10^-3 ... over 10x as often")
TAIL_THRESHOLD = 1e-3


def claim_rows(cfg: dict[str, Any]) -> list[ClaimRow]:
    """Every row of the claims table, in claim order (see the module docstring)."""
    exp = cfg.get("experiments") or {}
    base = _base_backbones(cfg)
    rows: list[ClaimRow] = []

    def key(claim, b, ra, rb):
        return f"{claim}/{paper_model(cfg, b)}/{ra}-{rb}"

    def pair(claim, text, source, b, ra, rb, direction=1, kind="eval", metric="avg@n", splits=None, where=None,
             k=None, paper=None):
        """A comparison row; ``paper``: its key in config/paper_numbers.yaml (default ``<claim>/<model>/<a>-<b>``)."""
        rows.append(ClaimRow(claim, text, source, where or b, Arm(kind, b, ra), Arm(kind, b, rb), direction, metric,
                             splits=splits, k=k, paper=paper or key(claim, b, ra, rb)))

    plain = plain_runs(cfg)  # once: the plain plan every row is checked against

    def planned(b: str, run: str) -> bool:
        return run in plain.get(b, [])

    def missing(claim, text, source, why, paper=None):
        rows.append(ClaimRow(claim, text, source, "-", missing=why, paper=paper))

    # 0: the learning check (the claims issue's target): GRPO beats the untrained backbone, on every claims backbone
    text, source = "RL learns: GRPO > the untrained backbone", "learning check"
    todo = [b for b in (cfg.get("claims") or {}).get("backbones") or [] if planned(b, "grpo")]
    splits = list((cfg.get("data") or {}).get("test_splits") or [])
    for b in todo:
        # every held-out split's problems pooled (as claims 1-5 are scored), then each split on its own
        for split in [None] + (splits if len(splits) > 1 else []):
            rows.append(ClaimRow(0, text, source, f"{b}, {split or ' + '.join(splits)}", Arm("eval", b, "grpo"),
                                 Arm("eval", b, "base"), split=split,
                                 paper=None if split else key(0, b, "grpo", "base")))
    if not todo:
        missing(0, text, source, "claims.backbones trains no grpo")
    # 1, 2: RLRT beats GRPO and RLSD on the base models (RLRT Table 1)
    for claim, other, name in ((1, "grpo", "GRPO"), (2, "rlsd", "RLSD")):
        text, source = f"RLRT > {name} on base models", "RLRT Table 1"
        todo = [b for b in base if planned(b, "rlrt") and planned(b, other)]
        for b in todo:
            pair(claim, text, source, b, "rlrt", other)
        if not todo:
            missing(claim, text, source, f"claims.backbones trains no rlrt and {other} pair on a base model")
    # 3: RLRT-all (no correctness gate) is worse than gated RLRT (Fig 9a)
    text, source = "RLRT-all < gated RLRT", "RLRT Fig 9a"
    gate = exp.get("gate_ablation") or {}
    if gate and planned(gate["backbone"], "rlrt") and planned(gate["backbone"], "rlrt_all"):
        pair(3, text, source, gate["backbone"], "rlrt_all", "rlrt", direction=-1)
    else:
        missing(3, text, source, "experiments.gate_ablation does not train rlrt and rlrt_all")
    # 4: a larger eps_w is better for RLRT on base models (Fig 9b): the sweep's largest vs smallest value
    text, source = "larger eps_w better for RLRT on base models", "RLRT Fig 9b"
    sweeps = [sw for sw in exp.get("sweeps") or [] if sw["method"] == "rlrt" and sw["key"] == "eps_w"]
    done = False
    for sw in sweeps:
        order = sorted(range(len(sw["values"])), key=lambda i: sw["values"][i])
        for b in [b for b in base if b in sw["backbones"]]:
            runs = sweep_runs(cfg, sw, b)
            hi, lo = runs[order[-1]], runs[order[0]]
            if hi != lo:
                rows.append(ClaimRow(4, text, source, f"{b} (eps_w {sw['values'][order[-1]]} vs "
                                     f"{sw['values'][order[0]]})", Arm("eval", b, hi), Arm("eval", b, lo),
                                     paper=key(4, b, "eps_w-large", "small")))
                done = True
    if not done:
        missing(4, text, source, "no experiments.sweeps entry sweeps rlrt's eps_w on a claims backbone")
    # 5: SDPO and SRPO collapse on base models (App. F.2): below the untrained backbone
    text, source = "SDPO / SRPO collapse on base models (below the untrained model)", "RLRT App. F.2"
    todo = [(b, m) for b in base for m in ("sdpo", "srpo") if planned(b, m)]
    for b, m in todo:
        rows.append(ClaimRow(5, text, source, f"{b} {m}", Arm("eval", b, m), Arm("eval", b, "base"), -1,
                             paper=key(5, b, m, "base")))
    skipped = set(((cfg.get("methods") or {}).get("skip") or {}).get("base") or [])
    if not todo and base and {"sdpo", "srpo"} <= skipped:
        missing(5, text, source, "not run at this scale: methods.skip leaves SDPO / SRPO off the base models, as the "
                "paper's Table 1 does (App. F.2 reports their collapse from training curves)")
    elif not todo:
        missing(5, text, source, "claims.backbones trains no sdpo / srpo on a base model")
    # 6: RLRT keeps more pass@k than GRPO / GRPO+EB / DIVER at every k from 1 to 256 (Fig 8): scored at k = 1, 16,
    # 256 (each the largest k <= it that Fig 8's n allows), on Fig 8's splits
    text, source = "RLRT > GRPO / GRPO+EB / DIVER at pass@k, k = 1 .. 256", "RLRT Fig 8"
    f8 = exp.get("fig8") or {}
    todo = [m for m in ("grpo", "grpo_eb", "diver") if f8 and "rlrt" in f8["runs"] and m in f8["runs"]]
    # scored on Fig 8's splits (the paper's: AIME24 and AIME26) when experiments.fig8.splits names them, else on
    # every test split (what the pass@k evaluation then covers), named in the row
    f8_splits = tuple(f8["splits"]) if f8.get("splits") else None
    named = " + ".join(f8_splits or splits)
    ks = sorted({min(k, int(f8.get("n", 0))) for k in FIG8_KS} - {0}) if f8 else []
    for k in ks:
        for m in todo:
            pair(6, text, source, f8["backbone"], "rlrt", m, kind="passk", metric="pass@k", splits=f8_splits,
                 where=f"{f8['backbone']}, {named}, k = {k}", k=k, paper=f"{key(6, f8['backbone'], 'rlrt', m)}/k{k}")
    if not todo:
        missing(6, text, source, "experiments.fig8 does not evaluate rlrt with grpo / grpo_eb / diver")
    # 7, 8: the RLT branch (its first student)
    rlt = cfg.get("rlt") if (cfg.get("rlt") or {}).get("enabled", True) else None
    text7, source7 = "RLT raw explanations distil better students than reference traces", "RLT Table 1"
    text8, source8 = "RLT reward rank predicts student accuracy (Pearson r > 0)", "RLT Fig 5 right"
    if rlt:
        student = rlt["students"][0]
        pair(7, text7, source7, student, "sft-rlt", "sft-reference", kind="rlt", paper="7/RLT/sft-rlt-sft-reference")
        ranks = int((rlt.get("reward_rank") or {}).get("ranks", 0))
        if ranks >= 3:
            rows.append(ClaimRow(8, text8, source8, f"{student} ({ranks} ranks)", metric="pearson_r",
                                 arms=tuple(Arm("rlt", student, f"sft-rank{r}") for r in range(1, ranks + 1)),
                                 paper="8/RLT/reward-rank"))
        else:
            missing(8, text8, source8, "rlt.reward_rank.ranks < 3", paper="8/RLT/reward-rank")
    else:
        missing(7, text7, source7, "no rlt block", paper="7/RLT/sft-rlt-sft-reference")
        missing(8, text8, source8, "no rlt block", paper="8/RLT/reward-rank")
    rows += _analysis_rows(cfg, plain)
    # 13: RLRT beats the strongest baselines on the post-trained backbones too (RLRT Table 1's Qwen3-8B, Table 3's
    # Qwen3-4B-Instruct; GRPO and RLSD are the best baselines there)
    post = _claims_backbones(cfg, False)
    text, source = "RLRT > GRPO / RLSD on post-trained models", "RLRT Tables 1, 3"
    todo = [(b, m) for b in post for m in ("grpo", "rlsd") if planned(b, "rlrt") and planned(b, m)]
    for b, m in todo:
        pair(13, text, source, b, "rlrt", m, where=f"{b} (vs {m})")
    if not todo:
        missing(13, text, source, "claims.backbones lists no post-trained (instruct / thinking) backbone that trains "
                "rlrt with grpo or rlsd")
    # 14, 15: RLT cold start (RLT Table 2) and countdown transfer (RLT Fig 5 left), the first student
    text14, source14 = "GRPO from the RLT-distilled student > from the reference-distilled", "RLT Table 2"
    text15, source15 = "countdown: student of RLT's zero-shot explanations > baselines", "RLT Fig 5 left"
    if rlt:
        student = rlt["students"][0]
        pair(14, text14, source14, student, "grpo-sft-rlt", "grpo-sft-reference", kind="rlt",
             paper="14/RLT/grpo-sft-rlt-grpo-sft-reference")
        for m in ("cdgrpo-base", "cdgrpo-sft-reference", "sft-reference"):
            pair(15, text15, source15, student, "sft-countdown", m, kind="rltcd", where=f"{student} (vs {m})",
                 paper=f"15/RLT/sft-countdown-{m}")
    else:
        missing(14, text14, source14, "no rlt block", paper="14/RLT/grpo-sft-rlt-grpo-sft-reference")
        missing(15, text15, source15, "no rlt block")
    return rows


def _analysis_rows(cfg: dict[str, Any], plain: dict[str, list[str]]) -> list[ClaimRow]:
    """Claims 9-12: the reflection-injection study (RLRT Sec. 6.2, Fig 6) and the distribution-shift study (Sec.
    6.3, Fig 7), scored from their outputs (``analysis/reflection_records.csv``, ``analysis/shift.json``). Those
    studies run on seed 0's checkpoints only (a seeded study would repeat each analysis job per seed), so their
    intervals are over problems / prompts within that one seed and the table says "1 seed"."""
    ana = cfg.get("analysis") or {}
    rows: list[ClaimRow] = []
    refl, shift = ana.get("reflection") or {}, ana.get("shift") or {}
    t9, s9 = "reflection at max-KL positions flips wrong->right more often than at random positions", "RLRT Fig 6a"
    t10, s10 = "RLRT raises the max-KL flip->R rate over training (last > first checkpoint)", "RLRT Fig 6a"
    if refl:
        b = refl["backbone"]
        rows.append(ClaimRow(9, t9, s9, f"{b}, step 0 (untrained)", metric="flip_rate", direction=1,
                             study="analysis/reflection_records.csv", paper="9/flip/max_kl-random",
                             spec=(("compare", "position"), ("run", "base"), ("a", "max_kl"), ("b", "random"))))
        if "rlrt" in refl.get("runs", []) and "rlrt" in plain.get(b, []):
            rows.append(ClaimRow(10, t10, s10, f"{b}, rlrt last vs step 0", metric="flip_rate", direction=1,
                                 study="analysis/reflection_records.csv", paper="10/flip/rlrt-last-first",
                                 spec=(("compare", "checkpoint"), ("run", "rlrt"), ("position", "max_kl"))))
        else:
            rows.append(ClaimRow(10, t10, s10, "-", missing="analysis.reflection.runs has no rlrt"))
    else:
        rows += [ClaimRow(9, t9, s9, "-", missing="no analysis.reflection"),
                 ClaimRow(10, t10, s10, "-", missing="no analysis.reflection")]
    t11, s11 = "RLRT keeps less of the base's top-k (overlap at the largest k) than GRPO", "RLRT Fig 7b"
    t12, s12 = "RLRT promotes more base-tail tokens (p_base < 1e-3) to top-1 than GRPO", "RLRT Fig 7c"
    runs = list(shift.get("runs") or [])
    if shift and "rlrt" in runs and "grpo" in runs:
        b = shift["backbone"]
        rows.append(ClaimRow(11, t11, s11, f"{b}, top-{shift.get('max_k')}", metric="overlap", direction=-1,
                             study="analysis/shift.json", paper="11/shift/overlap",
                             spec=(("a", "rlrt"), ("b", "grpo"), ("stat", "overlap"))))
        rows.append(ClaimRow(12, t12, s12, b, metric="tail", direction=1, study="analysis/shift.json",
                             paper="12/shift/tail",
                             spec=(("a", "rlrt"), ("b", "grpo"), ("stat", "tail"), ("threshold", TAIL_THRESHOLD))))
    else:
        why = "analysis.shift does not study rlrt and grpo"
        rows += [ClaimRow(11, t11, s11, "-", missing=why), ClaimRow(12, t12, s12, "-", missing=why)]
    return rows


def _seeds(cfg: dict[str, Any]) -> int:
    return int((cfg.get("claims") or {}).get("seeds", 1))


def _seeded_arms(cfg: dict[str, Any], kinds: tuple[str, ...]) -> list[tuple[Arm, int]]:
    """(arm, seed index) for every seed > 0 of every arm of ``kinds`` (base arms have no seeds)."""
    out = []
    for row in claim_rows(cfg) if cfg.get("claims") else []:
        for arm in row.all_arms():
            if arm.kind in kinds and arm.run != "base":
                out += [(arm, k) for k in range(1, _seeds(cfg))]
    return list(dict.fromkeys(out))


def claim_runs(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """The extra RL runs the claims study trains: ``<run>+seed=<k>`` for every seed k > 0 of every RL arm, per
    backbone (seed 0 is the DAG's plain run)."""
    out: dict[str, list[str]] = {}
    for arm, k in _seeded_arms(cfg, ("eval", "passk")):
        out.setdefault(arm.backbone, []).append(seeded(arm.run, k))
    return {b: list(dict.fromkeys(r)) for b, r in out.items()}


def planned_runs(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Every RL run of the config, per RL backbone: the plain plan (:func:`rlrt.plan.plain_runs`: methods.run,
    experiments.extra_runs, sweeps) then, when ``claims`` is configured, its seeded replicates (:func:`claim_runs`),
    each run once. What the rules train and the validation checks references against."""
    runs = plain_runs(cfg)
    if cfg.get("claims"):
        for b, extra in claim_runs(cfg).items():
            runs[b].extend(extra)
    return {b: list(dict.fromkeys(r)) for b, r in runs.items()}


def claim_rlt_models(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """The extra RLT student models the claims study trains (``sft-rlt+seed=1``, ...), per student."""
    out: dict[str, list[str]] = {}
    for arm, k in _seeded_arms(cfg, ("rlt", "rltcd")):
        out.setdefault(arm.backbone, []).append(seeded(arm.run, k))
    return {b: list(dict.fromkeys(m)) for b, m in out.items()}


def claims_plan(cfg: dict[str, Any], results: str) -> list[dict[str, Any]]:
    """What the claims rule hands its stage: every row of :func:`claim_rows` as a dict, with the files it reads
    under ``results`` -- ``files_a`` / ``files_b`` (one evaluation per seed index), ``files_arms`` (claim 8: per
    rank, per seed) or ``file`` (claims 9-12: the analysis study's output). Rows with ``missing`` read nothing."""
    seeds = range(_seeds(cfg))
    out = []
    for row in claim_rows(cfg):
        d = row.as_dict()
        if not row.missing:
            if row.study:
                d["file"] = f"{results}/{row.study}"
            elif row.arms:
                d["files_arms"] = [[claim_files(results, arm, k) for k in seeds] for arm in row.arms]
            else:
                d["files_a"] = [claim_files(results, row.a, k) for k in seeds]
                d["files_b"] = [claim_files(results, row.b, k) for k in seeds]
        out.append(d)
    return out


def claims_inputs(plan: list[dict[str, Any]]) -> list[str]:
    """Every file a claims plan reads, sorted, each once (the claims rule's inputs)."""
    files = {f for row in plan for key in ("files_a", "files_b") for f in row.get(key, [])}
    files |= {f for row in plan for fs in row.get("files_arms", []) for f in fs}
    files |= {row["file"] for row in plan if row.get("file")}
    return sorted(files)


def claim_files(results: str, arm: Arm, k: int) -> str:
    """The evaluation file of seed index ``k`` of ``arm`` under the results folder (``base``: its one file)."""
    run = arm.run if arm.run == "base" else seeded(arm.run, k)
    if arm.kind == "eval":
        return f"{results}/eval/{arm.backbone}/{run}.json"
    if arm.kind == "passk":
        return f"{results}/eval_passk/{arm.backbone}/{run}.json"
    if arm.kind == "rlt":
        return f"{results}/rlt/eval/{arm.backbone}/{run}/arithmetic.json"
    if arm.kind == "rltcd":
        return f"{results}/rlt/eval/{arm.backbone}/{run}/countdown.json"
    raise ValueError(f"unknown arm kind {arm.kind!r}")
