"""Config reliability: values that used to pass silently stop with one line naming the key -- non-finite numbers,
unchecked sweep values (and the run ids / folder names they become), duplicated YAML keys, absurd sizes, checkpoints
past the last step, tracking stores in missing folders, missing config files."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlrt.claims import planned_runs
from rlrt.config import ConfigError, SCHEMA, check_config_files, load, load_overlay, validate
from rlrt.plan import run_id, run_id_problem

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "config" / "config.yaml"


@pytest.fixture()
def cfg():
    return load(BASE)


def refused(bad: dict, schema=SCHEMA) -> str:
    with pytest.raises(ConfigError) as e:
        validate(bad, schema)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def starts(msg: str, key: str, rest: str = "") -> None:
    prefix = f"config key '{key}': {rest}"
    assert msg.startswith(prefix), f"{msg!r} does not start with {prefix!r}"


def sweep(c: dict, method: str, key: str, values: list, backbones=("S-base",)) -> int:
    """Append a sweep to ``c`` and return its index."""
    sweeps = c.setdefault("experiments", {}).setdefault("sweeps", [])
    sweeps.append({"method": method, "key": key, "values": values, "backbones": list(backbones)})
    return len(sweeps) - 1


# ---- 1. every number of the config is finite ---------------------------------------------------------------------

NONFINITE = [
    (lambda c: c["rl"].update(lr=math.nan), "rl.lr", "nan"),
    (lambda c: c["rl"].update(temperature=math.inf), "rl.temperature", "inf"),
    (lambda c: c["eval"].update(top_p=math.nan), "eval.top_p", "nan"),
    (lambda c: c["rl"].update(weight_decay=math.inf), "rl.weight_decay", "inf"),
    (lambda c: c["rl"].update(grad_clip=-math.inf), "rl.grad_clip", "-inf"),
    (lambda c: c["methods"].setdefault("srpo", {}).update(beta=math.nan), "methods.srpo.beta", "nan"),
    (lambda c: c["method_overrides"]["instruct"]["rlrt"].update(eps_w=math.inf),
     "method_overrides.instruct.rlrt.eps_w", "inf"),
    (lambda c: c["experiments"]["sweeps"][0]["values"].append(math.nan), "experiments.sweeps[0].values[3]", "nan"),
    (lambda c: c["analysis"]["shift"].update(tail_thresholds=[0.1, math.nan]), "analysis.shift.tail_thresholds[1]",
     "nan"),
    (lambda c: c["rlt"]["teacher_rl"].update(alpha=math.inf), "rlt.teacher_rl.alpha", "inf"),
    (lambda c: c["backbones"]["S-base"].update(chat_template_kwargs={"deep": [math.nan]}),
     "backbones.S-base.chat_template_kwargs.deep[0]", "nan"),  # anywhere, before the schema (an unknown key's value
    # is not walked: the unknown key is refused first, tests/test_config_refusals.py)
]


@pytest.mark.parametrize("mutate, key, shown", NONFINITE, ids=[k for _, k, _ in NONFINITE])
def test_non_finite_numbers_are_refused_anywhere(cfg, mutate, key, shown):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    starts(refused(bad), key, f"{shown} is not a finite number")


def test_yaml_nan_and_inf_literals_are_refused(tmp_path):
    for literal, key in [(".nan", "rl.lr"), (".inf", "eval.temperature"), ("-.inf", "rl.clip_high"),
                         (".NaN", "methods.rlrt.eps_w")]:
        section, name = key.rsplit(".", 1)
        overlay = tmp_path / "bad.yaml"
        overlay.write_text(yaml.safe_dump(_nest(section, {name: 0})).replace(" 0", f" {literal}"))
        with pytest.raises(ConfigError) as e:
            load_overlay(overlay)
        starts(str(e.value), key, "")
        assert "is not a finite number" in str(e.value)


def _nest(dotted: str, leaf: dict) -> dict:
    out = leaf
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


# ---- 2. sweep values are checked as the key they sweep; run ids are safe folder names ----------------------------

SWEEP_VALUES = [
    ("rlrt", "eps_w", [0.5, -1], 1, "not a valid methods.rlrt.eps_w: -1 is less than or equal to the minimum of 0"),
    ("rlrt", "eps_w", ["big"], 0, "not a valid methods.rlrt.eps_w: 'big' is not of type 'number'"),
    ("rlsd", "eps_w", [11], 0, "not a valid methods.rlsd.eps_w: 11 is greater than the maximum of 10"),
    ("rlsd", "context", ["reference", "nonsense"], 1, "not a valid methods.rlsd.context: 'nonsense' is not one of"),
    ("rlsd", "context", ["../x"], 0, "not a valid methods.rlsd.context: '../x' is not one of"),
    ("rlsd", "context", ["sïbling"], 0, "not a valid methods.rlsd.context: 'sïbling' is not one of"),
    ("rlrt", "lambda_init", [True], 0, "not a valid methods.rlrt.lambda_init: True is not of type 'number'"),
    ("rlrt", "lambda_decay_steps", [10, 2.5], 1, "not a valid methods.rlrt.lambda_decay_steps:"),
    ("srpo", "beta", [None], 0, "not a valid methods.srpo.beta: None is not of type 'number'"),
    ("sdpo", "topk", [0], 0, "not a valid methods.sdpo.topk: 0 is less than the minimum of 1"),
    # in the schema's enum (DIVER's variant), not one of GRPO+EB's own: the method's settings refuse it
    ("grpo_eb", "variant", ["loss", "equation"], 1,
     "methods.grpo_eb.variant: 'equation' is not one of ['advantage', 'loss'] for this method"),
]


@pytest.mark.parametrize("method, key, values, j, why", SWEEP_VALUES,
                         ids=[f"{m}.{k}={v[-1]!r}" for m, k, v, _, _ in SWEEP_VALUES])
def test_sweep_values_are_checked_as_the_key_they_sweep(cfg, method, key, values, j, why):
    bad = copy.deepcopy(cfg)
    backbones = ("M-base",) if method == "grpo_eb" else ("S-base",)
    i = sweep(bad, method, key, values, backbones)
    starts(refused(bad), f"experiments.sweeps[{i}].values[{j}]", why)


def test_valid_sweep_values_still_plan_their_runs(cfg):
    ok = copy.deepcopy(cfg)
    sweep(ok, "rlrt", "lambda_decay_steps", [None, 20], ("S-instruct",))  # nullable setting: null is a value
    sweep(ok, "rlrt", "eps_w", [1.0e-3, 10])
    sweep(ok, "grpo_eb", "variant", ["loss"], ("M-base",))
    validate(ok)
    runs = planned_runs(ok)
    assert {"rlrt@lambda_decay_steps=null", "rlrt@lambda_decay_steps=20"} <= set(runs["S-instruct"])
    assert {"rlrt@eps_w=0.001", "rlrt@eps_w=10"} <= set(runs["S-base"])
    assert "grpo_eb@variant=loss" in runs["M-base"]


@pytest.mark.parametrize("run, why", [
    ("rlsd@context=../x", "may only use the characters"),
    ("rlsd@context=a/b", "may only use the characters"),
    ("rlsd@context=sïbling", "may only use the characters"),
    ("rlsd@context=a b", "may only use the characters"),
    ("rlsd@context=a..b", "contains '..'"),
    ("rlsd@context=" + "x" * 120, "longer than 100 characters"),
])
def test_unsafe_run_ids_are_named(run, why):
    assert why in run_id_problem(run)


def test_shipped_run_ids_are_safe():
    for name in ("config.yaml", "ci.yaml", "paper.yaml"):
        for runs in planned_runs(load_overlay(ROOT / "config" / name)).values():
            assert all(run_id_problem(r) is None for r in runs), runs
    assert run_id_problem(run_id("rlrt", "eps_w", 1e20)) is None  # "1e+20": '+' is a safe character


def test_a_free_string_setting_still_cannot_make_an_unsafe_run_id(cfg, tmp_path):
    """Were a setting's schema a free string, the run id check is what keeps ``..`` and ``/`` out of the folder
    names: the same sweep with the real schema stops at the enum already."""
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["$defs"]["method_settings"]["properties"]["context"] = {"type": "string"}
    loose = tmp_path / "schema.yaml"
    loose.write_text(yaml.safe_dump(schema))
    for value, why in [("../x", "run id 'rlsd@context=../x' may only use the characters [A-Za-z0-9_.=@+-]"),
                       ("a..b", "run id 'rlsd@context=a..b' contains '..'"),
                       ("naïve", "run id 'rlsd@context=naïve' may only use the characters")]:
        bad = copy.deepcopy(cfg)
        i = sweep(bad, "rlsd", "context", [value])
        starts(refused(bad, loose), f"experiments.sweeps[{i}].values[0]", why)


# ---- 3. a key given twice in one YAML file -----------------------------------------------------------------------

DUPLICATES = [
    ("rl:\n  lr: 1.0e-5\n  steps: 6\n  lr: 2.0e-5\n", "line 4: duplicate key 'rl.lr' (first given at line 2)"),
    ("seed: 1\nrl: {steps: 6}\nseed: 2\n", "line 3: duplicate key 'seed' (first given at line 1)"),
    ("rl: {steps: 6}\nrl: {lr: 1.0e-5}\n", "line 2: duplicate key 'rl' (first given at line 1)"),
    ("experiments:\n  sweeps:\n    - {method: rlrt, key: eps_w, values: [0.5], backbones: [S-base], key: beta}\n",
     "line 3: duplicate key 'experiments.sweeps[0].key' (first given at line 3)"),
    ("methods:\n  rlrt: {eps_w: 0.5}\n  rlrt:\n    eps_w: 0.2\n", "line 3: duplicate key 'methods.rlrt' (first given at line 2)"),
]


@pytest.mark.parametrize("text, where", DUPLICATES)
def test_duplicated_yaml_key_names_file_key_and_line(tmp_path, text, where):
    overlay = tmp_path / "dup.yaml"
    overlay.write_text(text)
    for call in (lambda: load_overlay(overlay), lambda: load(BASE, overlay), lambda: check_config_files([overlay])):
        with pytest.raises(ConfigError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(f"{overlay}: {where}; the later value would silently win"), msg
        assert "\n" not in msg


def test_merge_keys_may_override_and_shipped_configs_have_no_duplicates(tmp_path):
    overlay = tmp_path / "anchors.yaml"
    overlay.write_text("x-rl: &rl {steps: 6, lr: 1.0e-4}\n"
                       "rl:\n  <<: *rl\n  lr: 2.0e-4\n")  # an anchor's key overridden on purpose: YAML's merge
    merged = yaml.safe_load(overlay.read_text())
    assert merged["rl"] == {"steps": 6, "lr": 2.0e-4}
    check_config_files([overlay])
    check_config_files(sorted((ROOT / "config").glob("*.yaml")))


# ---- 4. absurd sizes ---------------------------------------------------------------------------------------------

SIZES = [
    (lambda c: c["rl"].update(steps=10**12), "rl.steps", "1000000000000 is greater than the maximum of 10000000"),
    (lambda c: c["data"]["splits"]["train"].update(n=10**9), "data.splits.train.n",
     "1000000000 is greater than the maximum of 100000000"),
    (lambda c: c["backbones"]["S-base"].update(steps=10**8), "backbones.S-base.steps",
     "100000000 is greater than the maximum of 10000000"),
    (lambda c: c["rl"].update(warmup_steps=10**9), "rl.warmup_steps",
     "1000000000 is greater than the maximum of 10000000"),
    (lambda c: c["rlt"]["student_sft"].update(steps=10**10), "rlt.student_sft.steps",
     "10000000000 is greater than the maximum of 10000000"),
    (lambda c: c["rlt"]["countdown"].update(n_train=10**9), "rlt.countdown.n_train",
     "1000000000 is greater than the maximum of 100000000"),
    (lambda c: c["analysis"].update(position_chunk=10**9), "analysis.position_chunk",
     "1000000000 is greater than the maximum of 1048576"),
    (lambda c: c["analysis"].update(micro_batch=10**7), "analysis.micro_batch",
     "10000000 is greater than the maximum of 1048576"),
    (lambda c: c["analysis"].update(batch_size=10**7), "analysis.batch_size",
     "10000000 is greater than the maximum of 1048576"),
    (lambda c: c["rl"].update(gen_batch_size=10**8), "rl.gen_batch_size",
     "100000000 is greater than the maximum of 1048576"),
]


@pytest.mark.parametrize("mutate, key, why", SIZES, ids=[k for _, k, _ in SIZES])
def test_absurd_sizes_are_refused_with_the_reason(cfg, mutate, key, why):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    msg = refused(bad)
    starts(msg, key, why)
    assert "a sanity bound" in msg and "typo" in msg  # the schema's description says why the bound is there


def test_absurd_hub_subsample_is_refused():
    bad = load_overlay(ROOT / "config" / "paper.yaml")
    bad["data"]["datasets"]["train"]["max_rows"] = 10**9
    msg = refused(bad)
    assert msg.startswith("config key 'data.datasets.train.max_rows': "), msg


def test_the_bounds_themselves_are_accepted(cfg):
    ok = copy.deepcopy(cfg)
    ok["rl"]["steps"] = 10**7
    ok["data"]["splits"]["train"]["n"] = 10**8
    ok["backbones"]["S-base"]["steps"] = 10**7
    validate(ok)


# ---- 5. save steps past the last step; tracking stores in missing folders ----------------------------------------

def test_save_steps_beyond_rl_steps_are_refused(cfg):
    bad = copy.deepcopy(cfg)
    n = cfg["rl"]["steps"]
    bad["rl"]["save_steps"] = [4, 8, n + 3, n + 10]
    starts(refused(bad), "rl.save_steps", f"[{n + 3}, {n + 10}] beyond rl.steps = {n}")
    ok = copy.deepcopy(cfg)
    ok["rl"]["save_steps"] = [4, ok["rl"]["steps"]]  # the last step is the final model: harmless
    validate(ok)


def test_a_backbones_rl_block_overrides_its_runs_only(cfg):
    """``backbones.<b>.rl`` takes ``rl`` over for that backbone's runs (rlrt.plan.rl_settings); the others keep
    ``rl``; a key the block does not have, and a length that ends before a save step, name the backbone's key."""
    from rlrt.plan import rl_settings

    ok = copy.deepcopy(cfg)
    ok["backbones"]["M-base"]["rl"] = {"steps": 80}
    validate(ok)
    assert rl_settings(ok, "M-base") == {**cfg["rl"], "steps": 80}
    assert rl_settings(ok, "S-base") == cfg["rl"]
    bad = copy.deepcopy(ok)
    bad["backbones"]["M-base"]["rl"]["temprature"] = 0.7
    assert "backbones.M-base.rl" in refused(bad) and "temprature" in refused(bad)
    bad = copy.deepcopy(ok)
    bad["backbones"]["M-base"]["rl"] = {"steps": 15}  # rl.save_steps [10, 20]: step 20 never comes
    starts(refused(bad), "backbones.M-base.rl.steps", "15 steps end before rl.save_steps [20]")
    bad = copy.deepcopy(ok)
    bad["backbones"]["M-base"]["rl"] = {"mini_batch": cfg["rl"]["question_batch"] + 1}
    starts(refused(bad), "backbones.M-base.rl.mini_batch", "the mini-batch")


