"""Config overlays: every config/*.yaml other than config.yaml holds only its differences and is merged over
config.yaml exactly as Snakemake merges ``--configfile`` over the Snakefile's ``configfile:``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlrt.config import ConfigError, load, load_overlay, merge_configs

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "config" / "config.yaml"
# config/*.yaml files that are data, not overlays
NOT_OVERLAYS = {"paper_numbers.yaml": "the papers' own numbers, cited, read by the claims stage (rlrt.paper_numbers)"}
OVERLAYS = sorted(p.name for p in (ROOT / "config").glob("*.yaml") if p.name != "config.yaml"
                  and p.name not in NOT_OVERLAYS)

CASES = {
    "nested dicts merge": ({"a": {"x": 1, "y": {"p": 1, "q": 2}}, "b": 0}, {"a": {"y": {"q": 3}}},
                           {"a": {"x": 1, "y": {"p": 1, "q": 3}}, "b": 0}),
    "lists replaced whole": ({"a": [1, 2, 3], "b": {"l": [{"k": 1}, {"k": 2}]}}, {"a": [9], "b": {"l": [{"k": 5}]}},
                             {"a": [9], "b": {"l": [{"k": 5}]}}),
    "scalars replaced": ({"a": 1, "b": "x", "c": 1.0}, {"a": 2.5, "b": None}, {"a": 2.5, "b": None, "c": 1.0}),
    "new keys added": ({"a": {"x": 1}}, {"a": {"z": 2}, "n": {"deep": [1]}}, {"a": {"x": 1, "z": 2}, "n": {"deep": [1]}}),
    "mapping over scalar": ({"a": 5, "b": [1]}, {"a": {"x": 1}, "b": {"y": 2}}, {"a": {"x": 1}, "b": {"y": 2}}),
    "scalar over mapping": ({"a": {"x": 1}}, {"a": 3}, {"a": 3}),
    "empty mapping changes nothing": ({"a": {"x": 1}, "b": 5}, {"a": {}, "b": {}}, {"a": {"x": 1}, "b": 5}),
}


@pytest.mark.parametrize("base, overlay, expected", CASES.values(), ids=list(CASES))
def test_merge_rule(base, overlay, expected):
    b0, o0 = copy.deepcopy(base), copy.deepcopy(overlay)
    out = merge_configs(base, overlay)
    assert out == expected
    assert base == b0 and overlay == o0  # inputs untouched
    out_sm = copy.deepcopy(base)
    from snakemake.utils import update_config

    update_config(out_sm, copy.deepcopy(overlay))
    assert out == out_sm  # the same rule as Snakemake's


def test_merge_result_shares_nothing_with_its_inputs():
    base, overlay = {"a": {"l": [1]}}, {"b": {"l": [2]}}
    out = merge_configs(base, overlay)
    out["a"]["l"].append(0)
    out["b"]["l"].append(0)
    assert base == {"a": {"l": [1]}} and overlay == {"b": {"l": [2]}}


def test_there_is_an_overlay():
    assert "ci.yaml" in OVERLAYS


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_over_config_yaml_validates(name):
    cfg = load(BASE, ROOT / "config" / name)
    assert cfg == load_overlay(ROOT / "config" / name)


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_holds_only_differences(name):
    """A leaf equal to config.yaml's is dead weight (and hides where the overlay really departs)."""
    base = yaml.safe_load(BASE.read_text())
    overlay = yaml.safe_load((ROOT / "config" / name).read_text())

    def same(b, o, path):
        for k, v in o.items():
            if isinstance(v, dict) and isinstance(b.get(k), dict):
                yield from same(b[k], v, f"{path}{k}.")
            elif k in b and b[k] == v and type(b[k]) is type(v):
                yield f"{path}{k}"

    assert not list(same(base, overlay, "")), f"{name} restates config.yaml values"


@pytest.mark.parametrize("name", OVERLAYS)
def test_merge_equals_snakemakes_update_config(name):
    from snakemake.utils import update_config

    expected = yaml.safe_load(BASE.read_text())
    update_config(expected, yaml.safe_load((ROOT / "config" / name).read_text()))
    assert json.dumps(load_overlay(ROOT / "config" / name), sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_merge_equals_the_config_snakemake_runs_with(tmp_path):
    """What a workflow with the Snakefile's ``configfile:`` sees under ``--configfile config/ci.yaml`` (Snakemake's
    own loading, not just its merge function)."""
    dump = tmp_path / "config.json"
    (tmp_path / "Snakefile").write_text(
        f"import json\nconfigfile: {str(BASE)!r}\n"
        f"with open({str(dump)!r}, 'w') as f:\n    json.dump(config, f, sort_keys=True)\n"
        "rule all:\n    default_target: True\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(tmp_path / "Snakefile"), "--directory",
         str(tmp_path / "work"), "--configfile", str(ROOT / "config" / "ci.yaml"), "--cores", "1", "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.dumps(load_overlay(ROOT / "config" / "ci.yaml"), sort_keys=True)
    assert ours == dump.read_text()


def test_the_snakefile_merges_an_overlay_over_config_yaml_from_any_directory(tmp_path):
    """The Snakefile's ``configfile:`` is found beside it, not in ``--directory`` (as the DAG tests run): a one-key
    overlay is checked as config.yaml + that key (were config.yaml skipped, 'results' would be missing instead)."""
    (tmp_path / "bad.yaml").write_text("rl: {mini_batch: eight}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "bad.yaml"), "--cores", "1", "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "invalid config: config key 'rl.mini_batch'" in proc.stdout + proc.stderr, proc.stderr[-3000:]


def test_missing_file_is_a_one_line_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    for args in [(BASE, missing), (missing,)]:
        with pytest.raises(ConfigError) as e:
            load(*args)
        msg = str(e.value)
        assert str(missing) in msg and "not found" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_overlay(missing)


def test_an_overlay_alone_is_not_a_config():
    with pytest.raises(ConfigError, match="required property"):
        load(ROOT / "config" / "ci.yaml")


def test_overlay_that_breaks_a_value_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl: {steps: -1}\n")
    with pytest.raises(ConfigError, match="'rl.steps'"):
        load_overlay(bad)
