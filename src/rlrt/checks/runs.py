"""What the RL runs train with and what the plan trains: RL batch sizes and save steps (per backbone),
evaluation ks and engine, method settings and sweeps (each value checked as the key it sweeps), every backbone's
place in the plan (``methods.skip``), the experiments' references to planned runs, and a teacher context the
data can give."""

from __future__ import annotations

from typing import Any

from rlrt.errors import ConfigError
from rlrt.plan import method_config, parse_run_id, rl_settings, run_config, run_id, run_id_problem, settings_error
from rlrt.schema import schema_message, validator


def check_rl(cfg: dict[str, Any]) -> None:
    # Each RL backbone's runs take rl over by backbones.<b>.rl (backbones.<b>.steps is pretraining / SFT; the RLT
    # cold start runs without intermediate checkpoints), so every backbone's RL length is checked against the save
    # steps, and the message names the key that made the conflict.
    def unreached(rl: dict[str, Any]) -> list[int]:
        return [k for k in rl.get("save_steps") or [] if k > rl["steps"]]

    rl = cfg["rl"]
    if rl["mini_batch"] > rl["question_batch"]:
        raise ConfigError("config key 'rl.mini_batch': larger than rl.question_batch")
    late = unreached(rl)
    if late:
        raise ConfigError(f"config key 'rl.save_steps': {late} beyond rl.steps = {rl['steps']}: no RL run reaches "
                          f"that step, so the checkpoint would silently never be written")
    for name in cfg["rl_backbones"]:
        over = cfg["backbones"][name].get("rl") or {}
        mine = rl_settings(cfg, name)
        if over and mine["mini_batch"] > mine["question_batch"]:
            key = "mini_batch" if "mini_batch" in over else "question_batch"
            raise ConfigError(f"config key 'backbones.{name}.rl.{key}': the mini-batch ({mine['mini_batch']}) is "
                              f"larger than the question batch ({mine['question_batch']})")
        late = unreached(mine)
        if late:
            raise ConfigError(f"config key 'backbones.{name}.rl.steps': {mine['steps']} steps end before rl.save_steps "
                              f"{late}: no RL run of {name} reaches that step, so the checkpoint would silently never "
                              f"be written")
    for k in cfg["eval"]["ks"]:
        if k > cfg["eval"]["n"]:
            raise ConfigError(f"config key 'eval.ks': k={k} is larger than eval.n={cfg['eval']['n']}")
    if cfg["backend"] == "verl" and cfg["eval"].get("engine") == "local":
        raise ConfigError("config key 'eval.engine': local, but backend: verl evaluates with vLLM only (the "
                          "checkpoints are evaluated at paper scale in the GPU environment); set eval.engine: vllm "
                          "or remove it")


