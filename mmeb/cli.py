"""The ``mmeb`` command line."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from mmeb.errors import MMEBError
from mmeb.tasks import META_TASKS, TaskSpec, select_tasks

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
cache_dir_option = click.option(
    "--cache-dir", type=click.Path(file_okay=False), default=None, envvar="MMEB_EMBEDDING_CACHE",
    help="Embedding cache: vectors computed once are reused across tasks and runs of the same "
         "model settings (env MMEB_EMBEDDING_CACHE; default: no cache).",
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


#: What ``mmeb run`` without ``--model`` evaluates: the packaged model beside the baseline.
DEFAULT_MODELS = ("vlm2vec-tiny", "random")


@main.command()
@click.option("--model", "model", default=None,
              help="Registered name (see `mmeb models`), pkg.module:factory, or "
                   "path/to/file.py:factory. Without it: the packaged vlm2vec-tiny beside the "
                   "random baseline, on the sample suite unless --split/--tasks say otherwise.")
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
@click.option("--prefetch", type=click.IntRange(min=0), default=2, show_default=True,
              metavar="N",
              help="Threads decoding the next batch's images while the model encodes (0: the "
                   "model reads its images itself).")
@cache_dir_option
@_one_line_errors
def run(model: str | None, checkpoint: str | None, model_args: tuple[str, ...], split: str | None,
        tasks: str | None, meta_task: str | None, data_dir: str | None, image_dir: str | None,
        batch_size: int, device: str | None, dtype: str | None, output_dir: str,
        name: str | None, limit: int | None, overwrite: bool, no_progress: bool,
        prefetch: int, cache_dir: str | None) -> None:
    """Evaluate a model on MMEB tasks and print the summary table.

    \b
    Examples:
      mmeb run                                # vlm2vec-tiny and random on the sample suite
      mmeb run --model random --split sample
      mmeb run --model clip --split eval --data-dir ~/data/MMEB-eval
      mmeb run --model my_encoders.py:build --tasks ImageNet-1K,CIRR --limit 100
      torchrun --nproc_per_node 2 -m mmeb run --model clip --split eval --device cuda
    """
    from mmeb.leaderboard.commands import summary_of_documents

    if model is None:
        _run_default_models(
            _task_names(tasks), split, meta_task, checkpoint=checkpoint, model_args=model_args,
            name=name, device=device, dtype=dtype, batch_size=batch_size, limit=limit,
            data_dir=data_dir, image_dir=image_dir, output_dir=output_dir, overwrite=overwrite,
            no_progress=no_progress, prefetch=prefetch, cache_dir=cache_dir)
        return
    selected = select_tasks(split, _task_names(tasks), meta_task)
    model_id, results = _evaluate(
        model, selected, checkpoint=checkpoint, model_args=model_args, device=device,
        dtype=dtype, batch_size=batch_size, limit=limit, data_dir=data_dir,
        image_dir=image_dir, output_dir=output_dir, overwrite=overwrite, name=name,
        no_progress=no_progress, prefetch=prefetch, cache_dir=cache_dir,
    )
    if results:  # under torchrun only rank 0 has results to show
        click.echo(summary_of_documents(model_id, results))


def _run_default_models(task_names: list[str] | None, split: str | None,
                        meta_task: str | None, *, checkpoint: str | None,
                        model_args: tuple[str, ...], name: str | None, output_dir: str,
                        **options: Any) -> None:
    """``mmeb run`` without ``--model``: each of DEFAULT_MODELS (on the sample suite unless
    tasks are chosen), then their comparison table."""
    from mmeb.leaderboard.commands import compare_folders
    from mmeb.shard import current_group

    given = [flag for flag, value in (("--checkpoint", checkpoint), ("--model-arg", model_args),
                                      ("--name", name)) if value]
    if given:
        raise MMEBError(f"{given[0]} needs --model: it applies to one model, and without "
                        f"--model `mmeb run` evaluates {' and '.join(DEFAULT_MODELS)}")
    if not (split or task_names or meta_task):
        split = "sample"
    selected = select_tasks(split, task_names, meta_task)
    folders = [_evaluate(default, selected, checkpoint=None, model_args=(),
                         output_dir=output_dir, **options)[0] for default in DEFAULT_MODELS]
    if current_group().is_writer:
        click.echo(compare_folders(folders, Path(output_dir)))


def _evaluate(model: str, selected: Sequence[TaskSpec], *, checkpoint: str | None,
              model_args: tuple[str, ...], output_dir: str, no_progress: bool,
              name: str | None = None, overwrite: bool = False,
              **options: Any) -> tuple[str, list[dict[str, Any]]]:
    """Run (or resume) one model over ``selected``; returns its folder name and results."""
    from mmeb.registry import load_model, parse_model_args
    from mmeb.runner import RunConfig
    from mmeb.runner import run as run_tasks
    from mmeb.shard import current_group, device_for_rank

    args = parse_model_args(model_args)
    group = current_group()
    if not group.is_writer:  # rank 0 reports; the others would repeat every line
        logging.getLogger("mmeb").setLevel(logging.ERROR)
    config = RunConfig(
        model=model, checkpoint=checkpoint, model_args=args, output_dir=Path(output_dir),
        overwrite=overwrite, name=name, progress=not no_progress and sys.stderr.isatty(),
        **options,
    )
    outcome = run_tasks(
        config, selected,
        load_encoder=lambda: load_model(model, checkpoint=checkpoint,
                                        device=device_for_rank(config.device, group),
                                        dtype=config.dtype, model_args=args),
        echo=(lambda msg: click.echo(msg, err=True)) if group.is_writer else (lambda _msg: None),
    )
    return config.model_id, outcome.results


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
        click.echo(json.dumps([dataclasses.asdict(e) for e in entries], indent=2))
        return
    from tabulate import tabulate

    def paper(score: float | None) -> str:
        return "-" if score is None else f"{score:.1f}"

    by_name = {e.name: e for e in entries}
    facts = [by_name.get(e.alias_of, e) if e.alias_of else e for e in entries]
    rows = [[e.label, f.default_checkpoint or "-", f.extra or "-", paper(f.paper_score),
             e.description] for e, f in zip(entries, facts, strict=True)]
    click.echo(tabulate(rows, headers=["model", "default checkpoint", "extra", "paper (%)",
                                       "description"], disable_numparse=True))


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


FORMATS = ("markdown", "csv", "json", "html", "latex")
METRICS = ("hit@1", "hit@5", "hit@10", "mrr", "ndcg@5", "ndcg@10")


def _stats_options(func: F) -> F:
    """Options shared by summary, compare and leaderboard: what is measured and how surely."""
    for option in reversed((
        click.option("--metric", type=click.Choice(METRICS), default="hit@1", show_default=True,
                     help="Metric to tabulate (hit@1 is the paper's Precision@1)."),
        click.option("--resamples", type=click.IntRange(min=10), default=1000,
                     show_default=True,
                     help="Bootstrap resamples and permutations (over queries)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the bootstrap and the permutation test."),
        click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=0.05, show_default=True,
                     help="1 - interval coverage, and the significance level of the test."),
    )):
        func = option(func)
    return func


def _published_options(func: F) -> F:
    func = click.option("--no-published", is_flag=True,
                        help="Do not add the published row of a measured model.")(func)
    return click.option(
        "--published", multiple=True, metavar="NAME|all|FILE.json",
        help="Add a published row (paper or official score file) by name, all of them, or an "
             "MMEB leaderboard score file; repeatable.")(func)


def _write_or_echo(text: str, out: str | None) -> None:
    if out is None:
        click.echo(text)
        return
    try:
        Path(out).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise MMEBError(f"cannot write {out} ({exc.strerror or exc}); choose another --out"
                        ) from None
    click.echo(f"wrote {out}", err=True)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown",
              show_default=True)
@_stats_options
@_one_line_errors
def summary(folder: str, fmt: str, metric: str, resamples: int, seed: int,
            alpha: float) -> None:
    """Print the summary table of one model's result folder (OUTPUT_DIR/<model>)."""
    from mmeb.leaderboard.commands import summary_of_folder

    click.echo(summary_of_folder(Path(folder), fmt=fmt, metric=metric, resamples=resamples,
                                 seed=seed, alpha=alpha))


