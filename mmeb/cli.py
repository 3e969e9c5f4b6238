"""The ``mmeb`` command line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from mmeb.errors import MMEBError
from mmeb.tasks import META_TASKS, select_tasks

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(func: F) -> F:
    """Turn our errors into ``error: ...`` on stderr and exit status 1, without a traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MMEBError as exc:
            # Messages quote library errors, some of which span lines (pyarrow's do).
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _task_names(tasks: str | None) -> list[str] | None:
    # "--tasks ' '" names no task: an error downstream, never "all tasks".
    return tasks.split(",") if tasks is not None else None


split_option = click.option(
    "--split", default=None,
    help="Task collection: eval (all 36), ind (20), ood (16), classification, vqa, retrieval, "
         "grounding, sample (the built-in offline suite) or sample-full (its MMEB-sized twin). "
         "Default: eval.",
)
tasks_option = click.option(
    "--tasks", default=None, metavar="A,B,...",
    help="Comma-separated task names (exact MMEB names, e.g. ImageNet-1K,CIRR); overrides --split.",
)
meta_option = click.option("--meta-task", type=click.Choice(META_TASKS), default=None,
                           help="Keep only tasks of this meta-task.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mmeb")
def main() -> None:
    """Evaluate multimodal embedding models on MMEB.

    \b
    Quick start (offline, built-in sample suite):
      mmeb run --model random --split sample
    """
    log = logging.getLogger("mmeb")
    if not any(isinstance(h, _EchoHandler) for h in log.handlers):
        log.addHandler(_EchoHandler())
    log.setLevel(logging.INFO)