def check_experiments(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    """Extra runs and sweeps train on RL backbones, sweep a setting of their method with values that are valid for
    it; every ``methods.<m>`` / ``method_overrides`` key is a setting of its method."""
    exp = cfg.get("experiments") or {}
    backbones = set(cfg["rl_backbones"])  # RL runs live on these
    for method, bbs in (exp.get("extra_runs") or {}).items():
        for b in bbs:
            if b not in backbones:
                raise ConfigError(f"config key 'experiments.extra_runs.{method}': unknown backbone {b!r}")
    for i, sw in enumerate(exp.get("sweeps") or []):
        for b in sw["backbones"]:
            if b not in backbones:
                raise ConfigError(f"config key 'experiments.sweeps[{i}].backbones': unknown backbone {b!r}")
        from rlrt.methods.settings import field_names, settings_class

        if sw["key"] not in field_names(settings_class(sw["method"])):
            raise ConfigError(f"config key 'experiments.sweeps[{i}].key': {sw['key']!r} is not a setting of "
                              f"method {sw['method']!r} (its settings: "
                              f"{field_names(settings_class(sw['method']))})")
    _method_checks(cfg)
    _sweep_value_checks(cfg, schema)


def check_plan(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """``runs``: the whole plan (:func:`rlrt.claims.planned_runs`). Every RL backbone trains something (a
    ``methods.skip`` that leaves one nothing is refused: planning it nothing would leave an empty Table 1 row), and
    the experiments name runs the plan trains. (Run ids cannot differ only in case: methods and enum values are
    lower case, numbers are written by ``json.dumps``.)"""
    exp = cfg.get("experiments") or {}
    backbones = set(cfg["rl_backbones"])
    for b in cfg["rl_backbones"]:
        if not runs.get(b):
            kind = cfg["backbones"][b]["kind"]
            raise ConfigError(f"config key 'methods.skip.{kind}': skips every method of methods.run on {b!r} (kind "
                              f"{kind!r}), and no extra run or sweep trains it, so RL backbone {b!r} would have no "
                              f"run and an empty Table 1 row; remove {b!r} from rl_backbones or train something there")
    for name in ("table3", "fig8", "gate_ablation"):
        block = exp.get(name)
        if not block:
            continue
        b = block["backbone"]
        if b not in backbones:
            raise ConfigError(f"config key 'experiments.{name}.backbone': unknown backbone {b!r}")
        for r in block.get("runs") or []:
            if r not in runs[b]:
                raise ConfigError(f"config key 'experiments.{name}.runs': run {r!r} is not trained on {b!r} "
                                  f"(trained there: {runs[b]}); add it to methods.run, experiments.extra_runs "
                                  f"or a sweep")
    if exp.get("fig8") and exp["fig8"]["n"] < max(exp["fig8"].get("ks") or [1]):
        raise ConfigError("config key 'experiments.fig8.ks': a k is larger than experiments.fig8.n")
    for s in (exp.get("fig8") or {}).get("splits") or []:
        if s not in cfg["data"]["test_splits"]:
            raise ConfigError(f"config key 'experiments.fig8.splits': {s!r} is not one of data.test_splits "
                              f"({cfg['data']['test_splits']})")


def _method_checks(cfg: dict[str, Any]) -> None:
    """Every key of ``methods.<m>`` and ``method_overrides.<kind>.<m>`` is a field of that method's settings class
    (``rlrt.methods.settings``): a key another method has, or a typo, stops here with its full name."""
    from rlrt.methods.settings import field_names, make_settings, settings_class

    blocks = [(f"methods.{m}", m, v) for m, v in cfg["methods"].items() if m not in ("run", "skip")]
    for kind, per in (cfg.get("method_overrides") or {}).items():
        blocks += [(f"method_overrides.{kind}.{m}", m, v) for m, v in (per or {}).items()]
    for where, method, values in blocks:
        allowed = field_names(settings_class(method))
        for key in values or {}:
            if key not in allowed:
                raise ConfigError(f"config key '{where}.{key}': not a setting of method {method!r}; its settings: "
                                  f"{allowed}")
        try:
            make_settings(method, values, where)
        except (KeyError, ValueError) as e:
            raise settings_error(e) from None


def _sweep_value_checks(cfg: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every value of ``experiments.sweeps[i].values`` is checked exactly as the key it sweeps: against that
    setting's schema (type, range, enum: ``$defs/method_settings``), then as a run id, then by building the method's
    settings on each swept backbone with that value (a method's own choices, e.g. GRPO+EB's ``variant``)."""
    import jsonschema

    from rlrt.methods.settings import make_settings

    props = schema["$defs"]["method_settings"]["properties"]
    for i, sw in enumerate((cfg.get("experiments") or {}).get("sweeps") or []):
        method, key = sw["method"], sw["key"]
        sub = {"$defs": schema["$defs"], **props[key]} if key in props else None
        for j, value in enumerate(sw["values"]):
            where = f"experiments.sweeps[{i}].values[{j}]"
            if sub is not None:
                errors = list(validator(sub).iter_errors(value))
                if errors:
                    err = jsonschema.exceptions.best_match(errors)
                    raise ConfigError(f"config key {where!r}: not a valid methods.{method}.{key}: "
                                      f"{schema_message(err)}")
            problem = run_id_problem(run_id(method, key, value))
            if problem:
                raise ConfigError(f"config key {where!r}: {problem}")
            for b in sw["backbones"]:
                try:
                    make_settings(method, {**method_config(cfg, b, method), key: value}, f"methods.{method}")
                except (KeyError, ValueError) as e:
                    raise ConfigError(f"config key {where!r}: {e.args[0]}") from None


NO_SOLUTION_LOADERS = frozenset({"dapo_math"})
"""Train-set loaders whose rows carry no reference solution (``rlrt.tasks.benchmarks``: DAPO-Math-17k's
``solution`` is "")."""


def check_teacher_context(cfg: dict[str, Any], runs: dict[str, list[str]]) -> None:
    """A run whose teacher is shown the train split's reference solution (``context: reference``) on a data set
    that has none would score an empty context: refused before any job (RLSD there: ``context: answer``)."""
    from rlrt.methods.settings import make_settings

    data = cfg["data"]
    loader = ((data.get("datasets") or {}).get("train") or {}).get("loader") if data["source"] == "hub" else None
    if loader not in NO_SOLUTION_LOADERS:
        return
    for backbone, rs in runs.items():
        for r in rs:
            method, _ = parse_run_id(r)
            if getattr(make_settings(method, run_config(cfg, backbone, r)), "context", None) == "reference":
                raise ConfigError(f"config key 'methods.{method}.context': run {r!r} on {backbone!r} shows its "
                                  f"teacher the train split's reference solution, which {loader} rows do not have "
                                  f"(empty); use context: answer (the gold answer in RLSD's template)")