def test_overlay_that_shortens_rl_keeps_no_unreachable_save_step(tmp_path):
    """config.yaml saves at steps 10 and 20: an overlay that only shortens rl.steps to 6 plans checkpoints that no
    run reaches."""
    overlay = tmp_path / "short.yaml"
    overlay.write_text("rl: {steps: 6}\n")
    with pytest.raises(ConfigError) as e:
        load_overlay(overlay)
    starts(str(e.value), "rl.save_steps", "[10, 20] beyond rl.steps = 6")


@pytest.mark.parametrize("uri, what", [
    ("sqlite:////nonexistent-rlrt-dir/mlflow.db", "the SQLite file's folder '/nonexistent-rlrt-dir'"),
    ("sqlite:///elsewhere-rlrt/mlflow/mlflow.db?mode=rwc", "the SQLite file's folder 'elsewhere-rlrt/mlflow'"),
    ("file:///nonexistent-rlrt-dir/mlruns", "the store folder '/nonexistent-rlrt-dir/mlruns'"),
    ("file:results/../mlruns-rlrt", "the store folder 'results/../mlruns-rlrt'"),
])
def test_tracking_store_in_a_missing_folder_is_refused(cfg, uri, what, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = copy.deepcopy(cfg)
    bad["tracking"]["uri"] = uri
    starts(refused(bad), "tracking.uri", f"{what} does not exist and is not under results ('results'")


def test_tracking_stores_that_will_exist_are_accepted(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stores").mkdir()
    for uri in ["sqlite:///results/mlflow/mlflow.db",  # the workflow creates <results>/mlflow/
                "sqlite:///results/deeper/store/mlflow.db",
                f"sqlite:///{tmp_path}/stores/mlflow.db",
                f"sqlite:///{tmp_path}/results/mlflow/mlflow.db",
                "sqlite:///mlflow.db",  # the working directory itself
                "file:stores", f"file://{tmp_path}/stores", "file:results/mlruns",
                "https://mlflow.example.org", "http://localhost:5000"]:
        ok = copy.deepcopy(cfg)
        ok["tracking"]["uri"] = uri
        validate(ok)
    off = copy.deepcopy(cfg)
    off["tracking"].update(enabled=False, uri="sqlite:////nonexistent-rlrt-dir/mlflow.db")  # unused: not checked
    validate(off)
    absolute = copy.deepcopy(cfg)
    absolute.update(results=str(tmp_path / "elsewhere" / "res"))
    absolute["tracking"]["uri"] = f"sqlite:///{tmp_path}/elsewhere/res/mlflow/mlflow.db"
    validate(absolute)


# ---- method settings errors carry the quoted key like every other -----------------------------------------------

def test_method_choice_error_starts_with_the_quoted_key(cfg):
    bad = copy.deepcopy(cfg)
    bad["method_overrides"]["instruct"]["grpo_eb"] = {"variant": "equation"}  # DIVER's, in the schema's enum
    starts(refused(bad), "method_overrides.instruct.grpo_eb.variant",
           "'equation' is not one of ['advantage', 'loss'] for this method")


# ---- 6. a missing config file; `python -m rlrt.config` (one line, for wrappers) ----------------------------------

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlrt.config", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_config_cli_answers_in_one_line(tmp_path):
    proc = run_cli("config/ci.yaml")
    assert proc.returncode == 0 and proc.stdout.startswith("config OK: "), proc.stderr
    missing = tmp_path / "missing.yaml"
    proc = run_cli(str(missing))
    assert proc.returncode == 1 and proc.stderr == f"invalid config: {missing}: config file not found\n"
    dup = tmp_path / "dup.yaml"
    dup.write_text("rl: {steps: 6}\nrl: {steps: 7}\n")
    proc = run_cli(str(dup))
    assert proc.returncode == 1 and proc.stderr.startswith(f"invalid config: {dup}: line 2: duplicate key 'rl'")
    nan = tmp_path / "nan.yaml"
    nan.write_text("rl: {lr: .nan}\n")
    proc = run_cli(str(nan))
    assert proc.returncode == 1 and proc.stderr.startswith("invalid config: config key 'rl.lr': nan is not a finite")
    assert "Traceback" not in proc.stderr


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: is a folder, not a config file")):
        load(BASE, tmp_path)


# ---- end to end: `snakemake -n` with an overlay stops before any job, one line, no traceback ---------------------

E2E = [
    ("rl: {lr: .nan}\n", "rl.lr"),
    ("experiments:\n  sweeps:\n    - {method: rlrt, key: eps_w, values: [0.5, -1], backbones: [S-base]}\n",
     "experiments.sweeps[0].values[1]"),
    ("rl: {steps: 1000000000000}\n", "rl.steps"),
    ("rl: {save_steps: [4, 8, 50]}\n", "rl.save_steps"),
    ("tracking: {uri: 'sqlite:////nonexistent-rlrt-dir/mlflow.db'}\n", "tracking.uri"),
]


@pytest.mark.parametrize("text, key", E2E, ids=[k for _, k in E2E])
def test_snakemake_dry_run_names_the_key(tmp_path, text, key):
    (tmp_path / "bad.yaml").write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "bad.yaml"), "--cores", "1", "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"invalid config: config key '{key}'" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "results").exists()


def test_snakemake_refuses_a_duplicated_key_in_a_configfile(tmp_path):
    """Snakemake's own reader keeps the later of two equal keys; rules/common.smk reads every --configfile again
    strictly (check_config_files(workflow.configfiles)) and stops the run before any job, naming file and line."""
    from conftest import ROOT

    overlay = tmp_path / "dup.yaml"
    overlay.write_text("rl:\n  steps: 3\nseed: 1\nrl:\n  steps: 4\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path), "--configfile", str(overlay), "--cores", "1", "-n"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"{overlay}: line 4: duplicate key 'rl' (first given at line 1)" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_make_checks_the_configfile_before_snakemake(tmp_path):
    """`make run` / `make dryrun` call `python -m rlrt.config $(CONFIG)` first: a missing file is one line."""
    from conftest import ROOT

    makefile = (ROOT / "Makefile").read_text()
    for target in ("run", "dryrun"):
        body = makefile.split(f"\n{target}: setup\n", 1)[1].split("\n\n", 1)[0]
        first, second = body.strip().splitlines()[:2]
        # then Snakemake, through rlrt.driver (which execs it after its recovery checks)
        assert first.strip() == "$(BIN)/python -m rlrt.config $(call q,$(CONFIG))", target  # (quoted: test_quoting.py)
        assert "-m rlrt.driver" in second, target
    proc = subprocess.run([sys.executable, "-m", "rlrt.config", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    assert f"{tmp_path / 'nope.yaml'}: config file not found" in proc.stderr + proc.stdout
