"""Shared test setup: never touch the network; keep caches inside the test's temp folders."""

from __future__ import annotations

import os

# A Hub miss without these costs ~25 s of retries before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test sees an mmeb cache that starts empty unless the session shares one."""
    monkeypatch.setenv("MMEB_CACHE", str(tmp_path_factory.getbasetemp() / "mmeb-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))
