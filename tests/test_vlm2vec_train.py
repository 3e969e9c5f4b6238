"""Whole runs of the trainer on the sample suite: learning, resume after SIGKILL, many processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from vlm2vec_fixtures import flags, losses, quick, run_python, small_suite, weights

from mmeb.engine import evaluate_task
from mmeb.sample.generate import generate
from mmeb.sample.spec import SAMPLE_TASKS
from vlm2vec.config import build_config
from vlm2vec.model import ToyEmbedder, ToyEncoder
from vlm2vec.trainer import train

SHAPES = next(t for t in SAMPLE_TASKS if t.name == "Sample-Shapes")


@pytest.fixture
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_suite(tmp_path_factory)


def hit_at_1(folder: Path, suite: Path) -> float:
    result = evaluate_task(ToyEncoder(str(folder)), SHAPES, data_dir=str(suite / "eval"),
                           image_dir=str(suite / "eval" / "eval_images"), progress=False)
    return float(result.main_score)


def test_the_toy_model_learns_the_sample_suite(tmp_path: Path) -> None:
    # Sample-Shapes has 64 classes: enough training pairs to see each of them several times.
    suite = generate(tmp_path / "suite", tasks=[SHAPES.name], train_pairs=384, workers=1)
    out = tmp_path / "run"
    settings = quick(suite / "train", out, global_batch_size=64, gc_chunk_size=16,
                     max_steps=40, model_args={"dim": 64, "vocab": 2048, "image_size": 48,
                                               "channels": 16})
    config = build_config(overrides=settings)
    torch.manual_seed(config.seed)
    untrained = tmp_path / "untrained"
    ToyEmbedder(**settings["model_args"]).save(untrained)  # the run's initial weights
    train(config)
    curve = [loss for _, loss in losses(out)]
    assert len(curve) == 40
    assert sum(curve[-5:]) / 5 < 0.6 * sum(curve[:5]) / 5
    before, after = hit_at_1(untrained, suite), hit_at_1(out, suite)
    chance = 1 / SHAPES.num_candidates
    assert after > max(5 * chance, before + 0.1), (before, after)
    saved = json.loads((out / "summary.json").read_text())
    assert saved["steps"] == 40
    assert saved["config"]["gc_chunk_size"] == 16


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(suite: Path, tmp_path: Path
                                                            ) -> None:
    settings = quick(suite / "train", tmp_path / "one", hard_negatives=True, symmetric=True,
                     gc_chunk_size=3, max_steps=6, global_batch_size=16)
    one = run_python(["-m", "vlm2vec", "train", *flags(settings)])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vlm2vec",
                      "train", *flags({**settings, "output_dir": str(tmp_path / "two")})])
    assert two.returncode == 0, two.stderr[-2000:]
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 7))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert abs(x - y) <= 1e-5 * abs(x)
    wa, wb = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6)
    assert a[-1][1] != a[0][1]  # it trained


def test_the_command_prints_and_saves_the_effective_config(
    suite: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlm2vec.cli import main

    out = tmp_path / "cli"
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {suite / 'train'}\nmodel_args: {{dim: 16, vocab: 64, "
                      "image_size: 16, channels: 8}\nfinetune: full\nmax_steps: 20\n")
    main(["train", "--config", str(config), "--max_steps", "3", "--global_batch_size", "8",
          "--output_dir", str(out), "--subsets", "Sample-Words", "--progress", "true"])
    captured = capsys.readouterr()
    saved = (out / "config.yaml").read_text()
    assert f"# effective config (saved to {out / 'config.yaml'})\n{saved}" in captured.out
    assert "max_steps: 3\n" in saved
    assert "subsets: [Sample-Words]\n" in saved
    assert "3/3" in captured.err
    assert "samples_s=" in captured.err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert set(records[0]) == {"step", "loss", "lr", "grad_norm", "samples_per_s"}
    assert (out / "model.safetensors").is_file()
    assert (out / "summary.json").is_file()
