# The claims study: each headline claim of both papers over `claims.seeds` seeds, with a paired bootstrap
# interval and a verdict. The plan (which arms, which seeded runs) is rlrt.claims; the seeded RL runs
# (<run>+seed=<k>) come from rules/rl.smk and rules/evaluate.smk through RUNS, the seeded RLT students from
# rules/rlt.smk; this file only gathers their evaluations into the table.

from rlrt.claims import claim_files, claim_rows

CLAIMS = config.get("claims")

if CLAIMS:

    localrules:
        claims,

    ALL_OUTPUTS.extend([f"{R}/tables/claims.csv", f"{R}/tables/claims.md", f"{R}/figures/claims.png"])

    def claims_plan():
        """The rows of rlrt.claims with the evaluation file of every seed of every arm."""
        seeds = range(CLAIMS["seeds"])
        rows = []
        for row in claim_rows(config):
            d = row.as_dict()
            if not row.missing:
                if row.arms:
                    d["files_arms"] = [[claim_files(R, arm, k) for k in seeds] for arm in row.arms]
                else:
                    d["files_a"] = [claim_files(R, row.a, k) for k in seeds]
                    d["files_b"] = [claim_files(R, row.b, k) for k in seeds]
            rows.append(d)
        return rows

    CLAIMS_PLAN = claims_plan()

    rule claims:
        """Claims table and figure: paired differences over seeds x problems, 95 % bootstrap intervals, verdicts."""
        input:
            evals=sorted({f for row in CLAIMS_PLAN for key in ("files_a", "files_b") for f in row.get(key, [])}
                         | {f for row in CLAIMS_PLAN for fs in row.get("files_arms", []) for f in fs}),
        output:
            csv=report(f"{R}/tables/claims.csv", caption="../workflow/report/claims.rst", category="Claims",
                       subcategory="Tables", labels={"result": "claims table: verdict per claim over seeds"}),
            md=f"{R}/tables/claims.md",
            png=report(f"{R}/figures/claims.png", caption="../workflow/report/claims.rst", category="Claims",
                       subcategory="Figures", labels={"result": "claims figure: intervals against 0"}),
        params:
            code=stage_code("rlrt.stages.claims"),
            cfg=as_json({"rows": CLAIMS_PLAN, "seeds": CLAIMS["seeds"], "n_boot": CLAIMS.get("n_boot", 10000),
                         "seed": config["seed"]}),
        log:
            f"{R}/logs/claims.log",
        benchmark:
            f"{R}/benchmarks/claims.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.claims --cfg {params.cfg:q} "
            "--out-csv {output.csv} --out-md {output.md} --out-png {output.png} > {log} 2>&1"
