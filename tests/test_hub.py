"""rlrt.hub without the network: local branches for real, hub branches with stand-ins that record the exact
arguments (revision and config must be passed through; a branch revision is resolved to a commit first)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import datasets
import huggingface_hub
import pytest

from rlrt.hub import SOURCE_FILE, load_rows, local_data_files, stage_model

SHA = "0123456789abcdef0123456789abcdef01234567"


def model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "qwen3"}')
    (path / "model-00001-of-00002.safetensors").write_bytes(b"w1")
    (path / "tokenizer.json").write_text("{}")
    (path / "sub").mkdir()
    (path / "sub" / "x.txt").write_text("x")
    return path


def test_stage_model_local_symlinks(tmp_path):
    src = model_folder(tmp_path / "qwen")
    out = tmp_path / "ckpt" / "Qwen3-4B-Base"
    source = stage_model("Qwen/Qwen3-4B-Base", "main", src, out)
    assert source == {"hub_id": "Qwen/Qwen3-4B-Base", "revision": "main", "resolved_revision": None,
                      "mode": "local", "path": str(src.resolve())}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model-00001-of-00002.safetensors", SOURCE_FILE,
                                                     "sub", "tokenizer.json"]
    for name in ("config.json", "model-00001-of-00002.safetensors", "sub"):
        assert (out / name).is_symlink() and os.readlink(out / name) == str(src.resolve() / name)
    assert (out / "model-00001-of-00002.safetensors").read_bytes() == b"w1"
    assert (out / "sub" / "x.txt").read_text() == "x"
    assert json.loads((out / SOURCE_FILE).read_text()) == source
    assert not (out / SOURCE_FILE).is_symlink()
    # restaging replaces the folder, no temp siblings left
    stage_model("Qwen/Qwen3-4B-Base", "main", src, out)
    assert [p.name for p in out.parent.iterdir()] == ["Qwen3-4B-Base"]


def test_stage_model_local_without_config_fails_and_leaves_nothing(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        stage_model("Qwen/Qwen3-8B", "main", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def fake_snapshot(calls, with_config=True):
    def snapshot_download(**kw):
        calls.append(kw)
        d = kw["local_dir"]
        if with_config:
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write("{}")
        return d
    return snapshot_download


def test_stage_model_hub_pinned_sha(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot(calls))

    asked = []

    class RecordingApi:
        def model_info(self, repo_id, revision=None):
            asked.append(revision)
            raise OSError("not reachable")
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out = tmp_path / "Qwen3-8B"
    source = stage_model("Qwen/Qwen3-8B", SHA, None, out)
    assert len(calls) == 1 and asked == []     # a 40-hex revision is a commit already: no hub lookup
    assert calls[0]["repo_id"] == "Qwen/Qwen3-8B" and calls[0]["revision"] == SHA
    assert calls[0]["local_dir"] != str(out) and os.path.dirname(calls[0]["local_dir"]) == str(tmp_path)
    assert source == {"hub_id": "Qwen/Qwen3-8B", "revision": SHA, "resolved_revision": SHA, "mode": "hub",
                      "path": None}
    assert json.loads((out / SOURCE_FILE).read_text()) == source and (out / "config.json").is_file()


def test_stage_model_hub_branch_resolved_to_commit(tmp_path, monkeypatch):
    calls, asked = [], []

    class FakeApi:
        def model_info(self, repo_id, revision=None):
            asked.append((repo_id, revision))
            return SimpleNamespace(sha=SHA)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot(calls))
    source = stage_model("Qwen/Qwen3-4B-Instruct-2507", "main", None, tmp_path / "m")
    assert asked == [("Qwen/Qwen3-4B-Instruct-2507", "main")]
    assert calls[0]["revision"] == SHA      # downloads exactly the commit it records
    assert source["revision"] == "main" and source["resolved_revision"] == SHA


def test_stage_model_hub_offline_records_unresolved(tmp_path, monkeypatch):
    calls = []

    class OfflineApi:
        def model_info(self, repo_id, revision=None):
            raise OSError("offline")
    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot(calls))
    source = stage_model("Qwen/Qwen3-8B-Base", "v1.0", None, tmp_path / "m")
    assert calls[0]["revision"] == "v1.0" and source["resolved_revision"] is None


def test_stage_model_hub_snapshot_without_config_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot([], with_config=False))
    with pytest.raises(FileNotFoundError, match="snapshot has no config.json"):
        stage_model("org/not-a-model", SHA, None, tmp_path / "m")
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


class FakeDataset:
    column_names = ["problem", "answer"]

    def to_list(self):
        return [{"problem": "p", "answer": "1"}]


def test_load_rows_hub_passes_revision_config_split(monkeypatch):
    calls = []

    def load_dataset(*args, **kw):
        calls.append((args, kw))
        return FakeDataset()
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    rows = load_rows("Idavidrein/gpqa", revision=SHA, hub_config="gpqa_diamond", hub_split="train")
    assert rows == [{"problem": "p", "answer": "1"}]
    assert calls == [(("Idavidrein/gpqa",), {"name": "gpqa_diamond", "split": "train", "revision": SHA})]
    load_rows("math-ai/aime25", None, None, "test")
    assert calls[1] == (("math-ai/aime25",), {"name": None, "split": "test", "revision": None})


def test_load_rows_local_uses_packaged_builder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or FakeDataset())
    f = tmp_path / "aime.parquet"
    f.write_bytes(b"")
    load_rows("HuggingFaceH4/aime_2024", revision=SHA, path=f)
    assert calls == [(("parquet",), {"data_files": [str(f)], "split": "train"})]


def test_load_rows_needs_id_or_path():
    with pytest.raises(ValueError, match="needs a hub_id or a local path"):
        load_rows(None)
    with pytest.raises(ValueError, match="hub_split is required"):
        load_rows("math-ai/aime25", hub_split=None)


def test_local_data_files_selection(tmp_path):
    snap = tmp_path / "snap"
    (snap / "data").mkdir(parents=True)
    (snap / ".cache").mkdir()
    for name in ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                 "data/test-00000-of-00001.parquet", ".cache/stale.parquet", "README.md"):
        (snap / name).write_bytes(b"")
    assert local_data_files(snap, "train") == ("parquet", [str(snap / "data/train-00000-of-00002.parquet"),
                                                           str(snap / "data/train-00001-of-00002.parquet")])
    assert local_data_files(snap, "test")[1] == [str(snap / "data/test-00000-of-00001.parquet")]
    assert len(local_data_files(snap, "validation")[1]) == 3       # no shard of that split: every data file
    assert local_data_files(snap / "data/test-00000-of-00001.parquet", "train")[1] == \
        [str(snap / "data/test-00000-of-00001.parquet")]            # an explicit file is taken as is
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jsonl").write_text("")
    (mixed / "b.csv").write_text("")
    with pytest.raises(ValueError, match=r"several formats \['csv', 'json'\]"):
        local_data_files(mixed)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        local_data_files(tmp_path / "nope")
    (tmp_path / "docs").mkdir()
    with pytest.raises(FileNotFoundError, match="no data files"):
        local_data_files(tmp_path / "docs")
