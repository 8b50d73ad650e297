# Data: the synthetic verifiable task from a seed (the embedded default) or one job per real data set (paper
# scale: data.source hub, read with `datasets` by hub id + revision or from a local copy); the tokenizer of the
# stand-in backbones (byte-level BPE trained on the synthetic train split).


rule prepare_data:
    output:
        splits=expand(f"{R}/data/{{split}}.jsonl", split=list(config["data"]["splits"])),
    params:
        code=stage_code("rlrt.stages.prepare_data"),
        cfg=as_json(config["data"]),
        out_dir=f"{R}/data",
    threads: stage_threads("prepare")
    resources:
        **stage_resources("prepare"),
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.prepare_data --cfg {params.cfg:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


def eval_split_files(wildcards):
    """A training split's excluded splits: every evaluation split staged here (its questions leave the training
    rows, counted and logged); an evaluation split excludes nothing."""
    datasets = config["data"].get("datasets") or {}
    evals = [s for s in list(config["data"]["test_splits"]) + list((config.get("rlt") or {}).get("test_splits") or [])
             if s in datasets]
    return [] if wildcards.split in evals else [f"{R}/data/{s}.parquet" for s in dict.fromkeys(evals)]


rule prepare_dataset:
    """One real data set -> the normalised parquet (id, question, answer, solution, source); a training split
    without the questions of the evaluation splits."""
    input:
        exclude=eval_split_files,
    output:
        f"{R}/data/{{split}}.parquet",
    params:
        code=stage_code("rlrt.stages.prepare_dataset"),
        cfg=lambda w: as_json({**config["data"]["datasets"][w.split], "split": w.split, "seed": config["seed"]}),
    threads: stage_threads("prepare")
    resources:
        **stage_resources("prepare"),
    log:
        f"{R}/logs/prepare_dataset/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_dataset/{{split}}.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.prepare_dataset --cfg {params.cfg:q} --exclude {input.exclude:q} --out {output:q} > {log:q} 2>&1"


rule tokenizer:
    input:
        train=f"{R}/data/train.jsonl",
    output:
        directory(f"{R}/tokenizer"),
    params:
        code=stage_code("rlrt.stages.tokenizer"),
        cfg=as_json({**config["tokenizer"], "seed": config["seed"]}),
    threads: stage_threads("prepare")
    resources:
        **stage_resources("prepare"),
    log:
        f"{R}/logs/tokenizer.log",
    benchmark:
        f"{R}/benchmarks/tokenizer.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tokenizer --cfg {params.cfg:q} --train {input.train:q} --out {output:q} > {log:q} 2>&1"


rule mlflow_init:
    output:
        touch(f"{R}/mlflow/.initialized"),
    params:
        cfg=as_json(TRACK),
    log:
        f"{R}/logs/mlflow_init.log",
    benchmark:
        f"{R}/benchmarks/mlflow_init.tsv"
    conda:
        ENV
    shell:
        "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.tracking --cfg {params.cfg:q} > {log:q} 2>&1"
