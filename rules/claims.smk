# The claims study: each headline claim of both papers over `claims.seeds` seeds, with a t interval over seeds
# (rlrt.analysis.claims) and a verdict, beside the paper's own number (config/paper_numbers.yaml). The plan
# (which arms, which seeded runs) is rlrt.claims; the seeded RL runs
# (<run>+seed=<k>) come from rules/rl.smk and rules/evaluate.smk through RUNS, the seeded RLT students from
# rules/rlt.smk; this file only gathers their evaluations into the table.

from rlrt.claims import claims_inputs, claims_plan
from rlrt.paper_numbers import load as load_paper_numbers

CLAIMS = config.get("claims")

if CLAIMS:

    localrules:
        claims,

    ALL_OUTPUTS.extend([f"{R}/tables/claims.csv", f"{R}/tables/claims.md", f"{R}/figures/claims.png"])

    CLAIMS_PLAN = claims_plan(config, R)  # the rows with the evaluation file of every seed of every arm

    rule claims:
        """Claims table and figure: paired differences over seeds x problems, 95 % t intervals over seeds, verdicts,
        the papers' numbers beside ours."""
        input:
            evals=claims_inputs(CLAIMS_PLAN),
        output:
            csv=report(f"{R}/tables/claims.csv", caption="../workflow/report/claims.rst", category="Claims",
                       subcategory="Tables", labels={"result": "claims table: verdict per claim over seeds"}),
            md=f"{R}/tables/claims.md",
            png=report(f"{R}/figures/claims.png", caption="../workflow/report/claims.rst", category="Claims",
                       subcategory="Figures", labels={"result": "claims figure: intervals against 0"}),
        params:
            code=stage_code("rlrt.stages.claims"),
            # the papers' own numbers, cited (config/paper_numbers.yaml), as values: a params change reruns the table
            # when a number changes, and a copy of the project elsewhere (another path) reruns nothing
            cfg=as_json({"rows": CLAIMS_PLAN, "seeds": CLAIMS["seeds"], "n_boot": CLAIMS.get("n_boot", 10000),
                         "seed": config["seed"], "paper": load_paper_numbers()}),
        log:
            f"{R}/logs/claims.log",
        benchmark:
            f"{R}/benchmarks/claims.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.claims --cfg {params.cfg:q} "
            "--out-csv {output.csv:q} --out-md {output.md:q} --out-png {output.png:q} "
            "> {log:q} 2>&1"
