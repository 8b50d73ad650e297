# The RLT paper's branch: teacher SFT warm-up -> teacher RL on r_SS - lambda*r_KL -> raw distillation data ->
# student SFT (RLT vs reference traces, full vs small) -> cold-start GRPO -> evaluation; countdown transfer and the
# reward-rank study. One module of rlrt.stages per rule; paths under results/rlt/.
# Student models are named: base (the untrained backbone), sft-<data> (data: rlt, rlt_small, reference,
# reference_small, countdown, rank<r>), grpo-<init> (cold-start GRPO on the main task from init) and
# cdgrpo-<init> (GRPO directly on countdown).

from rlrt.plan import split_seed
from rlrt.rlt_models import rlt_models, student_sft_settings

RLT = config.get("rlt") if (config.get("rlt") or {}).get("enabled", True) else None  # rlt.enabled: false -> no branch

if RLT:
    RS = RLT["students"][0]  # the student of the cold-start, countdown and reward-rank studies
    # verl student SFT: tokens per sequence = the prompt budget + the student's response budget
    RLT_MAX_LENGTH = (config.get("verl") or {}).get("max_prompt_length", 0) + RLT["max_response_length"]
    # the teacher's SFT on verl: its prompt (question + solution) and explanation; the local stage reads no backend
    # keys, so they stay out of its params (adding them would rerun the local branch for nothing)
    RLT_TEACHER_SFT_BACKEND = {**backend_cfg("rlt_train"), "max_length": (config.get("verl") or {}).get(
        "max_prompt_length", 0) + RLT["teacher_rl"]["max_new_tokens"]} if BACKEND == "verl" else {}
    RLT_GENERATE_BACKEND = backend_cfg("rlt_generate") if BACKEND == "verl" else {}  # distillation, reward rank
    RLT_SPLITS = RLT.get("test_splits") or config["data"]["test_splits"]  # RLT paper: AIME24, MATH500, GPQA
    RLT_MODELS = rlt_models(RLT)  # the models of each RLT table / figure (shared with rlrt.stages.tables)
    RLT_TABLE1 = RLT_MODELS["table1"]
    RLT_TABLE2 = RLT_MODELS["table2"]
    RLT_COUNTDOWN = RLT_MODELS["countdown"]
    RLT_RANKS = RLT_MODELS["reward_rank"]

    def rlt_model(student, model):
        # "base+seed=1": the init of a claims replicate of cdgrpo-base -- the untrained backbone, which has no seed
        base = split_seed(model)[0] == "base"
        return checkpoint_dir(student) if base else f"{R}/rlt/students/{student}/{model}/model"

    def rlt_evals(student, models, task="arithmetic"):
        return [f"{R}/rlt/eval/{student}/{m}/{task}.json" for m in models]

    def rlt_sft_source(data):
        """(traces file, n): which traces a student is distilled from, and how many questions (None = all). A
        claims replicate (``rlt+seed=1``) reads the same traces as its plain run."""
        data = split_seed(data)[0]
        if data.startswith("rank"):
            return f"{R}/rlt/traces/rank/rank_{data[4:]}.jsonl", None
        base, _, size = data.partition("_")
        traces = {"rlt": f"{R}/rlt/traces/arithmetic.jsonl", "reference": f"{R}/rlt/data/questions.jsonl",
                  "countdown": f"{R}/rlt/traces/countdown.jsonl"}[base]
        return traces, (RLT["n_small"] if size == "small" else None)

    def rlt_slice(*keys, **extra):
        """The part of the rlt block a stage reads: changing another key does not rerun it."""
        return {"seed": config["seed"], "tracking": TRACK, **{k: RLT[k] for k in keys}, **extra}

    wildcard_constraints:
        student=_alternatives(ALL_BACKBONES),
        sftdata=r"(rlt|rlt_small|reference|reference_small|countdown|rank[0-9]+)(\+seed=[0-9]+)?",
        rltask="grpo|cdgrpo",
        init=r"(base|sft-[a-z0-9_]+)(\+seed=[0-9]+)?",  # a claims replicate: grpo-sft-rlt+seed=1 from sft-rlt+seed=1
        model=r"(base|sft-[a-z0-9_]+|(cd)?grpo-(base|sft-[a-z0-9_]+))(\+seed=[0-9]+)?",
        task="arithmetic|countdown",
        trace_set="arithmetic|countdown",

    localrules:
        rlt_table1,
        rlt_table2,
        rlt_countdown_figure,
        rlt_reward_rank_figure,

    ALL_OUTPUTS.extend([
        f"{R}/tables/rlt_table1.csv", f"{R}/tables/rlt_table1.md",
        f"{R}/tables/rlt_table2.csv", f"{R}/tables/rlt_table2.md",
        f"{R}/figures/rlt_countdown.png", f"{R}/figures/rlt_reward_rank.png", f"{R}/rlt/reward_rank.json",
    ])

    rule rlt_data:
        input:
            train=data_file(RLT.get("data_split", "train")),
        output:
            questions=f"{R}/rlt/data/questions.jsonl",
            cd_train=f"{R}/rlt/data/countdown_train.jsonl",
            cd_test=f"{R}/rlt/data/countdown_test.jsonl",
        params:
            code=stage_code("rlrt.stages.rlt_data"),
            cfg=as_json(rlt_slice("n_questions", "n_small", "countdown", tracking=None)),
            out_dir=f"{R}/rlt/data",
        threads: stage_threads("prepare")
        resources:
            **stage_resources("prepare"),
        log:
            f"{R}/logs/rlt/data.log",
        benchmark:
            f"{R}/benchmarks/rlt/data.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rlt_data --cfg {params.cfg:q} --train {input.train:q} "
            "--out-dir {params.out_dir:q} > {log:q} 2>&1"

    rule rlt_teacher_sft:
        input:
            model=checkpoint_dir(RLT["teacher"]),
            data=f"{R}/rlt/data/questions.jsonl",
            track=tracking_input(),
        output:
            model=directory(f"{R}/rlt/teacher/sft"),
            metrics=f"{R}/rlt/teacher/sft.json",
        params:
            code=stage_code("rlrt.stages.rlt_teacher_sft"),
            cfg=as_json(rlt_slice("teacher", "teacher_sft", **RLT_TEACHER_SFT_BACKEND)),
        threads: stage_threads("rlt_train")
        resources:
            **stage_resources("rlt_train"),
        log:
            f"{R}/logs/rlt/teacher_sft.log",
        benchmark:
            f"{R}/benchmarks/rlt/teacher_sft.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rlt_teacher_sft --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
            "--data {input.data:q} --out {output.model:q} --metrics {output.metrics:q} > {log:q} 2>&1"

    rule rlt_teacher_rl:
        input:
            teacher=f"{R}/rlt/teacher/sft",
            student=checkpoint_dir(RLT["reward_student"]),
            data=f"{R}/rlt/data/questions.jsonl",
            track=tracking_input(),
        output:
            model=directory(f"{R}/rlt/teacher/rl"),
            metrics=f"{R}/rlt/teacher/rl.json",
        params:
            code=stage_code("rlrt.stages.rlt_teacher_rl"),
            cfg=as_json(rlt_slice("teacher_rl", "reward_student", **backend_cfg("rlt_train"))),
        threads: stage_threads("rlt_train")
        resources:
            **stage_resources("rlt_train"),
        log:
            f"{R}/logs/rlt/teacher_rl.log",
        benchmark:
            f"{R}/benchmarks/rlt/teacher_rl.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rlt_teacher_rl --cfg {params.cfg:q} --threads {threads} "
            "--teacher {input.teacher:q} --student {input.student:q} --data {input.data:q} --out {output.model:q} "
            "--metrics {output.metrics:q} > {log:q} 2>&1"

    rule rlt_distill:
        """The RL'd teacher's raw explanations: the main task's questions, and countdown zero-shot."""
        input:
            teacher=f"{R}/rlt/teacher/rl",
            data=lambda w: f"{R}/rlt/data/" + ("questions" if w.trace_set == "arithmetic" else "countdown_train")
            + ".jsonl",
            track=tracking_input(),
        output:
            traces=f"{R}/rlt/traces/{{trace_set}}.jsonl",
            summary=f"{R}/rlt/traces/{{trace_set}}.json",
        params:
            code=stage_code("rlrt.stages.rlt_distill"),
            cfg=lambda w: as_json({"name": w.trace_set, "seed": config["seed"], "tracking": TRACK,
                                   "temperature": RLT["distill"]["temperature"],
                                   "max_new_tokens": RLT["teacher_rl"]["max_new_tokens"], **RLT_GENERATE_BACKEND}),
        threads: stage_threads("rlt_generate")
        resources:
            **stage_resources("rlt_generate"),
        log:
            f"{R}/logs/rlt/distill_{{trace_set}}.log",
        benchmark:
            f"{R}/benchmarks/rlt/distill_{{trace_set}}.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rlt_distill --cfg {params.cfg:q} --threads {threads} --teacher {input.teacher:q} "
            "--data {input.data:q} --out {output.traces:q} --summary {output.summary:q} > {log:q} 2>&1"

    rule rlt_reward_rank_data:
        input:
            teacher=f"{R}/rlt/teacher/sft",
            student=checkpoint_dir(RLT["reward_student"]),
            data=f"{R}/rlt/data/questions.jsonl",
            track=tracking_input(),
        output:
            traces=expand(f"{R}/rlt/traces/rank/rank_{{r}}.jsonl", r=range(1, RLT["reward_rank"]["ranks"] + 1)),
            summary=f"{R}/rlt/traces/rank.json",
        params:
            code=stage_code("rlrt.stages.rlt_reward_rank"),
            cfg=as_json(rlt_slice("reward_rank", "reward_student", temperature=RLT["distill"]["temperature"],
                                  max_new_tokens=RLT["teacher_rl"]["max_new_tokens"],
                                  alpha=RLT["teacher_rl"]["alpha"], lam=RLT["teacher_rl"]["lambda"],
                                  reward_temperature=RLT["teacher_rl"]["temperature"], **RLT_GENERATE_BACKEND)),
            out_dir=f"{R}/rlt/traces/rank",
        threads: stage_threads("rlt_generate")
        resources:
            **stage_resources("rlt_generate"),
        log:
            f"{R}/logs/rlt/reward_rank_data.log",
        benchmark:
            f"{R}/benchmarks/rlt/reward_rank_data.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rlt_reward_rank --cfg {params.cfg:q} --threads {threads} "
            "--teacher {input.teacher:q} --student {input.student:q} --data {input.data:q} --out-dir {params.out_dir:q} "
            "--summary {output.summary:q} > {log:q} 2>&1"

    rule rlt_student_sft:
        input:
            model=lambda w: checkpoint_dir(w.student),
            traces=lambda w: rlt_sft_source(w.sftdata)[0],
            questions=f"{R}/rlt/data/questions.jsonl",
            track=tracking_input(),
        output:
            model=directory(f"{R}/rlt/students/{{student}}/sft-{{sftdata}}/model"),
            metrics=f"{R}/rlt/students/{{student}}/sft-{{sftdata}}/metrics.json",
        params:
            code=stage_code("rlrt.stages.rlt_student_sft"),
            cfg=lambda w: as_json({"student_sft": student_sft_settings(RLT, w.sftdata),  # its size's recipe
                                   "n": rlt_sft_source(w.sftdata)[1],
                                   **backend_cfg("rlt_train", w.student), "max_length": RLT_MAX_LENGTH,
                                   "data": w.sftdata, "student": w.student, "seed": run_seed(config, w.sftdata),
                                   "tracking": TRACK}),
        threads: stage_threads("rlt_train")
        resources:
            **stage_resources("rlt_train"),
        log:
            f"{R}/logs/rlt/students/{{student}}/sft-{{sftdata}}.log",
        benchmark:
            f"{R}/benchmarks/rlt/students/{{student}}/sft-{{sftdata}}.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rlt_student_sft --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
            "--traces {input.traces:q} --questions {input.questions:q} --out {output.model:q} "
            "--metrics {output.metrics:q} > {log:q} 2>&1"

    def rlt_rl_cfg(w):
        rl = {**config["rl"], **RLT["cold_start"], "save_steps": []}
        return {"rl": rl, "method": "grpo", "run": f"{w.rltask}-{w.init}",
                "method_cfg": run_config(config, w.student, "grpo"),
                "backbone": {"name": w.student, "kind": config["backbones"][w.student]["kind"]},
                "max_response_length": RLT["max_response_length"], "seed": run_seed(config, w.init),
                "grader_workers": config["rl"].get("grader_workers", 1), "tracking": TRACK,
                "task": "countdown" if w.rltask == "cdgrpo" else "arithmetic", "stage": "rlt_rl",
                **backend_cfg("rlt_train", w.student)}

    rule rlt_rl:
        """Cold-start GRPO (correctness reward) on the main task (grpo-) or directly on countdown (cdgrpo-)."""
        input:
            model=lambda w: rlt_model(w.student, w.init),
            data=lambda w: f"{R}/rlt/data/countdown_train.jsonl" if w.rltask == "cdgrpo" else data_file("train"),
            track=tracking_input(),
        output:
            model=directory(f"{R}/rlt/students/{{student}}/{{rltask}}-{{init}}/model"),
            metrics=f"{R}/rlt/students/{{student}}/{{rltask}}-{{init}}/metrics.json",
        params:
            code=stage_code("rlrt.stages.rl"),
            cfg=lambda w: as_json(rlt_rl_cfg(w)),
        threads: stage_threads("rlt_train")
        resources:
            **stage_resources("rlt_train"),
        log:
            f"{R}/logs/rlt/students/{{student}}/{{rltask}}-{{init}}.log",
        benchmark:
            f"{R}/benchmarks/rlt/students/{{student}}/{{rltask}}-{{init}}.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.rl --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
            "--data {input.data:q} --out {output.model:q} --metrics {output.metrics:q} > {log:q} 2>&1"

    rule rlt_evaluate:
        input:
            model=lambda w: rlt_model(w.student, w.model),
            data=lambda w: [f"{R}/rlt/data/countdown_test.jsonl"] if w.task == "countdown"
            else test_data_files(RLT_SPLITS),
            track=tracking_input(),
        output:
            f"{R}/rlt/eval/{{student}}/{{model}}/{{task}}.json",
        params:
            code=eval_code(),
            cfg=lambda w: as_json({**config["eval"], **RLT["eval"], "backbone": w.student, "method": w.model,
                                   "task": w.task, "stage": "rlt_eval", "seed": run_seed(config, w.model),
                                   "max_new_tokens": RLT["max_response_length"],
                                   "grader_workers": config["rl"].get("grader_workers", 1), "tracking": TRACK,
                                   **backend_cfg("evaluate", w.student)}),
        threads: stage_threads("evaluate")
        resources:
            **stage_resources("evaluate"),
        log:
            f"{R}/logs/rlt/eval/{{student}}/{{model}}/{{task}}.log",
        benchmark:
            f"{R}/benchmarks/rlt/eval/{{student}}/{{model}}/{{task}}.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {EVAL_PYTHON:q} -m rlrt.stages.evaluate --cfg {params.cfg:q} --threads {threads} --model {input.model:q} "
            "--data {input.data:q} --out {output:q} > {log:q} 2>&1"

    rule rlt_table1:
        """Students distilled from RLT vs reference traces, full data vs the small subset (RLT paper Table 1)."""
        input:
            evals=[f for s in RLT["students"] for f in rlt_evals(s, RLT_TABLE1)],
        output:
            csv=report(f"{R}/tables/rlt_table1.csv", caption="../workflow/report/rlt_table1.rst", category="RLT",
                       subcategory="Tables", labels={"result": "RLT Table 1: RLT vs reference traces"}),
            md=f"{R}/tables/rlt_table1.md",
        params:
            code=stage_code("rlrt.stages.tables"),
            cfg=as_json({"splits": RLT_SPLITS, "n": RLT["eval"]["n"],
                         "n_questions": RLT["n_questions"], "n_small": RLT["n_small"],
                         **({"small_recipe": True} if RLT.get("student_sft_small") else {})}),
        log:
            f"{R}/logs/tables/rlt_table1.log",
        benchmark:
            f"{R}/benchmarks/tables/rlt_table1.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tables --cfg {params.cfg:q} --table rlt_table1 --evals {input.evals:q} "
            "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"

    rule rlt_table2:
        """Cold-start RL: GRPO from the untrained student vs from students distilled on RLT / reference traces."""
        input:
            evals=rlt_evals(RS, RLT_TABLE2),
        output:
            csv=report(f"{R}/tables/rlt_table2.csv", caption="../workflow/report/rlt_table2.rst", category="RLT",
                       subcategory="Tables", labels={"result": "RLT Table 2: cold-start RL"}),
            md=f"{R}/tables/rlt_table2.md",
        params:
            code=stage_code("rlrt.stages.tables"),
            cfg=as_json({"splits": RLT_SPLITS, "n": RLT["eval"]["n"],
                         "n_questions": RLT["n_questions"], "n_small": RLT["n_small"]}),
        log:
            f"{R}/logs/tables/rlt_table2.log",
        benchmark:
            f"{R}/benchmarks/tables/rlt_table2.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.tables --cfg {params.cfg:q} --table rlt_table2 --evals {input.evals:q} "
            "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"

    rule rlt_countdown_figure:
        """Out-of-domain transfer (RLT paper Fig. 5 left): countdown accuracy of each student."""
        input:
            evals=rlt_evals(RS, RLT_COUNTDOWN, "countdown"),
        output:
            report(f"{R}/figures/rlt_countdown.png", caption="../workflow/report/rlt_countdown.rst", category="RLT",
                   subcategory="Figures", labels={"result": "RLT Fig 5 left: countdown transfer"}),
        params:
            code=stage_code("rlrt.stages.figures"),
            cfg=as_json({"n": RLT["eval"]["n"]}),
        log:
            f"{R}/logs/figures/rlt_countdown.log",
        benchmark:
            f"{R}/benchmarks/figures/rlt_countdown.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.figures --cfg {params.cfg:q} --figure rlt_countdown --evals {input.evals:q} "
            "--out {output:q} > {log:q} 2>&1"

    rule rlt_reward_rank_figure:
        """Reward-rank study (RLT paper Fig. 5 right): student accuracy per reward rank, Pearson r."""
        input:
            evals=rlt_evals(RS, RLT_RANKS),
            ranks=f"{R}/rlt/traces/rank.json",
        output:
            png=report(f"{R}/figures/rlt_reward_rank.png", caption="../workflow/report/rlt_reward_rank.rst",
                       category="RLT", subcategory="Figures",
                       labels={"result": "RLT Fig 5 right: reward rank vs accuracy"}),
            json=f"{R}/rlt/reward_rank.json",
        params:
            code=stage_code("rlrt.stages.figures"),
            cfg=as_json({"n": RLT["eval"]["n"], "splits": RLT_SPLITS}),
        log:
            f"{R}/logs/figures/rlt_reward_rank.log",
        benchmark:
            f"{R}/benchmarks/figures/rlt_reward_rank.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.figures --cfg {params.cfg:q} --figure rlt_reward_rank --evals {input.evals:q} "
            "--ranks {input.ranks:q} --out {output.png:q} --out-json {output.json:q} > {log:q} 2>&1"
