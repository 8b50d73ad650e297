# Dataset prep and tokenizer: synthetic verifiable task from a seed; byte-level BPE trained on it.


rule prepare_data:
    output:
        splits=expand(f"{R}/data/{{split}}.jsonl", split=list(config["data"]["splits"])),
    params:
        cfg=as_json(config["data"]),
        out_dir=f"{R}/data",
    log:
        f"{R}/logs/prepare_data.log",
    benchmark:
        f"{R}/benchmarks/prepare_data.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.prepare_data --cfg {params.cfg:q} --out-dir {params.out_dir} > {log} 2>&1"


rule tokenizer:
    input:
        train=f"{R}/data/train.jsonl",
    output:
        directory(f"{R}/tokenizer"),
    params:
        cfg=as_json({**config["tokenizer"], "seed": config["seed"]}),
    log:
        f"{R}/logs/tokenizer.log",
    benchmark:
        f"{R}/benchmarks/tokenizer.tsv"
    conda:
        ENV
    shell:
        "{PYTHON} -m rlrt.stages.tokenizer --cfg {params.cfg:q} --train {input.train} --out {output} > {log} 2>&1"


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
        "{PYTHON} -m rlrt.tracking --cfg {params.cfg:q} > {log} 2>&1"
