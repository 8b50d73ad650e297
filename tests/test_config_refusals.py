"""Issue 35 §1 (second half) and §5: what used to pass validation and then crash a job (or hang the check) is
refused by ``rlrt.config.validate``, before any job, with ONE message naming the key. Each case is a plain
validation (no job, no Snakemake) except one dry run that proves nested ``--config`` values are typed; the file
costs about 30 s, most of it that dry run."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrt.config import ConfigError, load, load_overlay, typed_overrides, validate

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "config" / "config.yaml"


@pytest.fixture(scope="module")
def base():
    return load(BASE)


def refused(cfg: dict) -> str:
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    return str(e.value)


def starts(msg: str, key: str, *words: str) -> None:
    assert msg.startswith(f"config key '{key}': "), msg
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def changed(base: dict, change) -> dict:
    cfg = copy.deepcopy(base)
    change(cfg)
    return cfg


# ---- results: never /, a system folder, the home folder, or a file ----------------------------------------------

@pytest.mark.parametrize("where", ["/", "/etc", "/usr", "/bin", "/home", "/tmp", "~", "/etc/../usr"])
def test_results_may_not_be_the_root_or_a_system_folder(base, where):
    path = os.path.expanduser(where)
    msg = refused(changed(base, lambda c: c.update(results=path)))
    starts(msg, "results", "give it a folder of its own")


def test_results_may_not_be_a_link_to_a_system_folder(base, tmp_path):
    (tmp_path / "out").symlink_to("/etc")
    starts(refused(changed(base, lambda c: c.update(results=str(tmp_path / "out")))), "results", "system folder")


def test_results_may_not_be_or_lie_under_an_existing_file(base, tmp_path):
    (tmp_path / "my").write_text("keep me")
    for path in (tmp_path / "my", tmp_path / "my" / "results"):
        starts(refused(changed(base, lambda c: c.update(results=str(path)))), "results", "an existing file")
    assert (tmp_path / "my").read_text() == "keep me"
    ok = tmp_path / "my results"  # a new folder (with a space) is fine, as is one that exists
    validate(changed(base, lambda c: c.update(results=str(ok))))
    ok.mkdir()
    validate(changed(base, lambda c: c.update(results=str(ok))))


# ---- integers are integers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("rl.steps", 3.0), ("rl.question_batch", 8.0), ("eval.n", 4.0),
                                        ("seed", 1.0), ("backbones.S-base.max_response_length", 64.0),
                                        ("rl.steps", True)])
def test_an_integer_key_refuses_a_float_or_bool(base, key, value):
    """JSON Schema's ``integer`` admits 3.0, which then reached ``range(3.0)`` in the RL loop (TypeError)."""
    *parents, last = key.split(".")

    def put(c):
        node = c
        for p in parents:
            node = node[p]
        node[last] = value

    starts(refused(changed(base, put)), key, "is not of type 'integer'")


def test_a_yaml_float_in_an_overlay_is_refused_naming_the_key(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text("rl:\n  steps: 3.0\n")
    with pytest.raises(ConfigError, match=r"^config key 'rl.steps': 3.0 is not of type 'integer'"):
        load_overlay(overlay)


def test_a_number_key_still_takes_an_integer(base):
    validate(changed(base, lambda c: c["rl"].update(lr=1)))  # type number: 1 is a number


# ---- architecture, context, seed, sizes -----------------------------------------------------------------------

@pytest.mark.parametrize("arch, key, words", [
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "backbones.S-base.arch.num_key_value_heads",
     ["does not divide", "num_attention_heads (4)"]),
    ({"hidden_size": 130, "num_attention_heads": 4, "num_key_value_heads": 2}, "backbones.S-base.arch.hidden_size",
     ["not divisible", "num_attention_heads (4)"]),
    ({"hidden_size": 130, "num_attention_heads": 2, "num_key_value_heads": 2}, "backbones.S-base.arch.hidden_size",
     ["65 dimensions per head", "even"]),
])
def test_architecture_heads_must_divide(base, arch, key, words):
    starts(refused(changed(base, lambda c: c["backbones"]["S-base"]["arch"].update(arch))), key, *words)


