# The RLRT paper's analyses (Sections 4.1-4.3, 6.2, 6.3; Appendices D, E, H), one job each:
# asymmetry heatmaps (Figs 2/10/12/13), explore/exploit markers (Table 2, Fig 3), reflection injection across RL
# checkpoints (Fig 6) and the distribution shift of fine-tuned policies (Fig 7). Config: `analysis` (optional);
# a missing sub-block skips that analysis, a missing key takes its schema default.
from rlrt.schema import analysis_config

# Defaults from the schema filled in; cross-checks (backbones, splits, runs, bins) ran in rlrt.config.validate.
ANALYSIS = analysis_config(config)


def analysis_cfg(name, **extra):
    """The config slice of one analysis stage: its block, the shared settings and the backbone's budget."""
    a, block = ANALYSIS, ANALYSIS[name]
    b = block["backbone"]
    return as_json({
        name: block, "backbone": b, "run": block.get("run", "base"), "seed": config["seed"],
        "sampling": a["sampling"], "temperature": a["temperature"], "context": a["context"],
        "position_chunk": a["position_chunk"], "micro_batch": a["micro_batch"], "batch_size": a["batch_size"],
        "max_new_tokens": config["backbones"][b]["max_response_length"],
        "grader_workers": config["rl"].get("grader_workers", 1), "tracking": TRACK, **chat_kwargs(b), **extra,
        # paper scale: the models on the job's GPU (rlrt.backends.local.model.load_checkpoint); the local default
        # keeps its params as they were (no key), so its analyses do not rerun
        **({"device": "cuda"} if BACKEND == "verl" else {}),
    })


def analysis_data(name):
    return data_file(ANALYSIS[name]["split"])


def run_models(name):
    b = ANALYSIS[name]["backbone"]
    return [f"{R}/runs/{b}/{run}/model" for run in ANALYSIS[name]["runs"]]


if "heatmaps" in ANALYSIS:
    _H = ANALYSIS["heatmaps"]
    _HEAT_PNG = [f"{R}/figures/fig2_heatmap_{i}.png" for i in range(1, _H["n_examples"] + 1)]
    _HEAT_HTML = [f"{R}/figures/fig2_heatmap_{i}.html" for i in range(1, _H["n_examples"] + 1)]
    ALL_OUTPUTS.extend(_HEAT_PNG + _HEAT_HTML)

    rule analysis_heatmaps:
        input:
            model=model_for(_H["backbone"], _H["run"]),
            data=analysis_data("heatmaps"),
            track=tracking_input(),
        output:
            png=[report(p, caption="../workflow/report/fig2_heatmap.rst", category="Analyses",
                        subcategory="Fig 2 / 12: asymmetry heatmaps",
                        labels={"result": f"Fig 2 heatmap, example {i} (PNG)"})
                 for i, p in enumerate(_HEAT_PNG, 1)],
            html=[report(p, caption="../workflow/report/fig2_heatmap.rst", category="Analyses",
                         subcategory="Fig 2 / 12: asymmetry heatmaps",
                         labels={"result": f"Fig 2 heatmap, example {i} (HTML, hover values)"})
                  for i, p in enumerate(_HEAT_HTML, 1)],
            json=f"{R}/analysis/heatmaps.json",
        params:
            code=stage_code("rlrt.stages.analysis_heatmaps"),
            cfg=analysis_cfg("heatmaps"),
        threads: stage_threads("analysis")
        resources:
            **stage_resources("analysis"),
        log:
            f"{R}/logs/analysis/heatmaps.log",
        benchmark:
            f"{R}/benchmarks/analysis/heatmaps.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.analysis_heatmaps --cfg {params.cfg:q} --threads {threads} "
            "--model {input.model:q} --data {input.data:q} --out-png {output.png:q} --out-html {output.html:q} "
            "--out-json {output.json:q} > {log:q} 2>&1"


