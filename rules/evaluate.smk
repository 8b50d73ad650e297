# Benchmark evaluation: avg@n and unbiased pass@k of every checkpoint (untrained backbone = method "base").

from rlrt.plan import fig8_splits


rule evaluate:
    input:
        model=lambda w: model_for(w.backbone, w.run),
        data=test_data_files(),
        track=tracking_input(),
    output:
        f"{R}/eval/{{backbone}}/{{run}}.json",
    params:
        code=eval_code(),
        cfg=lambda w: as_json(eval_cfg(w.backbone, w.run)),
    threads: stage_threads("evaluate")
    resources:
        **stage_resources("evaluate"),
    log:
        f"{R}/logs/evaluate/{{backbone}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{backbone}}/{{run}}.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {EVAL_PYTHON:q} -m rlrt.stages.evaluate --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
        "--data {input.data:q} --out {output:q} > {log:q} 2>&1"


def fig8_ks():
    """The pass@k values the Fig 8 evaluation reports (its figure draws every k = 1..n from the correct counts):
    experiments.fig8.ks when configured, else the powers of two up to n."""
    f8 = EXP["fig8"]
    return list(f8["ks"]) if f8.get("ks") else [2**i for i in range(f8["n"].bit_length())]


rule evaluate_passk:
    """Fig 8: n samples per test problem (paper: 256) for pass@k, k = 1..n, with the unbiased estimator, on Fig 8's
    splits (experiments.fig8.splits; default every test split)."""
    input:
        model=lambda w: model_for(w.backbone, w.run),
        data=test_data_files(fig8_splits(config)),
        track=tracking_input(),
    output:
        f"{R}/eval_passk/{{backbone}}/{{run}}.json",
    params:
        code=eval_code(),
        cfg=lambda w: as_json(eval_cfg(w.backbone, w.run, n=EXP["fig8"]["n"],
                                       ks=fig8_ks(),
                                       max_problems=EXP["fig8"].get("max_problems"), stage="eval_passk")),
    threads: stage_threads("evaluate")
    resources:
        **stage_resources("evaluate"),
    log:
        f"{R}/logs/evaluate_passk/{{backbone}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_passk/{{backbone}}/{{run}}.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {EVAL_PYTHON:q} -m rlrt.stages.evaluate --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
        "--data {input.data:q} --out {output:q} > {log:q} 2>&1"
