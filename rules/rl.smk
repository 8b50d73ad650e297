# RL runs: one job per (backbone, method); changing one method's settings reruns only its branch.


rule rl:
    input:
        model=lambda w: checkpoint_dir(w.backbone),
        data=f"{R}/data/train.jsonl",
        track=tracking_input(),
    output:
        model=directory(f"{R}/runs/{{backbone}}/{{method}}/model"),
        metrics=f"{R}/runs/{{backbone}}/{{method}}/metrics.json",
    params:
        cfg=lambda w: as_json(rl_cfg(w.backbone, w.method)),
    threads: 1
    resources:
        mem_mb=6000,
    log:
        f"{R}/logs/rl/{{backbone}}/{{method}}.log",
    benchmark:
        f"{R}/benchmarks/rl/{{backbone}}/{{method}}.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.rl --cfg {params.cfg:q} --threads {threads} --model {input.model} "
        "--data {input.data} --out {output.model} --metrics {output.metrics} > {log} 2>&1"
