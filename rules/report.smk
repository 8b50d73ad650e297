# Tables and figures, generated from the per-run JSON files (seconds each: on the driver, never cluster jobs).

localrules:
    table1,
    table3,
    table4,
    sweeps_table,
    fig5,
    fig8,
    fig9,


ALL_OUTPUTS.extend([f"{R}/tables/table1.csv", f"{R}/tables/table1.md", f"{R}/figures/fig5_training_curves.png",
                    f"{R}/tables/table4.csv", f"{R}/tables/table4.md"])
if EXP.get("table3"):
    ALL_OUTPUTS.extend([f"{R}/tables/table3.csv", f"{R}/tables/table3.md"])
if EXP.get("sweeps"):
    ALL_OUTPUTS.extend([f"{R}/tables/sweeps.csv", f"{R}/tables/sweeps.md"])
if EXP.get("fig8"):
    ALL_OUTPUTS.append(f"{R}/figures/fig8_passk.png")
if EXP.get("gate_ablation"):
    ALL_OUTPUTS.append(f"{R}/figures/fig9_ablations.png")


def table_cfg(backbones, methods):
    return as_json({"backbones": backbones, "methods": methods, "splits": config["data"]["test_splits"],
                    "skipped": {b: [m for m in methods if m not in table1_methods(config, b)] for b in backbones},
                    "n": config["eval"]["n"], "stand_in_for": {b: config["backbones"][b].get("stand_in_for", "")
                                                               for b in backbones}})


def resolved_sweeps(key=None):
    """Every sweep (optionally only those over ``key``) per backbone, with the run ids of its values."""
    return [{"method": sw["method"], "key": sw["key"], "backbone": b, "values": sw["values"],
             "runs": sweep_runs(config, sw, b), "reference": "grpo" if "grpo" in RUNS[b] else None}
            for sw in EXP.get("sweeps") or [] if key is None or sw["key"] == key for b in sw["backbones"]]


def sweep_metrics(sweeps):
    return sorted({f"{R}/runs/{s['backbone']}/{r}/metrics.json" for s in sweeps
                   for r in s["runs"] + ([s["reference"]] if s.get("reference") else [])})


rule table1:
    input:
        evals=eval_files(),
    output:
        csv=report(f"{R}/tables/table1.csv", caption="../workflow/report/table1.rst", category="RLRT",
                   subcategory="Tables", labels={"result": "Table 1: avg@n / pass@n, every backbone"}),
        md=f"{R}/tables/table1.md",
    params:
        code=stage_code("rlrt.stages.tables"),
        cfg=table_cfg(BACKBONES, METHODS),
    log:
        f"{R}/logs/table1.log",
    benchmark:
        f"{R}/benchmarks/table1.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tables --table table1 --cfg {params.cfg:q} --evals {input.evals:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule table3:
    input:
        evals=lambda w: eval_files([EXP["table3"]["backbone"]], EXP["table3"]["runs"]),
    output:
        csv=report(f"{R}/tables/table3.csv", caption="../workflow/report/table3.rst", category="RLRT",
                   subcategory="Tables", labels={"result": "Table 3: instruct backbone"}),
        md=f"{R}/tables/table3.md",
    params:
        code=stage_code("rlrt.stages.tables"),
        cfg=lambda w: table_cfg([EXP["table3"]["backbone"]], EXP["table3"]["runs"]),
    log:
        f"{R}/logs/table3.log",
    benchmark:
        f"{R}/benchmarks/table3.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tables --table table3 --cfg {params.cfg:q} --evals {input.evals:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule table4:
    """The unified view of every method, generated from the method registry (reruns when that code changes: the
    code param hashes the registry and every module whose functions and settings its rows are read off)."""
    output:
        csv=report(f"{R}/tables/table4.csv", caption="../workflow/report/table4.rst", category="Baselines",
                   subcategory="Tables", labels={"result": "Table 4: unified view of the methods"}),
        md=f"{R}/tables/table4.md",
    params:
        code=stage_code("rlrt.stages.tables"),
    log:
        f"{R}/logs/table4.log",
    benchmark:
        f"{R}/benchmarks/table4.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tables --table table4 --cfg '{{}}' --out-csv {output.csv:q} --out-md {output.md:q} "
        "> {log:q} 2>&1"


rule sweeps_table:
    input:
        runs=lambda w: sweep_metrics(resolved_sweeps()),
    output:
        csv=report(f"{R}/tables/sweeps.csv", caption="../workflow/report/sweeps.rst", category="RLRT",
                   subcategory="Tables", labels={"result": "Sweeps: Table 5 / Fig 9b settings"}),
        md=f"{R}/tables/sweeps.md",
    params:
        code=stage_code("rlrt.stages.tables"),
        cfg=lambda w: as_json({"sweeps": resolved_sweeps()}),
    log:
        f"{R}/logs/sweeps_table.log",
    benchmark:
        f"{R}/benchmarks/sweeps_table.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tables --table sweeps --cfg {params.cfg:q} --runs {input.runs:q} "
        "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"


rule fig5:
    input:
        runs=run_metrics({b: table1_methods(config, b) for b in BACKBONES}),
    output:
        report(f"{R}/figures/fig5_training_curves.png", caption="../workflow/report/fig5.rst", category="Training",
               subcategory="Figures", labels={"result": "Fig 5: training reward curves"}),
    params:
        code=stage_code("rlrt.stages.figures"),
        cfg=lambda w: as_json({"backbones": BACKBONES, "methods": METHODS}),
    log:
        f"{R}/logs/fig5.log",
    benchmark:
        f"{R}/benchmarks/fig5.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.figures --figure fig5 --cfg {params.cfg:q} --runs {input.runs:q} --out {output:q} "
        "> {log:q} 2>&1"


rule fig8:
    input:
        evals=passk_files(),
    output:
        report(f"{R}/figures/fig8_passk.png", caption="../workflow/report/fig8.rst", category="Baselines",
               subcategory="Figures", labels={"result": "Fig 8: pass@k of exploration methods"}),
    params:
        code=stage_code("rlrt.stages.figures"),
        cfg=lambda w: as_json({"runs": EXP["fig8"]["runs"], "splits": fig8_splits(config)}),
    log:
        f"{R}/logs/fig8.log",
    benchmark:
        f"{R}/benchmarks/fig8.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.figures --figure fig8 --cfg {params.cfg:q} --evals {input.evals:q} --out {output:q} "
        "> {log:q} 2>&1"


rule fig9:
    input:
        runs=lambda w: sorted(set(sweep_metrics(resolved_sweeps("eps_w")) + run_metrics(
            {EXP["gate_ablation"]["backbone"]: EXP["gate_ablation"]["runs"]}))),
    output:
        report(f"{R}/figures/fig9_ablations.png", caption="../workflow/report/fig9.rst", category="RLRT",
               subcategory="Figures", labels={"result": "Fig 9: reward gate and clipping range"}),
    params:
        code=stage_code("rlrt.stages.figures"),
        cfg=lambda w: as_json({"gate": EXP["gate_ablation"], "eps": resolved_sweeps("eps_w")}),
    log:
        f"{R}/logs/fig9.log",
    benchmark:
        f"{R}/benchmarks/fig9.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.figures --figure fig9 --cfg {params.cfg:q} --runs {input.runs:q} --out {output:q} "
        "> {log:q} 2>&1"
