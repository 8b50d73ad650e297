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
    """The shell arguments naming the backbone's sources, each path shell-quoted (the rule inserts them as they
    are; a plain path quotes to itself, so the param, and with it the job, stays what it was)."""
    from shlex import quote

    keys = input.keys()
    args = [f"--data {quote(input.data)}"] if "data" in keys else []
    if "tokenizer" in keys:
        args.append(f"--tokenizer {quote(input.tokenizer)}")
    if "parent" in keys:
        args.append(f"--parent {quote(input.parent)}")
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
        "{params.source} --out {output.model:q} --metrics {output.metrics:q} > {log:q} 2>&1"