@main.command()
@click.argument("names", nargs=-1)
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default="results",
              show_default=True, help="Folder holding one result folder per model.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown",
              show_default=True)
@click.option("--out", default=None, metavar="FILE", help="Write the table to FILE.")
@_stats_options
@_published_options
@click.option("--run", "run_missing", is_flag=True,
              help="Evaluate each NAME (a --model spec) first; finished tasks are reused.")
@split_option
@tasks_option
@meta_option
@click.option("--checkpoint", default=None, metavar="ID_OR_DIR", help="With --run: as in run.")
@click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
              help="With --run: adapter option for every NAME, as in run.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="With --run: as in run.")
@click.option("--image-dir", type=click.Path(file_okay=False), default=None,
              help="With --run: as in run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="With --run: as in run.")
@click.option("--device", default=None, help="With --run: as in run.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="With --run: as in run.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --run: as in run.")
@click.option("--no-progress", is_flag=True, help="With --run: hide progress bars.")
@_one_line_errors
def compare(names: tuple[str, ...], results_dir: str, fmt: str, out: str | None, metric: str,
            resamples: int, seed: int, alpha: float, published: tuple[str, ...],
            no_published: bool, run_missing: bool, split: str | None, tasks: str | None,
            meta_task: str | None, checkpoint: str | None, model_args: tuple[str, ...],
            data_dir: str | None, image_dir: str | None, batch_size: int, device: str | None,
            dtype: str | None, limit: int | None, no_progress: bool) -> None:
    """Compare models side by side: per dataset and aggregate, with 95% intervals, paired
    tests against the first model and the published numbers.

    \b
    Examples:
      mmeb compare                          # every model under ./results
      mmeb compare clip openclip --format latex
      mmeb compare random clip --run --split sample
    """
    from mmeb.leaderboard.commands import compare_folders

    selection = None
    if split or tasks or meta_task:
        selection = [t.name for t in select_tasks(split, _task_names(tasks), meta_task)]
    folders = list(names)
    if run_missing:
        if not names:
            raise MMEBError("--run needs the models to evaluate: mmeb compare A B --run")
        selected = select_tasks(split, _task_names(tasks), meta_task)
        folders = [_evaluate(name, selected, checkpoint=checkpoint, model_args=model_args,
                             output_dir=results_dir, no_progress=no_progress,
                             device=device, dtype=dtype, batch_size=batch_size, limit=limit,
                             data_dir=data_dir, image_dir=image_dir)[0] for name in names]
    text = compare_folders(folders, Path(results_dir), fmt=fmt, metric=metric,
                           resamples=resamples, seed=seed, alpha=alpha, published=published,
                           auto_published=not no_published, tasks=selection)
    _write_or_echo(text, out)


@main.command()
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default="results",
              show_default=True, help="Folder holding one result folder per model.")
@click.option("--out", type=click.Path(file_okay=False), required=True, metavar="SITE",
              help="Folder for index.html, its plots, data and exports.")
@_stats_options
@_published_options
@_one_line_errors
def leaderboard(results_dir: str, out: str, metric: str, resamples: int, seed: int,
                alpha: float, published: tuple[str, ...], no_published: bool) -> None:
    """Write a static HTML leaderboard (works offline): sortable tables, published rows,
    plots, and each model's MMEB submission JSON and mteb-style files."""
    from mmeb.leaderboard.commands import build_site

    index, _ = build_site(Path(results_dir), Path(out), metric=metric, resamples=resamples,
                          seed=seed, alpha=alpha, published=published,
                          auto_published=not no_published)
    click.echo(f"leaderboard: {index}")


@main.command()
@click.argument("names", nargs=-1)
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default="results",
              show_default=True, help="Folder holding one result folder per model.")