if "markers" in ANALYSIS:
    _M = ANALYSIS["markers"]
    ALL_OUTPUTS.extend([f"{R}/tables/table2_markers.csv", f"{R}/tables/table2_markers.md",
                        f"{R}/figures/fig3_markers.png"])

    rule analysis_markers:
        input:
            model=model_for(_M["backbone"], _M["run"]),
            data=analysis_data("markers"),
            track=tracking_input(),
        output:
            csv=report(f"{R}/tables/table2_markers.csv", caption="../workflow/report/table2_markers.rst",
                       category="Analyses", subcategory="Table 2 / Fig 3: explore-exploit markers",
                       labels={"result": "Table 2: explore / exploit markers"}),
            md=f"{R}/tables/table2_markers.md",
            png=report(f"{R}/figures/fig3_markers.png", caption="../workflow/report/fig3_markers.rst",
                       category="Analyses", subcategory="Table 2 / Fig 3: explore-exploit markers",
                       labels={"result": "Fig 3: marker polarization"}),
            scores=f"{R}/analysis/marker_scores.csv",
            json=f"{R}/analysis/markers.json",
        params:
            code=stage_code("rlrt.stages.analysis_markers"),
            cfg=analysis_cfg("markers"),
        threads: stage_threads("analysis")
        resources:
            **stage_resources("analysis"),
        log:
            f"{R}/logs/analysis/markers.log",
        benchmark:
            f"{R}/benchmarks/analysis/markers.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.analysis_markers --cfg {params.cfg:q} --threads {threads} "
            "--model {input.model:q} --data {input.data:q} --out-csv {output.csv:q} --out-md {output.md:q} "
            "--out-png {output.png:q} --out-scores {output.scores:q} --out-json {output.json:q} > {log:q} 2>&1"


if "reflection" in ANALYSIS:
    _F = ANALYSIS["reflection"]
    ALL_OUTPUTS.append(f"{R}/figures/fig6_reflection.png")

    rule analysis_reflection:
        input:
            base=checkpoint_dir(_F["backbone"]),
            models=run_models("reflection"),
            checkpoints=[f"{R}/runs/{_F['backbone']}/{run}/checkpoints" for run in _F["runs"]],
            data=analysis_data("reflection"),
            track=tracking_input(),
        output:
            png=report(f"{R}/figures/fig6_reflection.png", caption="../workflow/report/fig6_reflection.rst",
                       category="Analyses", subcategory="Fig 6: reflection injection",
                       labels={"result": "Fig 6: reflection injection flips"}),
            flips=f"{R}/analysis/reflection_flips.csv",
            records=f"{R}/analysis/reflection_records.csv",
            json=f"{R}/analysis/reflection.json",
        params:
            code=stage_code("rlrt.stages.analysis_reflection"),
            cfg=analysis_cfg("reflection", rl_steps=rl_settings(config, ANALYSIS["reflection"]["backbone"])["steps"]),
        threads: stage_threads("analysis")
        resources:
            **stage_resources("analysis"),
        log:
            f"{R}/logs/analysis/reflection.log",
        benchmark:
            f"{R}/benchmarks/analysis/reflection.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.analysis_reflection --cfg {params.cfg:q} --threads {threads} "
            "--base {input.base:q} --models {input.models:q} --checkpoints {input.checkpoints:q} --data {input.data:q} "
            "--out-png {output.png:q} --out-flips {output.flips:q} --out-records {output.records:q} "
            "--out-json {output.json:q} > {log:q} 2>&1"


if "shift" in ANALYSIS:
    _S = ANALYSIS["shift"]
    ALL_OUTPUTS.append(f"{R}/figures/fig7_shift.png")

    rule analysis_shift:
        input:
            base=checkpoint_dir(_S["backbone"]),
            models=run_models("shift"),
            data=analysis_data("shift"),
            track=tracking_input(),
        output:
            png=report(f"{R}/figures/fig7_shift.png", caption="../workflow/report/fig7_shift.rst",
                       category="Analyses", subcategory="Fig 7: distribution shift",
                       labels={"result": "Fig 7: shift of the fine-tuned policies"}),
            json=f"{R}/analysis/shift.json",
        params:
            code=stage_code("rlrt.stages.analysis_shift"),
            cfg=analysis_cfg("shift"),
        threads: stage_threads("analysis")
        resources:
            **stage_resources("analysis"),
        log:
            f"{R}/logs/analysis/shift.log",
        benchmark:
            f"{R}/benchmarks/analysis/shift.tsv"
        conda:
            ENV
        shell:
            "RLRT_RULE={rule} RLRT_WILDCARDS='{wildcards}' {PYTHON} -m rlrt.stages.analysis_shift --cfg {params.cfg:q} --threads {threads} "
            "--base {input.base:q} --models {input.models:q} --data {input.data:q} --out-png {output.png:q} "
            "--out-json {output.json:q} > {log:q} 2>&1"
