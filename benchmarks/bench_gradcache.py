"""GradCache cost: one GradCache step against the plain step and against 2 forwards + 1 backward.

A GradCache step encodes the batch twice (once without a graph, once with) and backpropagates
once, so its floor is "2 forwards + 1 backward" of the same data; the gap to that floor is the
overhead of chunking (smaller matmuls, the cached-gradient bookkeeping). The plain step (one
forward with a graph over the whole batch, one backward) is what GradCache replaces where it
fits in memory. Gradients of both steps are checked equal (relative 1e-4; 1e-2 under bf16).

CPU, the toy model (what the README figures use):

    python benchmarks/bench_gradcache.py --model toy --batch 256 --chunk 32

GPU, a decoder shaped like Qwen2-VL-2B's language model (random weights, no vision tower,
fixed-length random token sequences, embedding = last position), bf16, global batch 1024:

    python benchmarks/bench_gradcache.py --model qwen2-2b --device cuda --batch 1024 \\
        --chunk 32 --seq 128 --skip-plain [--checkpointing]

``--model qwen2-tiny`` runs the same code path at toy size (to check the script on a CPU).
Prints one JSON line per measurement: seconds per step, samples/s, peak memory (CUDA) and
the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from vlm2vec.data import Input
from vlm2vec.gradcache import Reps, Sides, gradcache_step, plain_step
from vlm2vec.loss import info_nce
from vlm2vec.model import EmbeddingModel, ToyEmbedder

#: Qwen2-VL-2B's language model (config.json of Qwen/Qwen2-VL-2B-Instruct).
QWEN2_2B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
            "tie_word_embeddings": True}
QWEN2_TINY = {**QWEN2_2B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}


class DecoderEmbedder(EmbeddingModel):
    """A randomly initialised Qwen2 decoder; batches are fixed-length token ids, so the last
    position is every row's last token."""

    def __init__(self, shape: dict[str, Any], seq: int) -> None:
        super().__init__()
        from transformers import Qwen2Config, Qwen2Model

        self.decoder = Qwen2Model(Qwen2Config(**shape, use_cache=False))
        self.seq, self.vocab = seq, shape["vocab_size"]

    def collate(self, items: Sequence[Input], side: str) -> dict[str, Any]:
        import zlib

        rows = []
        for item in items:  # each item's tokens depend on the item only, not on its batch
            gen = torch.Generator().manual_seed(zlib.crc32(f"{side}:{item.text}".encode()))
            rows.append(torch.randint(0, self.vocab, (self.seq,), generator=gen))
        return {"input_ids": torch.stack(rows)}

    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.decoder(input_ids=batch["input_ids"]).last_hidden_state[:, -1]  # type: ignore[no-any-return]

    def save(self, out_dir: Any) -> None:  # pragma: no cover - not needed here
        raise NotImplementedError


def synthetic_pairs(n: int, with_images: bool, tmp: str) -> list[tuple[Input, Input]]:
    """Toy pairs: text queries and picture targets (random pixels written once)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    pairs = []
    rng = np.random.default_rng(0)
    for i in range(n):
        image = None
        if with_images:
            image = str(Path(tmp) / f"{i}.png")
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(image)
        pairs.append((Input(f"query number {i} about things", None),
                      Input(f"<|image_1|>\nRepresent the given image. {i}\n", image)))
    return pairs


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    out = fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["toy", "qwen2-2b", "qwen2-tiny"], default="toy")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpointing", action="store_true",
                        help="gradient checkpointing in the decoder")
    parser.add_argument("--skip-plain", action="store_true",
                        help="skip the plain step (it does not fit at large batches)")
    args = parser.parse_args()
    import tempfile

    device = torch.device(args.device)
    torch.manual_seed(0)
    model: EmbeddingModel
    if args.model == "toy":
        model = ToyEmbedder()
    else:
        model = DecoderEmbedder(QWEN2_2B if args.model == "qwen2-2b" else QWEN2_TINY, args.seq)
        if args.checkpointing:
            model.decoder.gradient_checkpointing_enable()  # type: ignore[operator]
    model.to(device).train()
    bf16 = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        pairs = synthetic_pairs(args.batch, args.model == "toy", tmp)

        def collate(chunk: Sequence[tuple[Input, Input]]) -> Sides:
            sides = {"query": model.collate([q for q, _ in chunk], "query"),
                     "target": model.collate([t for _, t in chunk], "target")}
            return {k: {n: v.to(device) for n, v in b.items()} for k, b in sides.items()}

        whole = collate(pairs)
        chunks = [collate(pairs[i : i + args.chunk]) for i in range(0, len(pairs), args.chunk)]

        def forward(sides: Sides) -> Reps:
            ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                return model(sides)  # type: ignore[no-any-return]

        def loss_fn(reps: Reps) -> torch.Tensor:
            return info_nce(reps["query"].float(), reps["target"].float(), temperature=0.02)

        def grads() -> dict[str, torch.Tensor]:
            out = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                   if p.grad is not None}
            model.zero_grad(set_to_none=True)
            return out

        def gc() -> dict[str, torch.Tensor]:
            gradcache_step(forward, chunks, loss_fn, device=device)
            return grads()

        def plain() -> dict[str, torch.Tensor]:
            plain_step(forward, whole, loss_fn)
            return grads()

        def floor() -> dict[str, torch.Tensor]:
            # 2 forwards + 1 backward of the same data, chunked as GradCache chunks it
            for chunk in chunks:
                with torch.no_grad():
                    forward(chunk)
            for chunk in chunks:
                reps = forward(chunk)
                sum(r.float().sum() for r in reps.values()).backward()  # type: ignore[union-attr]
            return grads()

        report: dict[str, Any] = {"model": args.model, "device": str(device),
                                  "batch": args.batch, "chunk": args.chunk,
                                  "bf16": bf16, "threads": torch.get_num_threads()}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t_gc, g_gc = timed(gc, device, args.repeats)
        report["gradcache_s"] = round(t_gc, 4)
        report["gradcache_samples_per_s"] = round(args.batch / t_gc, 1)
        if device.type == "cuda":
            report["gradcache_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        t_floor, _ = timed(floor, device, args.repeats)
        report["two_forwards_one_backward_s"] = round(t_floor, 4)
        report["gradcache_over_floor"] = round(t_gc / t_floor, 3)
        if not args.skip_plain:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                t_plain, g_plain = timed(plain, device, args.repeats)
            except torch.OutOfMemoryError:
                report["plain"] = "out of memory"
            else:
                report["plain_s"] = round(t_plain, 4)
                report["gradcache_over_plain"] = round(t_gc / t_plain, 3)
                if device.type == "cuda":
                    report["plain_peak_gib"] = round(
                        torch.cuda.max_memory_allocated(device) / 2**30, 2)
                tol = 1e-2 if bf16 else 1e-4
                worst = max(float((g_gc[n] - g_plain[n]).norm()
                                  / g_plain[n].norm().clamp_min(1e-12)) for n in g_plain)
                report["max_relative_grad_diff"] = worst
                assert worst <= tol, f"GradCache and plain gradients differ: {worst}"
        print(json.dumps(report))


if __name__ == "__main__":
    main()
