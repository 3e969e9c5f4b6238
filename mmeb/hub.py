"""The Hugging Face copy of MMEB-eval: parquet per task plus one images.zip, cached locally.

Both are fetched through ``huggingface_hub`` at the pinned revision; the zip is extracted once
into ``<cache>/eval_images/<revision>/``. After that the data is read exactly like a local copy.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from mmeb.errors import DataError
from mmeb.mmeb_v1 import MMEB_EVAL_DATASET, MMEB_EVAL_REVISION
from mmeb.paths import cache_dir
from mmeb.sources import DataSource, find_parquet_files
from mmeb.taskspec import TaskSpec

IMAGES_ZIP = "images.zip"


def _no_data(task_names: str, exc: BaseException) -> DataError:
    return DataError(
        f"MMEB data for {task_names} is not available locally and could not be fetched from "
        f"{MMEB_EVAL_DATASET} ({type(exc).__name__}); run `mmeb download` where the Hub is "
        "reachable, or pass --data-dir DIR with DIR/<Task>/test-*.parquet and DIR/eval_images/"
    )


def fetch_parquet(tasks: list[TaskSpec], revision: str = MMEB_EVAL_REVISION) -> Path:
    """Snapshot the parquet files of ``tasks``; returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    patterns = [f"{t.folder}/*" for t in tasks]
    try:
        return Path(
            snapshot_download(
                repo_id=MMEB_EVAL_DATASET, repo_type="dataset", revision=revision,
                allow_patterns=patterns,
            )
        )
    except Exception as exc:  # the Hub raises many kinds: offline, 404, connection...
        raise _no_data(", ".join(t.name for t in tasks), exc) from None


def fetch_images(revision: str = MMEB_EVAL_REVISION) -> Path:
    """Download and extract images.zip once; returns the image root."""
    target = cache_dir() / "eval_images" / revision
    if not target.is_dir():
        from huggingface_hub import hf_hub_download

        try:
            archive = hf_hub_download(
                repo_id=MMEB_EVAL_DATASET, repo_type="dataset", filename=IMAGES_ZIP,
                revision=revision,
            )
        except Exception as exc:
            raise _no_data("the images", exc) from None
        extract_zip(Path(archive), target)
    return image_root_in(target)


def image_root_in(folder: Path) -> Path:
    """The zip may hold the images at its top or inside one ``eval_images/`` folder."""
    nested = folder / "eval_images"
    return nested if nested.is_dir() else folder


def extract_zip(archive: Path, target: Path) -> None:
    """Extract into a temporary sibling, then rename: a crash never leaves half a folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                root = tmp.resolve()
                for member in zf.namelist():
                    if not (root / member).resolve().is_relative_to(root):
                        raise DataError(
                            f"{archive}: member {member!r} would extract outside {target}")
                zf.extractall(tmp)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            raise DataError(
                f"{archive} is damaged ({exc}), e.g. by an interrupted download; delete it and "
                "run `mmeb download` again"
            ) from None
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def hub_source(task: TaskSpec, image_dir: Path | None = None) -> DataSource:
    revision = task.hf_revision or MMEB_EVAL_REVISION
    snapshot = fetch_parquet([task], revision)
    files = find_parquet_files(task, snapshot)
    root = image_dir if image_dir is not None else fetch_images(revision)
    return DataSource(files, root, "hub", revision=revision)


def download(tasks: list[TaskSpec], *, images: bool = True) -> tuple[Path, Path | None]:
    """Prefetch parquet files (and images) for ``tasks`` into the Hugging Face cache."""
    hub_tasks = [t for t in tasks if t.source == "hub"]
    if not hub_tasks:
        raise DataError("nothing to download: the selected tasks are not read from the Hub")
    snapshot = fetch_parquet(hub_tasks)
    return snapshot, fetch_images() if images else None
