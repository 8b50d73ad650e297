# What DVC reads (dvc.yaml: metrics, plots) as flat files: every evaluation's metrics, the RL reward curves, the
# pass@k curves. A cheap local job that reshapes stage outputs (rlrt.stages.summaries); `make publish` versions
# them with the DAG's other leaves (workflow/publish.py).


def summary_evals():
    """Every evaluation JSON of the DAG: Table 1's cells, and the RLT students' (their tables' inputs)."""
    evals = list(eval_files())
    if RLT:  # rules/rlt.smk built the branch
        evals += rules.rlt_table1.input.evals + rules.rlt_table2.input.evals
    return sorted(set(evals))


rule summaries:
    input:
        evals=summary_evals(),
        runs=run_metrics(),
        passk=passk_files(),
    output:
        metrics=f"{R}/metrics/eval.json",
        curves=directory(f"{R}/plots/training"),
        passk=f"{R}/plots/passk.csv",
    params:
        code=stage_code("rlrt.stages.summaries"),
    log:
        f"{R}/logs/summaries.log",
    benchmark:
        f"{R}/benchmarks/summaries.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.summaries --results {R:q} "
        "--evals {input.evals:q} --runs {input.runs:q} --passk {input.passk:q} --out-metrics {output.metrics:q} "
        "--out-curves {output.curves:q} --out-passk {output.passk:q} > {log:q} 2>&1"


localrules:
    summaries,


ALL_OUTPUTS.extend([f"{R}/metrics/eval.json", f"{R}/plots/training", f"{R}/plots/passk.csv"])