class _EchoHandler(logging.Handler):
    """Notes to the current stderr as they are; warnings prefixed with their level."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        click.echo(message, err=True)


@main.command()
@click.option("--model", "model", required=True,
              help="Registered name (see `mmeb models`), pkg.module:factory, or "
                   "path/to/file.py:factory.")
@click.option("--checkpoint", default=None, metavar="ID_OR_DIR",
              help="Hugging Face id or local directory of the weights (adapter default if unset).")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="Adapter option, repeatable (e.g. --model-arg fusion=sum).")
@split_option
@tasks_option
@meta_option
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Local MMEB-eval copy: DIR/<Task>/test-*.parquet and images in "
                   "DIR/eval_images/. Without it, MMEB data comes from the Hub cache.")
@click.option("--image-dir", type=click.Path(file_okay=False), default=None,
              help="Image root the rows' image paths are relative to (default DIR/eval_images).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Items per encoder call.")
@click.option("--device", default=None, help="Device for the model, e.g. cpu, cuda, cuda:1.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Model weight dtype (adapter default if unset).")
@click.option("--output-dir", type=click.Path(file_okay=False), default="results",
              show_default=True, help="Results go to OUTPUT_DIR/<model>/<task>.json.")
@click.option("--name", default=None,
              help="Folder name for this model's results (default: model and checkpoint).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Evaluate only the first N queries of each task (quick checks).")
@click.option("--overwrite", is_flag=True, help="Recompute tasks that already have a result.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@_one_line_errors
def run(model: str, checkpoint: str | None, model_args: tuple[str, ...], split: str | None,
        tasks: str | None, meta_task: str | None, data_dir: str | None, image_dir: str | None,
        batch_size: int, device: str | None, dtype: str | None, output_dir: str,
        name: str | None, limit: int | None, overwrite: bool, no_progress: bool) -> None:
    """Evaluate a model on MMEB tasks and print the summary table.

    \b
    Examples:
      mmeb run --model random --split sample
      mmeb run --model clip --split eval --data-dir ~/data/MMEB-eval
      mmeb run --model my_encoders.py:build --tasks ImageNet-1K,CIRR --limit 100
    """
    from mmeb.registry import load_model, parse_model_args
    from mmeb.runner import RunConfig
    from mmeb.runner import run as run_tasks

    selected = select_tasks(split, _task_names(tasks), meta_task)
    args = parse_model_args(model_args)
    config = RunConfig(
        model=model, checkpoint=checkpoint, model_args=args, device=device, dtype=dtype,
        batch_size=batch_size, limit=limit, data_dir=data_dir, image_dir=image_dir,
        output_dir=Path(output_dir), overwrite=overwrite, name=name,
        progress=not no_progress and sys.stderr.isatty(),
    )
    outcome = run_tasks(
        config, selected,
        load_encoder=lambda: load_model(model, checkpoint=checkpoint, device=device,
                                        dtype=dtype, model_args=args),
        echo=lambda msg: click.echo(msg, err=True),
    )
    click.echo(outcome.table())


@main.command()
@split_option
@meta_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@_one_line_errors
def tasks(split: str | None, meta_task: str | None, fmt: str) -> None:
    """List tasks with their modalities, instructions and candidate counts."""
    selected = select_tasks(split, None, meta_task)
    records = [
        {"name": t.name, "meta_task": t.meta_task, "role": t.role,
         "query_modality": t.query_modality, "target_modality": t.target_modality,
         "query_instruction": t.query_instruction, "target_instruction": t.target_instruction,
         "train_query_instruction": t.train_query_instruction,
         "num_queries": t.num_queries, "num_candidates": t.num_candidates,
         "hf_dataset": t.hf_dataset, "hf_config": t.hf_config, "hf_revision": t.hf_revision,
         "train_config": t.train_config, "benchmark": t.benchmark, "source": t.source}
        for t in selected
    ]
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    from tabulate import tabulate

    keys = ["name", "meta_task", "role", "query_modality", "target_modality",
            "num_candidates", "query_instruction"]
    click.echo(tabulate([[r[k] for k in keys] for r in records],
                        headers=[k.replace("_", " ") for k in keys]))


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def models(fmt: str) -> None:
    """List registered models (built-in adapters and installed entry points)."""
    from mmeb.registry import registered_models

    entries = list(registered_models().values())
    if fmt == "json":
        click.echo(json.dumps([e.__dict__ for e in entries], indent=2))
        return
    from tabulate import tabulate

    rows = [[e.name, e.default_checkpoint or "-", e.extra or "-", e.description] for e in entries]
    click.echo(tabulate(rows, headers=["model", "default checkpoint", "extra", "description"]))


@main.command()
@split_option
@tasks_option
@click.option("--no-images", is_flag=True, help="Fetch only the parquet files.")
@_one_line_errors
def download(split: str | None, tasks: str | None, no_images: bool) -> None:
    """Prefetch MMEB-eval (parquet per task and images.zip) into the local cache."""
    from mmeb.hub import download as fetch

    snapshot, images = fetch(list(select_tasks(split, _task_names(tasks))), images=not no_images)
    click.echo(f"parquet files: {snapshot}")
    if images is not None:
        click.echo(f"images: {images}")


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write the suite here (default: the mmeb cache, where runs find it).")
@click.option("--scale", type=click.Choice(["small", "full"]), default="small", show_default=True,
              help="small: the offline sample suite; full: MMEB-sized twin for benchmarks.")
@click.option("--seed", type=int, default=0, show_default=True)
@_one_line_errors
def sample(out: str | None, scale: str, seed: int) -> None:
    """Generate the procedural sample suite (MMEB-eval and MMEB-train formats)."""
    from mmeb.sample import ensure_sample
    from mmeb.sample.generate import generate

    if out is None and seed != 0:
        raise MMEBError("the cache holds the seed-0 suite only; pass --out DIR with --seed")
    root = ensure_sample(scale=scale) if out is None else generate(Path(out), seed=seed,
                                                                   scale=scale)
    click.echo(f"sample suite: {root}")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@_one_line_errors
def summary(folder: str) -> None:
    """Print the summary table of one model's result folder (OUTPUT_DIR/<model>)."""
    from mmeb.results import format_summary, load_results, summarize

    results = load_results(Path(folder))
    click.echo(format_summary(summarize(results), results))


if __name__ == "__main__":
    main()
