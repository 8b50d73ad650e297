"""Which headline claims of the two papers the pipeline tests, and which runs each one compares: one definition
for ``rules/claims.smk`` (which seeded runs and evaluations to make) and ``rlrt.stages.claims`` (what to compare).
The statistics live in :mod:`rlrt.analysis.claims`.

Every claim is a list of *rows*. A comparison row is arm ``a`` vs arm ``b`` on the same test problems, each arm
trained with seed indices 0 .. ``claims.seeds`` - 1 (seed 0 is the plain run of the DAG, seed k > 0 the run
``<run>+seed=<k>``: :func:`rlrt.config.seeded`), with the direction the paper claims (+1: a beats b, -1: a loses
to b). A correlation row (claim 8) is the reward-rank study's students over the same seeds. An arm names

* ``kind``: ``eval`` (``eval/<backbone>/<run>.json``: avg@n per problem), ``passk`` (``eval_passk/...``: pass@k
  at the largest k per problem) or ``rlt`` (``rlt/eval/<student>/<model>/arithmetic.json``: avg@n);
* ``backbone`` (an RL backbone, or the RLT student) and ``run`` (run id or RLT model; ``base`` = the untrained
  backbone, which has no seed: its one evaluation stands for every seed).

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

    def all_arms(self) -> list[Arm]:
        return [x for x in (self.a, self.b) if x is not None] + list(self.arms)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _base_backbones(cfg: dict[str, Any]) -> list[str]:
    return list((cfg.get("claims") or {}).get("backbones") or [])


def claim_rows(cfg: dict[str, Any]) -> list[ClaimRow]:
    """Every row of the claims table, in claim order (see the module docstring)."""
    exp = cfg.get("experiments") or {}
    base = _base_backbones(cfg)
    rows: list[ClaimRow] = []

    def pair(claim, text, source, b, ra, rb, direction=1, kind="eval", metric="avg@n", splits=None, where=None):
        rows.append(ClaimRow(claim, text, source, where or b, Arm(kind, b, ra), Arm(kind, b, rb), direction, metric,
                             splits=splits))

    plain = planned_runs(cfg, with_claims=False)  # once: the plain plan every row is checked against

    def planned(b: str, run: str) -> bool:
        return run in plain.get(b, [])

    def missing(claim, text, source, why):
        rows.append(ClaimRow(claim, text, source, "-", missing=why))

    # 0: the learning check (the claims issue's target): GRPO beats the untrained backbone
    text, source = "RL learns: GRPO > the untrained backbone", "learning check"
    todo = [b for b in base if planned(b, "grpo")]
    splits = list((cfg.get("data") or {}).get("test_splits") or [])
    for b in todo:
        # every held-out split's problems pooled (as claims 1-5 are scored), then each split on its own
        for split in [None] + (splits if len(splits) > 1 else []):
            rows.append(ClaimRow(0, text, source, f"{b}, {split or ' + '.join(splits)}", Arm("eval", b, "grpo"),
                                 Arm("eval", b, "base"), split=split))
    if not todo:
        missing(0, text, source, "claims.backbones trains no grpo")
    # 1, 2: RLRT beats GRPO and RLSD on the base models (RLRT Table 1)
    for claim, other, name in ((1, "grpo", "GRPO"), (2, "rlsd", "RLSD")):
        text, source = f"RLRT > {name} on base models", "RLRT Table 1"
        todo = [b for b in base if planned(b, "rlrt") and planned(b, other)]
        for b in todo:
            pair(claim, text, source, b, "rlrt", other)
        if not todo:
            missing(claim, text, source, f"claims.backbones trains no rlrt and {other} pair")
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
                                     f"{sw['values'][order[0]]})", Arm("eval", b, hi), Arm("eval", b, lo)))
                done = True
    if not done:
        missing(4, text, source, "no experiments.sweeps entry sweeps rlrt's eps_w on a claims backbone")
    # 5: SDPO and SRPO collapse on base models (App. F.2): below the untrained backbone
    text, source = "SDPO / SRPO collapse on base models (below the untrained model)", "RLRT App. F.2"
    todo = [(b, m) for b in base for m in ("sdpo", "srpo") if planned(b, m)]
    for b, m in todo:
        rows.append(ClaimRow(5, text, source, f"{b} {m}", Arm("eval", b, m), Arm("eval", b, "base"), -1))
    if not todo:
        missing(5, text, source, "claims.backbones trains no sdpo / srpo")
    # 6: RLRT keeps more pass@k at large k than GRPO; GRPO+EB and DIVER explore less effectively (Fig 8)
    text, source = "RLRT > GRPO / GRPO+EB / DIVER at pass@k, large k", "RLRT Fig 8"
    f8 = exp.get("fig8") or {}
    todo = [m for m in ("grpo", "grpo_eb", "diver") if f8 and "rlrt" in f8["runs"] and m in f8["runs"]]
    # scored on Fig 8's splits (the paper's: AIME24 and AIME26) when experiments.fig8.splits names them, else on
    # every test split (what the pass@k evaluation then covers)
    f8_splits = tuple(f8["splits"]) if f8.get("splits") else None
    for m in todo:
        pair(6, text, source, f8["backbone"], "rlrt", m, kind="passk", metric="pass@k", splits=f8_splits,
             where=f"{f8['backbone']}, {' + '.join(f8_splits)}" if f8_splits else None)
    if not todo:
        missing(6, text, source, "experiments.fig8 does not evaluate rlrt with grpo / grpo_eb / diver")
    # 7, 8: the RLT branch (its first student)
    rlt = cfg.get("rlt") if (cfg.get("rlt") or {}).get("enabled", True) else None
    text7, source7 = "RLT raw explanations distil better students than reference traces", "RLT Table 1"
    text8, source8 = "RLT reward rank predicts student accuracy (Pearson r > 0)", "RLT Fig 5 right"
    if rlt:
        student = rlt["students"][0]
        pair(7, text7, source7, student, "sft-rlt", "sft-reference", kind="rlt")
        ranks = int((rlt.get("reward_rank") or {}).get("ranks", 0))
        if ranks >= 3:
            rows.append(ClaimRow(8, text8, source8, f"{student} ({ranks} ranks)", metric="pearson_r",
                                 arms=tuple(Arm("rlt", student, f"sft-rank{r}") for r in range(1, ranks + 1))))
        else:
            missing(8, text8, source8, "rlt.reward_rank.ranks < 3")
    else:
        missing(7, text7, source7, "no rlt block")
        missing(8, text8, source8, "no rlt block")
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
    raise ValueError(f"unknown arm kind {arm.kind!r}")
