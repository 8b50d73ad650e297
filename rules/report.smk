# Tables and figures, generated from the per-run JSON files.

ALL_OUTPUTS.extend([f"{R}/tables/table1.csv", f"{R}/tables/table1.md", f"{R}/figures/fig5_training_curves.png"])


rule table1:
    input:
        evals=eval_files(),
    output:
        csv=report(f"{R}/tables/table1.csv", caption="../workflow/report/table1.rst", category="Tables"),
        md=f"{R}/tables/table1.md",
    params:
        cfg=lambda w: as_json({"backbones": BACKBONES, "methods": METHODS,
                               "splits": config["data"]["test_splits"], "n": config["eval"]["n"],
                               "kinds": {b: config["backbones"][b]["kind"] for b in BACKBONES},
                               "stand_in_for": {b: config["backbones"][b].get("stand_in_for", "")
                                                for b in BACKBONES}}),
    log:
        f"{R}/logs/table1.log",
    benchmark:
        f"{R}/benchmarks/table1.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.tables --cfg {params.cfg:q} --evals {input.evals} "
        "--out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule fig5:
    input:
        runs=run_metrics(),
    output:
        report(f"{R}/figures/fig5_training_curves.png", caption="../workflow/report/fig5.rst", category="Figures"),
    params:
        cfg=lambda w: as_json({"backbones": BACKBONES, "methods": METHODS}),
    log:
        f"{R}/logs/fig5.log",
    benchmark:
        f"{R}/benchmarks/fig5.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.figures --cfg {params.cfg:q} --runs {input.runs} --out {output} > {log} 2>&1"
