# Backbone checkpoints: the stand-ins S-base / M-base pretrained from scratch, S-instruct / M-thinking SFT'd from
# their parent; paper scale (mode: hub): pretrained weights staged from the hub (pinned revision) or a local copy.


def backbone_inputs(wildcards):
    b = config["backbones"][wildcards.backbone]
    inputs = {"track": tracking_input()}
    if b["mode"] == "pretrain":
        inputs.update(data=data_file("train"), tokenizer=f"{R}/tokenizer")
    elif b["mode"] == "sft":
        inputs.update(data=data_file("train"), parent=checkpoint_dir(b["parent"]))
    return inputs


def backbone_source_args(wildcards, input):
    keys = input.keys()
    args = [f"--data {input.data}"] if "data" in keys else []
    if "tokenizer" in keys:
        args.append(f"--tokenizer {input.tokenizer}")
    if "parent" in keys:
        args.append(f"--parent {input.parent}")
    return " ".join(args)


rule backbone:
    input:
        unpack(backbone_inputs),
    output:
        model=directory(f"{R}/checkpoints/{{backbone}}"),
        metrics=f"{R}/checkpoints/{{backbone}}.json",
    params:
        code=stage_code("rlrt.stages.backbone"),
        cfg=lambda w: as_json(backbone_cfg(w.backbone)),
        source=backbone_source_args,
    threads: stage_threads("backbone")
    resources:
        **stage_resources("backbone"),
    log:
        f"{R}/logs/backbone/{{backbone}}.log",
    benchmark:
        f"{R}/benchmarks/backbone/{{backbone}}.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.backbone --cfg {params.cfg:q} --threads {threads} "
        "{params.source} --out {output.model} --metrics {output.metrics} > {log} 2>&1"
