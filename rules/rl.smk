# RL runs: one job per (backbone, run); a run is a method or a sweep point <method>@<key>=<value>.
# Changing one method's settings reruns only its branch.


rule rl:
    input:
        model=lambda w: checkpoint_dir(w.backbone),
        data=data_file("train"),
        track=tracking_input(),
    output:
        model=directory(f"{R}/runs/{{backbone}}/{{run}}/model"),
        checkpoints=directory(f"{R}/runs/{{backbone}}/{{run}}/checkpoints"),
        metrics=f"{R}/runs/{{backbone}}/{{run}}/metrics.json",
    params:
        code=stage_code("rlrt.stages.rl"),
        cfg=lambda w: as_json(rl_cfg(w.backbone, w.run)),
    threads: stage_threads("rl")
    resources:
        **stage_resources("rl"),
    log:
        f"{R}/logs/rl/{{backbone}}/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/rl/{{backbone}}/{{run}}.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rl --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
        "--data {input.data:q} --out {output.model:q} --checkpoints {output.checkpoints:q} --metrics {output.metrics:q} "
        "> {log:q} 2>&1"
