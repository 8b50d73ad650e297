"""A model folder's context length, read from its ``config.json`` (no transformers, no vLLM import).

Its own module because two stages read it: the vLLM evaluation (``rlrt.backends.verl.evaluate``: ``max_model_len``
and YaRN) and the verl RL run (``rlrt.backends.verl.train``: the rollout's prompt + response must fit). Keeping it
out of both means an edit to one of them reruns only its own stage's jobs (``rlrt.codekey``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def model_context(model: str | Path) -> dict[str, Any]:
    """The context a model folder's ``config.json`` declares: ``max_position_embeddings`` (``native``), a YaRN
    scaling already in the config (``rope``: ``rope_scaling`` (transformers 4) or ``rope_parameters`` (5), else
    None), ``rope_theta``, and ``context`` = the longest sequence the model takes as configured (the YaRN
    ``original_max_position_embeddings`` x ``factor`` when that is larger). A folder without ``config.json`` or
    without ``max_position_embeddings`` raises ``ValueError`` naming it."""
    path = Path(model) / "config.json"
    if not path.is_file():
        raise ValueError(f"{model}: no config.json (not a model folder); its context length cannot be checked")
    cfg = json.loads(path.read_text())
    if "max_position_embeddings" not in cfg and isinstance(cfg.get("text_config"), dict):  # multimodal wrappers
        cfg = cfg["text_config"]
    native = cfg.get("max_position_embeddings")
    if not isinstance(native, int) or native < 1:
        raise ValueError(f"{path}: no max_position_embeddings; the model's context length is unknown")
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or None
    theta = cfg.get("rope_theta") or (rope or {}).get("rope_theta")
    context = native
    if rope and (rope.get("rope_type") or rope.get("type")) == "yarn" and rope.get("factor"):
        context = max(native, int(int(rope.get("original_max_position_embeddings") or native) * float(rope["factor"])))
    return {"native": native, "context": context, "rope": rope, "rope_theta": theta}
