"""The training loop: data, model, optimizer, checkpoints, processes.

One process per device. Under ``torchrun --nproc_per_node N`` each process takes its rank's
share of every global batch (the same pairs whatever N is), the loss gathers the embeddings of
all processes, and DDP averages the gradients (gloo on CPU, NCCL on GPU).

A checkpoint is a folder ``checkpoints/step-<N>/``: the trainable weights (safetensors), the
optimizer and scheduler states, each process's RNG states, the step (the data position follows
from it) and the config. It is written under a temporary name and renamed when complete, and an
old one is renamed away before it is deleted, so a kill leaves only complete checkpoints under
their ``step-<N>`` names; the hidden leftovers of a killed run are removed when the next starts.
The final model's files are each written beside their place and renamed into it, and
``summary.json`` is written last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mmeb.atomic import write_atomic
from mmeb.errors import MMEBError, ModelError
from vlm2vec.batches import StepInputs, step_batches
from vlm2vec.config import TrainConfig, differing_keys, to_dict, to_yaml
from vlm2vec.data import Input, Pair, PairStream, TrainData, load_train_data, stream_for
from vlm2vec.gradcache import Reps, Sides, gradcache_step, plain_step
from vlm2vec.loss import global_mean, info_nce
from vlm2vec.model import EmbeddingModel, build_model, trainable_state

log = logging.getLogger("vlm2vec")

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
STEP_PREFIX = "step-"


class TrainError(MMEBError):
    """The run cannot start or continue as configured."""


# -- processes and devices ------------------------------------------------------------------


def init_processes(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and config.device != "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise TrainError("device: cuda, but no GPU is visible; use device: auto or cpu")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if config.global_batch_size % world:
        raise TrainError(f"global_batch_size {config.global_batch_size} is not divisible by "
                         f"the {world} processes")
    return rank, world, device


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on GPU (``auto``) or when asked; None means plain fp32."""
    if config.precision == "fp32" or (config.precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def linear_warmup(warmup: int, total: int) -> Any:
    """The factor of the peak rate at each step, as transformers' linear schedule."""

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


# -- RNG states -----------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG this process may draw from, in types ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss,
                  cached],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# -- checkpoints ------------------------------------------------------------------------------