def test_a_response_longer_than_the_context_is_refused_naming_both_keys(base):
    msg = refused(changed(base, lambda c: c["backbones"]["S-base"]["arch"].update(max_position_embeddings=8)))
    starts(msg, "backbones.S-base.max_response_length", "backbones.S-base.arch.max_position_embeddings = 8")
    # an SFT backbone has its parent's context
    msg = refused(changed(base, lambda c: (c["backbones"]["M-base"]["arch"].update(max_position_embeddings=100))))
    starts(msg, "backbones.M-thinking.max_response_length", "backbones.M-base.arch.max_position_embeddings = 100")
    msg = refused(changed(base, lambda c: c["eval"].update(max_new_tokens=100000)))
    starts(msg, "eval.max_new_tokens", "max_position_embeddings = 1024", "no room for a prompt")
    validate(changed(base, lambda c: c["eval"].update(max_new_tokens=1000)))  # 24 tokens left: the jobs check


@pytest.mark.parametrize("seed", [10**20, 2**63, 2**31, -1])
def test_the_seed_is_bounded(base, seed):
    starts(refused(changed(base, lambda c: c.update(seed=seed))), "seed")
    starts(refused(changed(base, lambda c: c["data"].update(seed=seed))), "data.seed")


def test_the_seed_bound_takes_every_valid_seed(base):
    validate(changed(base, lambda c: c.update(seed=2**31 - 1)))


def test_claims_n_boot_is_bounded(base):
    starts(refused(changed(base, lambda c: c["claims"].update(n_boot=10**9))), "claims.n_boot", "60 GB")
    validate(changed(base, lambda c: c["claims"].update(n_boot=100000)))


# ---- inconsistent pairs ----------------------------------------------------------------------------------------

def test_analysis_pairs_must_be_ordered(base):
    msg = refused(changed(base, lambda c: c["analysis"]["markers"].update(min_chars=20, max_chars=15)))
    starts(msg, "analysis.markers.min_chars", "analysis.markers.max_chars (15)")
    msg = refused(changed(base, lambda c: c["analysis"]["heatmaps"].update(candidates_show=8, candidates_top=5)))
    starts(msg, "analysis.heatmaps.candidates_show", "analysis.heatmaps.candidates_top")


# ---- names that collide on a case-insensitive filesystem ------------------------------------------------------

def test_backbone_names_differing_only_in_case_are_refused(base):
    msg = refused(changed(base, lambda c: c["backbones"].update({"s-base": copy.deepcopy(c["backbones"]["S-base"])})))
    starts(msg, "backbones.s-base", "'S-base'", "only in case")


# ---- methods.skip that leaves an RL backbone nothing ----------------------------------------------------------

def test_skipping_every_method_of_a_backbone_without_other_runs_is_refused(base):
    def skip_all(c):
        c["methods"]["skip"] = {"instruct": list(c["methods"]["run"])}
        c["experiments"]["extra_runs"].pop("rlrt_all", None)

    starts(refused(changed(base, skip_all)), "methods.skip.instruct", "'S-instruct'", "no run")


def test_skipping_every_method_is_fine_when_an_extra_run_remains(base):
    from rlrt.claims import planned_runs

    cfg = changed(base, lambda c: c["methods"].update(skip={"thinking": list(c["methods"]["run"])}))
    cfg["claims"]["backbones"] = [b for b in cfg["claims"]["backbones"] if b != "M-thinking"]
    cfg.pop("analysis")  # its studies name M-thinking's GRPO run
    validate(cfg)
    assert planned_runs(cfg)["M-thinking"] and "grpo" not in planned_runs(cfg)["M-thinking"]  # its SRPO sweep


# ---- nested --config values ------------------------------------------------------------------------------------