@click.option("--to", "target", type=click.Choice(["mmeb", "mteb"]), default="mmeb",
              show_default=True,
              help="mmeb: MMEB leaderboard submission JSON per model; mteb: per-task files.")
@click.option("--out", type=click.Path(file_okay=False), required=True, metavar="DIR")
@_one_line_errors
def export(names: tuple[str, ...], results_dir: str, target: str, out: str) -> None:
    """Export models' results (every model under --results if no NAMES are given)."""
    from mmeb.leaderboard.commands import export_models

    for path in export_models(names, Path(results_dir), target, Path(out)):
        click.echo(str(path))


@main.group()
def cache() -> None:
    """List or remove cached embeddings (see `mmeb run --cache-dir`)."""


def _require_cache_dir(cache_dir: str | None) -> str:
    if cache_dir is None:
        raise MMEBError("pass --cache-dir DIR (or set MMEB_EMBEDDING_CACHE)")
    return cache_dir


@cache.command("ls")
@cache_dir_option
@_one_line_errors
def cache_ls(cache_dir: str | None) -> None:
    """One line per cached model: digest, model, checkpoint, vectors, size."""
    from tabulate import tabulate

    from mmeb.embcache import list_models

    models = list_models(_require_cache_dir(cache_dir))
    rows = [[m.digest[:12], m.label, m.identity.get("checkpoint") or "-",
             m.identity.get("dtype") or "-", m.vectors, f"{m.size_bytes / 1e6:.1f} MB"]
            for m in models]
    click.echo(tabulate(rows, headers=["digest", "model", "checkpoint", "dtype", "vectors",
                                       "size"], disable_numparse=True))


@cache.command("rm")
@click.argument("selectors", nargs=-1, metavar="[MODEL_OR_DIGEST]...")
@click.option("--all", "everything", is_flag=True, help="Remove every cached model.")
@cache_dir_option
@_one_line_errors
def cache_rm(selectors: tuple[str, ...], everything: bool, cache_dir: str | None) -> None:
    """Remove cached models by model name or digest prefix (from `mmeb cache ls`)."""
    from mmeb.embcache import remove_models

    for model in remove_models(_require_cache_dir(cache_dir), selectors,
                               everything=everything):
        click.echo(f"removed {model.digest[:12]} ({model.label}, {model.vectors} vectors)")


if __name__ == "__main__":
    main()
