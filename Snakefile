# rlrt: one `snakemake` reproduces the RLRT / RLT tables. Wiring only: every stage is one module of src/rlrt.
from snakemake.utils import min_version

min_version("9.0")


# Beside this Snakefile whatever --directory is; a --configfile (an overlay such as config/ci.yaml) is merged over it.
configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


# Under --sdm apptainer every job runs in this image (config `container`; rules/common.smk refuses --sdm apptainer
# without one); --sdm conda uses each rule's `conda:`.
if config.get("container"):

    container: config["container"]


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/backbones.smk"
include: "rules/rl.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/analysis.smk"
include: "rules/rlt.smk"
include: "rules/claims.smk"
include: "rules/artifacts.smk"


# Jobs die with their driver (rlrt.driverwatch): the driver names itself to the jobs it starts (local execution).
# The results tree's manifest (rlrt.manifest): every output's SHA-256, recorded by rlrt.io's writers in the jobs.
onstart:
    mark_driver(workflow.local_exec)
    init_manifest(R)


# Deferred MLflow logging (tracking.deferred): the jobs' runs are logged once, here, whatever the outcome; and the
# benchmark files Snakemake wrote (not through rlrt.io) recorded in the manifest.
onsuccess:
    flush_tracking()
    record_new(f"{R}/benchmarks")


onerror:
    flush_tracking()
    record_new(f"{R}/benchmarks")


rule all:
    input:
        ALL_OUTPUTS,
    default_target: True


# Every rule's jobs in `make run`'s order: longest chain of job-seconds first (rules/common.smk, job_priority).
if PRIORITIES:
    for _rule in workflow.rules:
        _rule.priority = job_priority(_rule.name)
