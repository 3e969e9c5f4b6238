"""Shared pieces of the trainer tests: a small sample suite and quick configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mmeb.sample.generate import generate

REPO = Path(__file__).resolve().parents[1]
TRAIN_PAIRS = 48
_SUITES: dict[str, Path] = {}


def small_suite(factory: pytest.TempPathFactory) -> Path:
    """The sample suite with 48 training pairs per task (generated once per test session)."""
    if "suite" not in _SUITES:
        _SUITES["suite"] = generate(factory.mktemp("vlm2vec-sample"), train_pairs=TRAIN_PAIRS,
                                    workers=1)
    return _SUITES["suite"]


def quick(train_dir: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """Overrides of a seconds-long toy run on ``train_dir``."""
    settings: dict[str, Any] = {
        "data": str(train_dir), "output_dir": str(out), "model": "toy",
        "model_args": {"dim": 32, "vocab": 1024, "image_size": 16, "channels": 8},
        "finetune": "full", "global_batch_size": 16, "learning_rate": 3e-3,
        "warmup_steps": 2, "max_steps": 8, "save_steps": 0, "progress": False,
        "temperature": 0.05,
    }
    settings.update(overrides)
    return settings


def flags(settings: dict[str, Any]) -> list[str]:
    """The same settings as command-line flags."""
    out = []
    for key, value in settings.items():
        text = json.dumps(value) if isinstance(value, (dict, list, bool)) else str(value)
        out += [f"--{key}", text.lower() if isinstance(value, bool) else text]
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1")
    return e


def run_python(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env(),
                          timeout=timeout, cwd=REPO)


def losses(out: Path) -> list[tuple[int, float]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def weights(out: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))
