# Benchmark evaluation: avg@n and unbiased pass@k of every checkpoint (untrained backbone = method "base").


rule evaluate:
    input:
        model=lambda w: model_for(w.backbone, w.method),
        data=expand(f"{R}/data/{{split}}.jsonl", split=config["data"]["test_splits"]),
        track=tracking_input(),
    output:
        f"{R}/eval/{{backbone}}/{{method}}.json",
    params:
        cfg=lambda w: as_json(eval_cfg(w.backbone, w.method)),
    threads: 1
    resources:
        mem_mb=4000,
    log:
        f"{R}/logs/evaluate/{{backbone}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{backbone}}/{{method}}.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.evaluate --cfg {params.cfg:q} --threads {threads} --model {input.model} "
        "--data {input.data} --out {output} > {log} 2>&1"
