"""One digest names a local checkpoint: results without modification times, the cache with."""

from __future__ import annotations

import os
import shutil

from mmeb.encoding import _revision
from mmeb.revision import checkpoint_digest
from models.base import local_revision


def checkpoint(tmp_path, name="ckpt"):
    folder = tmp_path / name
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "sub" / "model.safetensors").write_bytes(b"weights v1")
    return folder


def test_a_copy_is_the_same_model_for_results_but_not_for_the_cache(tmp_path):
    folder = checkpoint(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, copy_function=shutil.copy)  # new modification times
    os.utime(copy / "config.json", ns=(1, 1))
    assert local_revision(copy) == local_revision(folder)
    assert local_revision(folder).startswith("local-")
    assert len(local_revision(folder)) == len("local-") + 16
    assert _revision("m", str(copy)) != _revision("m", str(folder))
    assert _revision("m", str(folder)) == "files:" + checkpoint_digest(folder, mtimes=True)


def test_a_changed_size_or_name_is_a_new_revision_for_both(tmp_path):
    folder = checkpoint(tmp_path)
    before = (local_revision(folder), _revision("m", str(folder)))
    (folder / "sub" / "model.safetensors").write_bytes(b"weights v2, retrained")
    after = (local_revision(folder), _revision("m", str(folder)))
    assert after[0] != before[0]
    assert after[1] != before[1]
    (folder / "sub" / "model.safetensors").rename(folder / "sub" / "other.safetensors")
    assert local_revision(folder) != after[0]


def test_a_config_rewritten_in_place_with_its_old_size_and_time_is_a_new_revision(tmp_path):
    # A names/sizes/times listing misses this (an edit restored by `cp -p` or a tool that
    # keeps times); the configs' bytes are in both digests.
    folder = checkpoint(tmp_path)
    config = folder / "config.json"
    stat = config.stat()
    before = (local_revision(folder), _revision("m", str(folder)))
    config.write_text('{"hidden_size": 9}')
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert config.stat().st_size == stat.st_size
    assert local_revision(folder) != before[0]
    assert _revision("m", str(folder)) != before[1]


def test_a_single_file_checkpoint_is_named_by_its_file(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    first = _revision("m", str(weights))
    assert first == "files:" + checkpoint_digest(weights, mtimes=True)
    weights.write_bytes(b"weights, longer")
    assert _revision("m", str(weights)) != first
    assert _revision("m", str(tmp_path / "missing")) is None
