"""What the ``mmeb compare``, ``summary`` and ``leaderboard`` commands do, behind the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmeb.leaderboard.compare import Comparison, compare
from mmeb.leaderboard.formats import render
from mmeb.leaderboard.load import ModelResults, load_models, read_folder, resolve_models
from mmeb.results import safe_name


def compare_folders(
    names: Sequence[str], results_dir: Path, *, fmt: str = "markdown", **options: Any
) -> str:
    models = load_models(resolve_models(names, results_dir))
    return render(compare(models, **options), fmt)


def summary_text(model: ModelResults, *, fmt: str = "markdown", **options: Any) -> str:
    """One model's table: per dataset with intervals, chance and queries, then aggregates."""
    comparisons = compare([model], auto_published=False, **options)
    header = f"model: {model.name}\n\n" if fmt == "markdown" else ""
    return header + render(comparisons, fmt, details=True)


def summary_of_folder(folder: Path, *, fmt: str = "markdown", **options: Any) -> str:
    return summary_text(read_folder(folder), fmt=fmt, **options)


def summary_of_documents(name: str, documents: Sequence[dict[str, Any]]) -> str:
    return summary_text(ModelResults.from_documents(name, documents))


def build_site(results_dir: Path, out: Path, **options: Any) -> tuple[Path, list[Comparison]]:
    from mmeb.leaderboard.site import write_site

    models = load_models(resolve_models([], results_dir))
    comparisons = compare(models, **options)
    return write_site(comparisons, models, out), comparisons


def export_models(names: Sequence[str], results_dir: Path, target: str, out: Path) -> list[Path]:
    """Write each model's MMEB submission JSON (``out/<model>.json``) or mteb-style folder."""
    from mmeb.leaderboard.exports import write_mmeb_submission, write_mteb_results

    written = []
    for model in load_models(resolve_models(names, results_dir)):
        if target == "mmeb":
            written.append(write_mmeb_submission(model, out / f"{safe_name(model.name)}.json"))
        else:
            written.append(write_mteb_results(model, out))
    return written