def list_checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (temporary folders excluded), oldest first."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX)
             and p.name[len(STEP_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def _load(path: Path) -> Any:
    """The only way this package reads a pickle-format file."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")  # hidden: remove_leftovers clears it after a kill
    tmp.unlink(missing_ok=True)
    write_atomic(path, text.encode(), tmp)


def _write_json_atomic(path: Path, data: Any) -> None:
    _write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _remove_folder(folder: Path) -> None:
    """Delete ``folder`` so that a kill midway leaves no part of it under its name: renamed to a
    hidden name first (which ``list_checkpoints`` skips), then removed."""
    doomed = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(doomed, ignore_errors=True)
    os.rename(folder, doomed)
    shutil.rmtree(doomed)


def remove_leftovers(out: Path) -> list[Path]:
    """The hidden folders and files a killed run left: half-written checkpoints, checkpoints
    being deleted, the final model being written. Call only as the run's one writer."""
    found = [p for p in (out / CHECKPOINTS).glob(".*")] if (out / CHECKPOINTS).is_dir() else []
    found += [p for p in out.glob(".*.tmp")] if out.is_dir() else []
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return found


# -- the trainer ------------------------------------------------------------------------------


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.output_dir).expanduser()
        self.rank, self.world, self.device = init_processes(config)
        self.dtype = autocast_dtype(config, self.device)
        self.step = 0
        self.model: EmbeddingModel
        self.data: TrainData
        self.stream: PairStream

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -- setup ------------------------------------------------------------------------------

    def _prepare_output(self) -> Path | None:
        """The checkpoint to resume from (None: fresh start); writes config.yaml."""
        found = list_checkpoints(self.out)
        if found and not self.config.resume:
            raise TrainError(f"{self.out} already holds {found[-1].name}; pass --resume to "
                             "continue it, or choose another --output_dir")
        latest = found[-1] if found else None
        if latest is not None:
            import yaml

            saved = yaml.safe_load((latest / "config.yaml").read_text())
            changed = differing_keys(saved, self.config)
            if changed:
                key = changed[0]
                raise TrainError(
                    f"--resume: {key} is {getattr(self.config, key)!r} but the checkpoint "
                    f"{latest} was trained with {saved.get(key)!r}; use the same settings "
                    f"({len(changed)} key(s) differ: {', '.join(changed)})")
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.out)
            self._rotate_checkpoints()  # a run killed before its last rotation kept one more
            text = to_yaml(self.config)
            _write_text_atomic(self.out / "config.yaml", text)
            sys.stdout.write(f"# effective config (saved to {self.out / 'config.yaml'})\n{text}")
            sys.stdout.flush()
        _barrier()
        return latest

    def _setup(self) -> Path | None:
        latest = self._prepare_output()
        c = self.config
        self.data = load_train_data(
            data=c.data, subsets=c.subsets, split=c.split, image_dir=c.image_dir,
            max_per_subset=c.max_per_subset, subset_sampling=c.subset_sampling, seed=c.seed,
            hard_negatives=c.hard_negatives, check_images=c.check_images,
            skip_bad_rows=c.skip_bad_rows, hub_revision=c.hub_revision,
            bad_rows_file=self.out / "bad_rows.jsonl" if self.main else None)
        self.stream = stream_for(self.data, c.seed, c.subset_weights,
                                 c.global_batch_size if c.batch_by_subset else 0)
        if self.main:
            sizes = ", ".join(f"{s.name} {len(s)}" for s in self.data.subsets)
            log.info("training pairs: %d (%s)", sum(self.data.sizes), sizes)
        self.model = build_model(c).to(self.device)
        self.inputs = StepInputs(
            self.data, self.stream, self.model.collator(), global_batch=c.global_batch_size,
            chunk=c.gc_chunk_size, shift=c.augment_shift, seed=c.seed, rank=self.rank,
            world=self.world)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ModelError(f"model {c.model!r} has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.params, lr=c.learning_rate, betas=(c.adam_beta1, c.adam_beta2),
            eps=c.adam_epsilon, weight_decay=c.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_warmup(c.warmup_steps, c.max_steps))
        torch.manual_seed(c.seed + 1 + self.rank)  # dropout etc.: one stream per process
        if latest is not None:
            self._restore(latest)
        self.ddp: torch.nn.parallel.DistributedDataParallel | None = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # A chunk may leave parts unused (a text-only chunk skips the vision tower);
                # gradients accumulated in earlier no_sync chunks are still reduced.
                find_unused_parameters=True)
        return latest

    # -- checkpoints ------------------------------------------------------------------------

    def _save_checkpoint(self) -> None:
        folder = self.out / CHECKPOINTS
        final = folder / f"{STEP_PREFIX}{self.step:08d}"
        tmp = folder / f".{final.name}.tmp"
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        torch.save(rng_state(self.device), tmp / f"rng-rank{self.rank}.pt")
        _barrier()
        if self.main:
            from safetensors.torch import save_file

            save_file(trainable_state(self.model), str(tmp / "weights.safetensors"))
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "config.yaml").write_text(to_yaml(self.config))
            _write_json_atomic(tmp / "state.json", {
                "step": self.step, "position": self.step * self.config.global_batch_size,
                "world_size": self.world})
            replaced = final.with_name(f".{final.name}.old")
            if final.exists():  # a rerun of the same step after a resume
                shutil.rmtree(replaced, ignore_errors=True)
                os.rename(final, replaced)
            os.rename(tmp, final)
            shutil.rmtree(replaced, ignore_errors=True)
            self._rotate_checkpoints()
        _barrier()

    def _rotate_checkpoints(self) -> None:
        """Keep the newest ``keep_checkpoints``."""
        for old in list_checkpoints(self.out)[: -self.config.keep_checkpoints]:
            _remove_folder(old)

    def _save_model(self) -> None:
        """The final model into the run folder, each file renamed into place when complete:
        a kill leaves every file whole (the old one or the new one)."""
        staging = self.out / ".model.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        self.model.save(staging)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = self.out / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        shutil.rmtree(staging)

    def _restore(self, folder: Path) -> None:
        from safetensors.torch import load_file

        state = json.loads((folder / "state.json").read_text())
        weights = load_file(str(folder / "weights.safetensors"))
        params = dict(self.model.named_parameters())
        names = {n for n, p in params.items() if p.requires_grad}
        if set(weights) != names:
            raise TrainError(f"{folder}: its weights do not match the model's trainable "
                             "parameters; was it written with other model settings?")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(_load(folder / "optimizer.pt"))
        self.scheduler.load_state_dict(_load(folder / "scheduler.pt"))
        self.step = int(state["step"])
        rng_file = folder / f"rng-rank{self.rank}.pt"
        if state["world_size"] == self.world and rng_file.is_file():
            set_rng_state(_load(rng_file), self.device)
        else:
            log.warning("%s was written by %d process(es), this run has %d: the data order "
                        "is unchanged, dropout draws are re-seeded", folder, state["world_size"],
                        self.world)
            torch.manual_seed(self.config.seed + 1 + self.rank + 1000 * self.step)
        if self.main:
            log.info("resuming from %s (step %d)", folder, self.step)

    def _truncate_metrics(self) -> None:
        """Drop metrics of steps after the checkpoint (a killed run may have logged some)."""
        path = self.out / METRICS
        if not self.main or not path.is_file():
            return
        keep = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= self.step]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, path)

    # -- one step ---------------------------------------------------------------------------

    def _collate(self, pairs: list[Pair]) -> Sides:
        return self._on_device(self.inputs.sides(pairs))

    def _on_device(self, sides: Sides) -> Sides:
        return {k: _to_device(v, self.device) for k, v in sides.items()}

    def _forward(self, sides: Sides) -> Reps:
        module = self.ddp if self.ddp is not None else self.model
        if self.dtype is None:
            return module(sides)  # type: ignore[no-any-return]
        with torch.autocast(self.device.type, dtype=self.dtype):
            return module(sides)  # type: ignore[no-any-return]

    def _loss_fn(self, pairs: list[Pair]) -> Any:
        c = self.config
        has_neg = torch.tensor([p.negative is not None for p in pairs], device=self.device)
        rows = torch.nonzero(has_neg).flatten()
        keys: dict[str, torch.Tensor | None] = {"target_keys": None, "negative_keys": None}
        if c.mask_duplicates:
            keys["target_keys"] = content_keys([p.target for p in pairs], self.device)
            if c.hard_negatives:
                keys["negative_keys"] = content_keys([p.negative for p in pairs], self.device)

        def loss(reps: Reps) -> torch.Tensor:
            queries, targets = reps["query"].float(), reps["target"].float()
            negatives = None
            if c.hard_negatives:  # every process gathers, with or without negatives of its own
                negatives = queries.new_zeros(queries.shape)
                if "negative" in reps:
                    negatives = negatives.index_copy(0, rows, reps["negative"].float())
            return info_nce(queries, targets, temperature=c.temperature, negatives=negatives,
                            negative_mask=has_neg if c.hard_negatives else None,
                            symmetric=c.symmetric, normalize=c.normalize, **keys)

        return loss

    def train_step(self, pairs: list[Pair], prepared: list[Sides] | None = None
                   ) -> tuple[torch.Tensor, float]:
        """Gradients of one global batch, clipped, applied; returns (loss, grad norm).
        ``prepared``: the step's collated chunks when built ahead (``data_workers``)."""
        loss_fn = self._loss_fn(pairs)  # content keys name the files, shifted or not
        if prepared is None:
            prepared = self.inputs.prepare(pairs, self.step)
        chunks = [self._on_device(sides) for sides in prepared]
        self.model.train()
        if len(chunks) > 1:
            loss = gradcache_step(self._forward, chunks, loss_fn, device=self.device,
                                  no_sync=self.ddp.no_sync if self.ddp is not None else None)
        else:
            loss = plain_step(self._forward, chunks[0], loss_fn)
        norm = 0.0
        if self.config.max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, norm

    def _after_step(self, record: dict[str, Any]) -> None:
        """Called on every process after each step (extension point; does nothing here)."""

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        self._setup()
        self._truncate_metrics()
        c = self.config
        metrics = self.out / METRICS
        writer = _tensorboard(self.out) if self.main else None
        bar = _progress(c, self.step) if self.main else None
        last: dict[str, Any] = {}
        batches = step_batches(self.inputs, range(self.step, c.max_steps), c.data_workers)
        try:
            t0 = time.perf_counter()
            for pairs, prepared in batches:
                lr = self.scheduler.get_last_lr()[0]
                loss, norm = self.train_step(pairs, prepared)
                self.step += 1
                value = global_mean(loss)
                # From the end of the last step: the wait for this step's batch counts too.
                now = time.perf_counter()
                rate = c.global_batch_size / max(now - t0, 1e-9)
                t0 = now
                last = {"step": self.step, "loss": value, "lr": lr, "grad_norm": norm,
                        "samples_per_s": rate}
                if self.main:
                    if self.step % c.log_steps == 0 or self.step == c.max_steps:
                        with metrics.open("a") as f:
                            f.write(json.dumps(last) + "\n")
                        if writer is not None:
                            for k in ("loss", "lr", "grad_norm", "samples_per_s"):
                                writer.add_scalar(f"train/{k}", last[k], self.step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}",
                                        samples_s=f"{rate:.1f}")
                if c.save_steps and self.step % c.save_steps == 0:
                    self._save_checkpoint()
                self._after_step(last)
        finally:
            batches.close()
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        if not last and metrics.is_file():  # resumed a finished run: nothing left to do
            lines = metrics.read_text().splitlines()
            last = json.loads(lines[-1]) if lines else {}
        if self.main:
            self._save_model()
            summary = {"steps": self.step, "final_loss": last.get("loss"),
                       "world_size": self.world, "device": str(self.device),
                       "pairs": sum(self.data.sizes), "bad_rows": len(self.data.bad_rows),
                       "seconds": round(time.perf_counter() - start, 3),
                       "config": to_dict(c), "data_source": self.data.source}
            _write_json_atomic(self.out / "summary.json", summary)
            log.info("done: %d steps, model written to %s", self.step, self.out)
        _barrier()
        return last


def content_keys(inputs: list[Input | None], device: torch.device) -> torch.Tensor:
    """One int64 per input naming its text and image (the same on every process; -1 for a
    missing input, which equals no positive's key)."""
    import hashlib

    def key(inp: Input | None) -> int:
        if inp is None:
            return -1
        digest = hashlib.sha256(f"{inp.text}\0{inp.image or ''}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1  # non-negative

    return torch.tensor([key(i) for i in inputs], dtype=torch.long, device=device)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def _progress(config: TrainConfig, initial: int) -> Any:
    if not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=config.max_steps, initial=initial, desc="train", unit="step",
                dynamic_ncols=True)


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tensorboard"))


@contextlib.contextmanager
def _process_group() -> Iterator[None]:
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the last step's metrics."""
    with _process_group():
        return Trainer(config).run()
