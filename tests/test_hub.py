"""The Hub path, without a network: cache layout, zip extraction, and offline errors."""

from __future__ import annotations

import zipfile

import pytest
from mmeb_fixtures import colour_classification

import mmeb.hub as hub
from mmeb.errors import DataError
from mmeb.sources import resolve_source
from mmeb.tasks import MMEB_EVAL_REVISION, get_task


def test_hub_snapshot_and_images_are_read_like_a_local_copy(tmp_path, monkeypatch):
    snapshot = tmp_path / "snapshot"
    colour_classification(snapshot)
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for image in (snapshot / "eval_images").rglob("*.jpg"):
            zf.write(image, f"eval_images/{image.relative_to(snapshot / 'eval_images')}")
    seen = {}

    def fake_snapshot_download(**kwargs):
        seen.update(kwargs)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda **kwargs: str(archive))
    source = resolve_source(get_task("ImageNet-1K"))
    assert seen["repo_id"] == "TIGER-Lab/MMEB-eval"
    assert seen["revision"] == MMEB_EVAL_REVISION
    assert seen["allow_patterns"] == ["ImageNet-1K/*"]
    assert source.kind == "hub"
    assert source.revision == MMEB_EVAL_REVISION
    assert (source.image_root / "ImageNet-1K" / "image_0.jpg").is_file()
    assert source.image_root.parent.name == MMEB_EVAL_REVISION


def test_zip_members_escaping_the_target_are_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="would extract outside"):
        hub.extract_zip(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not (tmp_path / "outside.txt").exists()


def test_download_offline_is_one_clear_error():
    with pytest.raises(DataError, match="run `mmeb download` where the Hub is reachable"):
        hub.download([get_task("CIRR")])
