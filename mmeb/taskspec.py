"""What the harness knows about one evaluation dataset, whatever benchmark it belongs to."""

from __future__ import annotations

from dataclasses import dataclass

META_TASKS = ("classification", "vqa", "retrieval", "grounding")
#: A task's role in the paper's IND/OOD breakdown: IND datasets have a training subset.
ROLES = ("IND", "OOD")


@dataclass(frozen=True)
class TaskSpec:
    """Everything the harness needs to know about one evaluation dataset.

    ``source`` names the kind of place its rows come from (``hub``, ``sample``,
    ``sample-full``, or a kind registered in :mod:`mmeb.sources`); ``--data-dir`` replaces it
    with a local folder of the same layout.
    """

    name: str
    meta_task: str  # one of META_TASKS
    role: str  # one of ROLES: "IND" (has a training subset) or "OOD"
    query_modality: str  # "text", "image" or "image+text"
    target_modality: str
    query_instruction: str | None  # eval instruction inside qry_text
    target_instruction: str | None  # eval instruction inside tgt_text; None for bare texts
    train_query_instruction: str | None
    num_candidates: int  # candidates per query in the reference data
    num_queries: int = 1000
    source: str = "hub"
    hf_dataset: str | None = None
    hf_config: str | None = None  # the dataset's folder name (Hub config / local folder)
    file_prefix: str = "test"  # data files are <folder>/<file_prefix>-*.parquet
    hf_revision: str | None = None
    train_config: str | None = None  # config name in the training set (IND only)
    benchmark: str = "mmeb-v1"  # label recorded in results: "mmeb-v1", "sample", ...

    @property
    def folder(self) -> str:
        """The folder that holds this task's parquet files inside a data directory."""
        return self.hf_config or self.name

    @property
    def train_target_instruction(self) -> str | None:
        # MMEB-train targets use the eval target wording (image targets) or bare text.
        return self.target_instruction if self.train_config else None

    @property
    def modalities(self) -> frozenset[str]:
        return frozenset({self.query_modality, self.target_modality})
