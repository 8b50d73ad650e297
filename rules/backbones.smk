# Base checkpoints: S-base / M-base pretrained from scratch; S-instruct / M-thinking SFT'd from their parent.


def backbone_inputs(wildcards):
    b = config["backbones"][wildcards.backbone]
    inputs = {"data": f"{R}/data/train.jsonl", "track": tracking_input()}
    if b["mode"] == "pretrain":
        inputs["tokenizer"] = f"{R}/tokenizer"
    else:
        inputs["parent"] = checkpoint_dir(b["parent"])
    return inputs


def backbone_source_args(wildcards, input):
    return f"--tokenizer {input.tokenizer}" if "tokenizer" in input.keys() else f"--parent {input.parent}"


rule backbone:
    input:
        unpack(backbone_inputs),
    output:
        model=directory(f"{R}/checkpoints/{{backbone}}"),
        metrics=f"{R}/checkpoints/{{backbone}}.json",
    params:
        cfg=lambda w: as_json(backbone_cfg(w.backbone)),
        source=backbone_source_args,
    threads: 1
    resources:
        mem_mb=4000,
    log:
        f"{R}/logs/backbone/{{backbone}}.log",
    benchmark:
        f"{R}/benchmarks/backbone/{{backbone}}.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.backbone --cfg {params.cfg:q} --threads {threads} --data {input.data} "
        "{params.source} --out {output.model} --metrics {output.metrics} > {log} 2>&1"
