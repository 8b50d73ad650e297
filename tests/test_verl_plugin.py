"""verl's plugin hook: ``import verl`` must load our entry point, and the entry point must import strictly.

verl swallows a plugin's import errors (``verl/__init__.py``), so a broken plugin would only show on the cluster
as an unknown loss mode; these tests fail here instead.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("verl")


def test_import_verl_loads_our_plugin_in_a_fresh_interpreter():
    code = ("import sys, verl; "
            "assert 'rlrt.backends.verl.plugin' in sys.modules, 'plugin not loaded by import verl'; "
            "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY as R; "
            "from rlrt.backends.verl.loss import worker_loss_only as W; "
            "assert R['rlrt_sdpo'] is W and R['rlrt_srpo'] is W; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={"VERL_USE_EXTERNAL_PLUGINS": "auto", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")


def test_entry_point_is_declared_and_imports_strictly():
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="verl.plugins") if ep.name == "rlrt"]
    assert len(eps) == 1 and eps[0].value == "rlrt.backends.verl.plugin"
    module = eps[0].load()  # raises here, unlike verl's loader
    assert module.register() == ["rlrt_sdpo", "rlrt_srpo"]


def test_loss_mode_names_match_the_overrides():
    from rlrt.backends.verl import loss, overrides

    for objective, mode in loss.LOSS_MODES.items():
        assert overrides.LOSS_MODES[objective] == mode


def test_a_broken_plugin_is_swallowed_by_verl_so_the_strict_check_matters(tmp_path):
    """Documents the hazard: a plugin that raises on import leaves `import verl` working and unregistered."""
    pkg = tmp_path / "brokenplugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('boom')\n")
    dist = tmp_path / "brokenplugin-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[verl.plugins]\nbroken = brokenplugin\n")
    code = "import sys, verl; assert 'brokenplugin' not in sys.modules; print('swallowed')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "swallowed" in proc.stdout
