"""Published numbers, shipped as package data and always labelled as published.

Two kinds of source, kept apart from measured results (and from each other):

- the VLM2Vec paper: Table 2 (meta-task, IND/OOD and overall scores as printed) and its
  per-dataset table, plus the later rows of the VLM2Vec repository README
  (``data/paper_results.json``);
- the official per-dataset score files of the VLM2Vec repository, in the MMEB leaderboard
  submission shape (``data/reference_scores/*.json``).

Aggregates are shown as printed. Where a row also has per-dataset cells, the means of its own
cells are recomputed, and a printed aggregate that disagrees with them by more than rounding
(0.06 points) carries a note: the paper has three such known inconsistencies (SigLIP's
retrieval mean, both UniIR rows' IND/OOD and UniIR CLIP_SF's grounding mean).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from mmeb.errors import MMEBError
from mmeb.leaderboard.taskinfo import aggregate_groups, in_group, suite_tasks

#: Printed values are rounded to 0.1 points; a mean of cells may differ by half of that.
ROUNDING_TOLERANCE = 0.0006
PAPER = "VLM2Vec paper (arXiv 2410.05160, ICLR 2025)"
SCORE_FILES = "official score file, TIGER-AI-Lab/VLM2Vec experiments/public/all_scores"


@dataclass(frozen=True)
class PublishedRow:
    """One published model: per-dataset scores per metric (fractions) and printed aggregates."""

    name: str
    source: str
    datasets: dict[str, dict[str, float]]  # metric -> dataset -> value
    printed: dict[str, float] = field(default_factory=dict)  # aggregate -> value (hit@1 only)
    group: str = ""

    @property
    def label(self) -> str:
        return f"{self.name} (published)"

    def dataset_score(self, task: str, metric: str) -> float | None:
        return self.datasets.get(metric, {}).get(task)

    def recomputed(self, metric: str) -> dict[str, float]:
        """Means of this row's own cells, for the aggregates whose datasets it all has."""
        cells = self.datasets.get(metric, {})
        out: dict[str, float] = {}
        for group, kind in aggregate_groups():
            members = [t.name for t in suite_tasks("eval") if in_group(t, group, kind)]
            if members and all(m in cells for m in members):
                out[group] = sum(cells[m] for m in members) / len(members)
        return out

    def aggregate(self, group: str, metric: str) -> tuple[float | None, str]:
        """The value to show for an aggregate and a note ('' or why it is special)."""
        recomputed = self.recomputed(metric).get(group)
        if metric == "hit@1" and group in self.printed:
            value = self.printed[group]
            if recomputed is not None and abs(recomputed - value) > ROUNDING_TOLERANCE:
                return value, (f"printed {100 * value:.1f}; the row's own datasets average "
                               f"{100 * recomputed:.2f}")
            return value, ""
        if recomputed is not None:
            return recomputed, "mean of the published datasets" if self.printed else ""
        return None, ""


def _data(name: str) -> Any:
    return json.loads(files("mmeb.leaderboard").joinpath(f"data/{name}").read_text("utf-8"))


def _fractions(scores: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v) / 100, 6) for k, v in scores.items()}


@cache
def published_rows() -> tuple[PublishedRow, ...]:
    from mmeb.leaderboard.exports import read_mmeb_submission_document

    paper = _data("paper_results.json")
    cells = paper["per_dataset_table6"]
    rows = []
    for entry in paper["table2_meta_task_scores_iclr"]["rows"]:
        name = entry["model"]
        datasets = {"hit@1": _fractions(cells[name]["scores"])} if name in cells else {}
        source = f"{PAPER}, Table 2" + (" and per-dataset table" if datasets else "")
        rows.append(PublishedRow(name, source, datasets, _fractions(entry["scores"]),
                                 entry.get("group", "")))
    for entry in paper["repo_readme_later_models"]["rows"]:
        rows.append(PublishedRow(entry["model"], "VLM2Vec repository README (v1.0)", {},
                                 _fractions(entry["scores"]), entry.get("verified", "")))
    names = ("VLM2Vec-V1-Qwen2VL-2B", "VLM2Vec-V1-Qwen2VL-7B", "VLM2Vec-V2.0-Qwen2VL-2B")
    for name in names:
        document = _data(f"reference_scores/{name}.json")
        model, datasets = read_mmeb_submission_document(document, f"{name}.json")
        rows.append(PublishedRow(model, SCORE_FILES, datasets))
    return tuple(rows)