def test_nested_config_values_are_typed_as_yaml_would():
    """Snakemake reads ``--config 'rl={steps: 5}'`` with YAML's BaseLoader: every nested scalar a string."""
    got = typed_overrides({"rl": {"steps": "5", "lr": "1e-6", "clip_high": "0.28", "name": "abc", "on": "true",
                                  "none": "null", "list": ["1", "x"]}, "results": "007", "seed": 3})
    assert got == {"rl": {"steps": 5, "lr": 1e-6, "clip_high": 0.28, "name": "abc", "on": True, "none": None,
                          "list": [1, "x"]}, "results": "007", "seed": 3}
    assert typed_overrides(None) == {}


def test_snakemake_nested_config_reaches_validation_typed(tmp_path):
    """One real dry run: ``--config 'rl={steps: 5}'`` was refused as "'5' is not of type 'integer'"; a wrong type
    inside it is still refused naming the key."""
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "-n", "-q", "--cores", "1", "--configfile", str(ROOT / "config" / "ci.yaml"),
           "--config", "rl={steps: 5, question_batch: abc}", f"results={tmp_path / 'results'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'rl.question_batch': 'abc' is not of type 'integer'" in out, out[-2000:]
    assert "'5' is not of type" not in out, out[-2000:]


# ---- a YAML alias bomb ----------------------------------------------------------------------------------------

def _bomb(under: str) -> str:
    """~420 bytes: 9 levels of 9 aliases each (9^9 = 387 M leaves when expanded)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return f"{under}:\n" + "\n".join("  " + ln for ln in lines) + "\n"


def test_an_alias_bomb_under_an_unknown_key_is_refused_quickly(tmp_path):
    overlay = tmp_path / "bomb.yaml"
    overlay.write_text(_bomb("not_a_key"))
    assert len(overlay.read_bytes()) < 600
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"^config key 'not_a_key': unknown key"):
        load_overlay(overlay)
    assert time.monotonic() - t0 < 5


def test_an_alias_bomb_under_a_known_key_is_refused_quickly(tmp_path):
    levels = ["&a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    overlay = tmp_path / "bomb.yaml"
    overlay.write_text(f"rl_backbones: [{', '.join(levels)}]\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"^config key 'rl_backbones': holds .* values"):
        load_overlay(overlay)
    assert time.monotonic() - t0 < 5


def test_the_python_m_check_reports_the_bomb_in_one_line(tmp_path):
    overlay = tmp_path / "bomb.yaml"
    overlay.write_text(_bomb("not_a_key"))
    proc = subprocess.run([sys.executable, "-m", "rlrt.config", str(overlay)], capture_output=True, text=True,
                          cwd=ROOT, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr.startswith("invalid config: config key 'not_a_key': unknown key"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_dotted_config_key_is_answered_in_one_line_by_make_run(capsys):
    """``--config rl.lr=abc`` ends in Snakemake's ValueError traceback (its keys are top-level names); ``make run``
    / ``make dryrun`` (rlrt.driver) answer it first, in one line, naming the way to give a nested value."""
    from rlrt.driver import config_entry_problem, main

    assert config_entry_problem(["rl={lr: abc}", "results=out", "seed=3"]) is None
    assert config_entry_problem(["rl.lr=abc"]) == ("--config rl.lr=abc: 'rl.lr' is not a top-level config key; a "
                                                  "nested key is given as rl={lr: VALUE}")
    assert main(["-n", "--cores", "1", "--config", "rl.lr=abc"]) == 1
    err = capsys.readouterr().err
    assert err == "make run: --config rl.lr=abc: 'rl.lr' is not a top-level config key; a nested key is given as " \
                  "rl={lr: VALUE}\n"


@pytest.mark.parametrize("key", ["hidden_size", "intermediate_size", "num_hidden_layers"])
def test_a_stand_ins_size_is_bounded(base, key):
    """``hidden_size: 1000000`` would allocate hundreds of GB in the backbone job: refused with the bound's reason."""
    msg = refused(changed(base, lambda c: c["backbones"]["S-base"]["arch"].update({key: 1_000_000})))
    starts(msg, f"backbones.S-base.arch.{key}", "greater than the maximum of 131072", "sanity bound")
