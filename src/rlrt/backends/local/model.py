"""Tiny Qwen3 backbones: built from a ``Qwen3Config``, saved and loaded like any HF checkpoint.

The embedded default never downloads anything: the architecture comes from a config dict, the tokenizer is
trained in-pipeline, and checkpoints are plain ``save_pretrained`` folders that ``AutoModelForCausalLM`` /
``AutoTokenizer`` load -- the same code path a real Qwen3 checkpoint takes at paper scale.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlrt.io import atomic_dir


def lean_transformers() -> None:
    """Keep scikit-learn and ``scipy.optimize`` out of ``transformers``' start-up (about 1 s and 0.2-0.4 s of every
    model job's imports).

    ``transformers.generation.candidate_generator`` imports ``sklearn.metrics`` when scikit-learn is installed (it
    is: the marker analysis and MLflow use it), only for assisted decoding's ROC-curve heuristic, and
    ``transformers.loss.loss_for_object_detection`` (imported by every causal-LM loss) imports ``scipy.optimize``
    for DETR's Hungarian matching; no stage uses either. Telling ``transformers`` these packages are absent, before
    those modules are first imported, skips the imports; everything else is unchanged (``tests/test_sampler.py``
    checks a model loads, samples with ``generate`` and trains without them). A no-op once they are loaded."""
    import sys

    import transformers.utils

    if "transformers.generation.candidate_generator" not in sys.modules:
        transformers.utils.is_sklearn_available = lambda: False
    if "transformers.loss.loss_for_object_detection" not in sys.modules:
        transformers.utils.is_scipy_available = lambda: False


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU determinism needs a fixed thread count too: see ``set_threads``)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_threads(threads: int | None = None) -> int:
    """Pin torch to ``threads`` intra-op threads (Snakemake passes the rule's ``threads``)."""
    threads = int(threads or os.environ.get("RLRT_THREADS", 1))
    torch.set_num_threads(threads)
    return threads


def build_model(arch: dict[str, Any], tokenizer) -> torch.nn.Module:
    """A randomly initialised ``Qwen3ForCausalLM`` from an architecture dict (see config ``backbones.sizes``)."""
    lean_transformers()
    from transformers import Qwen3Config, Qwen3ForCausalLM

    hidden = int(arch["hidden_size"])
    heads = int(arch["num_attention_heads"])
    cfg = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=int(arch["intermediate_size"]),
        num_hidden_layers=int(arch["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(arch.get("num_key_value_heads", heads)),
        head_dim=hidden // heads,
        max_position_embeddings=int(arch.get("max_position_embeddings", 1024)),
        rope_theta=float(arch.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(arch.get("tie_word_embeddings", True)),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return Qwen3ForCausalLM(cfg)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


CHECKSUMS = "checksums.sha256"  # written by ``save_checkpoint``: "<sha256>  <file>" per file, as sha256sum does


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check a checkpoint folder against its ``checksums.sha256`` (``sha256sum -c`` reads it too): a file that is
    missing or whose bytes changed raises ValueError naming it. Folders without the file (a hub checkpoint) pass."""
    folder = Path(path)
    manifest = folder / CHECKSUMS
    if not manifest.exists():
        return
    for line in manifest.read_text().splitlines():
        digest, name = line.split("  ", 1)
        f = folder / name
        if not f.exists():
            raise ValueError(f"checkpoint {folder}: {name} is missing (listed in {CHECKSUMS})")
        if _sha256(f) != digest:
            raise ValueError(f"checkpoint {folder}: {name} does not match its SHA-256 in {CHECKSUMS} (corrupted or "
                             f"changed after it was written); rerun the job that wrote it")


def load_checkpoint(path: str | os.PathLike, dtype=torch.float32):
    """Load (model, tokenizer) from a ``save_pretrained`` folder with the Auto classes, after checking the folder's
    checksums (``verify_checkpoint``)."""
    verify_checkpoint(path)
    lean_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model, tok


def save_checkpoint(model, tokenizer, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Save model + tokenizer to ``path`` atomically (temp folder, then rename)."""
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra or {}).items():
            (Path(tmp) / name).write_text(text)
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        (Path(tmp) / CHECKSUMS).write_text("".join(f"{_sha256(p)}  {p.relative_to(tmp).as_posix()}\n" for p in files))