def get_published(name: str) -> PublishedRow:
    rows = published_rows()
    for row in rows:
        if row.name == name or row.name.lower() == name.lower():
            return row
    raise MMEBError(f"no published row {name!r}; published rows: "
                    f"{', '.join(r.name for r in rows)} (or the path of an MMEB score file)")


# (adapter names or None for any, checkpoints, published row). The paper's evaluation code and
# the leaderboard name different checkpoints for some baselines, so each lists all candidates.
_MATCHES: tuple[tuple[frozenset[str] | None, frozenset[str], str], ...] = (
    (frozenset({"clip"}), frozenset({"openai/clip-vit-large-patch14"}), "CLIP"),
    (frozenset({"openclip"}), frozenset({"hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                                         "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
                                         "hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K"}),
     "OpenCLIP"),
    (frozenset({"siglip"}), frozenset({"google/siglip-base-patch16-224",
                                       "google/siglip-so400m-patch14-384"}), "SigLIP"),
    (frozenset({"blip2"}), frozenset({"Salesforce/blip2-itm-vit-g", "Salesforce/blip2-opt-2.7b"}),
     "BLIP2"),
    (None, frozenset({"royokong/e5-v"}), "E5-V"),
    (None, frozenset({"TIGER-Lab/VLM2Vec-Full"}), "VLM2Vec (Phi-3.5-V, FFT, bs=1024)"),
    (None, frozenset({"TIGER-Lab/VLM2Vec-LoRA"}), "VLM2Vec (Phi-3.5-V, LoRA, bs=1024)"),
    (None, frozenset({"TIGER-Lab/VLM2Vec-LLaVa-Next"}),
     "VLM2Vec (LLaVA-1.6, LoRA, bs=1024, res=1344x1344)"),
    (None, frozenset({"TIGER-Lab/VLM2Vec-Qwen2VL-2B"}), "VLM2Vec-V1-Qwen2VL-2B"),
    (None, frozenset({"TIGER-Lab/VLM2Vec-Qwen2VL-7B"}), "VLM2Vec-V1-Qwen2VL-7B"),
    (None, frozenset({"VLM2Vec/VLM2Vec-V2.0"}), "VLM2Vec-V2.0-Qwen2VL-2B"),
)


def match_published(config: dict[str, Any], fingerprint: dict[str, Any]) -> str | None:
    """The published row of the same model and checkpoint as a measured one, if there is one."""
    adapter = config.get("adapter") or {}
    name = str(adapter.get("name", fingerprint.get("model", "")))
    checkpoints = {str(c).rstrip("/") for c in (adapter.get("checkpoint"),
                                                fingerprint.get("checkpoint")) if c}
    for adapters, known, row in _MATCHES:
        if (adapters is None or name in adapters) and checkpoints & known:
            return row
    return None


def select_published(names: Iterable[str]) -> list[PublishedRow]:
    """Rows by name, ``all``, or the path of an MMEB leaderboard score file."""
    wanted = list(names)
    if any(n.lower() == "all" for n in wanted):
        return list(published_rows())
    return [_from_file(Path(n)) if n.endswith(".json") and Path(n).is_file()
            else get_published(n) for n in wanted]


def _from_file(path: Path) -> PublishedRow:
    from mmeb.leaderboard.exports import read_mmeb_submission

    name, datasets = read_mmeb_submission(path)
    return PublishedRow(name, f"score file {path}", datasets)
