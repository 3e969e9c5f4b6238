"""GradCache gives the plain step's loss and gradients; its replayed chunks reuse their RNG."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from vlm2vec_fixtures import quick, small_suite

from vlm2vec.config import build_config
from vlm2vec.data import batch_pairs
from vlm2vec.gradcache import gradcache_step, plain_step
from vlm2vec.trainer import Trainer


def trainer(tmp_path: Path, factory: pytest.TempPathFactory, **overrides: Any) -> Trainer:
    settings = quick(small_suite(factory) / "train", tmp_path / "run", finetune="lora",
                     hard_negatives=True, symmetric=True, **overrides)
    t = Trainer(build_config(overrides=settings))
    t._setup()
    with torch.no_grad():  # move every weight off its initial value (LoRA B starts at 0)
        gen = torch.Generator().manual_seed(3)
        for p in t.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return t


def grads(t: Trainer) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    t.model.zero_grad(set_to_none=True)
    return out


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float) -> None:
    assert a.keys() == b.keys()
    assert a
    for name in a:
        scale = b[name].norm().item()
        assert scale > 0, f"{name} has no gradient"
        assert (a[name] - b[name]).norm().item() <= rel * scale, name


def test_gradcache_equals_the_plain_step(tmp_path: Path,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    t = trainer(tmp_path, tmp_path_factory)
    pairs = batch_pairs(t.data, t.stream, 0, 10, 0, 1)
    # Some rows without a hard negative, as in MMEB-train subsets that lack neg_* columns.
    pairs = [replace(p, negative=None) if i in (1, 4, 5) else p for i, p in enumerate(pairs)]
    plain = plain_step(t._forward, t._collate(pairs), t._loss_fn(pairs))
    reference = grads(t)
    chunks = [t._collate(pairs[i : i + 3]) for i in range(0, 10, 3)]  # 3, 3, 3, 1
    cached = gradcache_step(t._forward, chunks, t._loss_fn(pairs))
    assert abs(cached.item() - plain.item()) <= 1e-5 * abs(plain.item())
    names = {n for n, p in t.model.named_parameters() if p.requires_grad}
    got = grads(t)
    assert set(got) == names  # every trainable parameter, LoRA A and B of every target
    assert_same(got, reference, 1e-5)


def test_gradcache_replays_each_chunks_dropout(tmp_path: Path,
                                               tmp_path_factory: pytest.TempPathFactory) -> None:
    t = trainer(tmp_path, tmp_path_factory, lora_dropout=0.3)
    pairs = batch_pairs(t.data, t.stream, 0, 8, 0, 1)
    chunks = [t._collate(pairs[i : i + 2]) for i in range(0, 8, 2)]
    loss_fn = t._loss_fn(pairs)
    # Reference: the chunks encoded once, with a graph, drawing dropout in the same order.
    torch.manual_seed(7)
    outs = [t._forward(c) for c in chunks]
    reps = {k: torch.cat([o[k] for o in outs if k in o]) for k in outs[0]}
    reference_loss = loss_fn(reps)
    reference_loss.backward()
    reference = grads(t)
    torch.manual_seed(7)
    loss = gradcache_step(t._forward, chunks, loss_fn)
    assert abs(loss.item() - reference_loss.item()) <= 1e-5 * reference_loss.item()
    assert_same(grads(t), reference, 1e-5)
    # The masks matter: a different draw gives other gradients.
    torch.manual_seed(8)
    gradcache_step(t._forward, chunks, loss_fn)
    other = grads(t)
    assert max((other[n] - reference[n]).abs().max().item() for n in other) > 1e-4
