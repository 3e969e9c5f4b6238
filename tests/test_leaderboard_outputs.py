"""Published rows, output formats, exports and the HTML page (read back in a real browser)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from leaderboard_fixtures import document, hits, random_model

from mmeb.cli import main
from mmeb.leaderboard import ModelResults, compare, load_models, resolve_models
from mmeb.leaderboard.exports import (
    read_mmeb_submission,
    read_mteb_results,
    write_mmeb_submission,
    write_mteb_results,
)
from mmeb.leaderboard.formats import render
from mmeb.leaderboard.published import get_published, published_rows
from mmeb.leaderboard.site import write_site
from mmeb.metrics import reciprocal_rank_at
from mmeb.results import decode_outcomes
from mmeb.tasks import collections

SAMPLE = [t.name for t in collections()["sample"]]
MMEB = [t.name for t in collections()["eval"]]
SHARED = Path(__file__).parents[1] / "leaderboard" / "data"
PAPER = json.loads((Path(__file__).parent / "data" / "paper_baselines.json").read_text())


def test_published_rows_carry_the_papers_numbers_and_its_inconsistencies():
    clip = get_published("CLIP")
    assert clip.dataset_score("ImageNet-1K", "hit@1") == pytest.approx(0.558)
    for key, printed in PAPER["CLIP"]["reported"].items():
        assert 100 * clip.aggregate(key, "hit@1")[0] == pytest.approx(printed)
        assert 100 * clip.recomputed("hit@1")[key] == pytest.approx(printed, abs=0.06)
    value, note = get_published("SigLIP").aggregate("retrieval", "hit@1")
    assert 100 * value == pytest.approx(31.6)  # as printed, with the paper's own typo noted
    assert "own datasets average 44.09" in note
    assert get_published("UniIR (CLIP_SF)").aggregate("grounding", "hit@1")[1]
    assert not get_published("OpenCLIP").aggregate("overall", "hit@1")[1]
    official = get_published("VLM2Vec-V1-Qwen2VL-2B")
    assert official.dataset_score("ImageNet-1K", "hit@5") == pytest.approx(0.94)
    assert 100 * official.aggregate("overall", "hit@1")[0] == pytest.approx(59.7, abs=0.05)
    assert len({r.name for r in published_rows()}) == len(published_rows())


def test_a_measured_model_shows_its_published_row_and_never_a_delta_to_it():
    docs = [document("my-clip", t, *hits(np.arange(40) < 20), adapter="clip",
                     checkpoint="openai/clip-vit-large-patch14") for t in MMEB[:3]]
    (table,) = compare([ModelResults.from_documents("my-clip", docs)], resamples=50)
    assert table.published == ["CLIP (published)"]
    wide = table.wide()
    assert wide.loc["ImageNet-1K", "CLIP (published)"] == pytest.approx(0.558)
    assert wide.loc["overall", "CLIP (published)"] == pytest.approx(0.378)
    published = table.cells[table.cells["kind"] == "published"]
    assert published["delta"].isna().all()
    assert published["lo"].isna().all()
    text = render([table], "markdown")
    assert "CLIP (published)" in text
    assert "Δ" not in text
    other = [document("x", t, *hits(np.ones(5)), adapter="clip", checkpoint="other/ckpt")
             for t in MMEB[:1]]
    assert compare([ModelResults.from_documents("x", other)])[0].published == []


def _model(tmp_path: Path) -> ModelResults:
    rng = np.random.default_rng(0)
    docs = []
    for task in MMEB[:4]:
        above = rng.integers(0, 6, size=50)
        tied = np.where(rng.random(50) < 0.2, 1, 0)
        docs.append(document("m", task, above, tied, np.full(50, 8)))
    return ModelResults.from_documents("m", docs)


def test_mmeb_submission_round_trips_and_matches_the_official_shape(tmp_path):
    model = _model(tmp_path)
    path = write_mmeb_submission(model, tmp_path / "m.json")
    document_ = json.loads(path.read_text())
    official = json.loads((SHARED / "reference_scores" / "VLM2Vec-V1-Qwen2VL-2B.json")
                          .read_text())
    ours_fields = set(document_["metrics"]["image"]["ImageNet-1K"])
    theirs = set(official["metrics"]["image"]["ImageNet-1K"])
    assert ours_fields == theirs - {"ndcg_exponential@1"} | {"ndcg_exponential@1"}
    name, back = read_mmeb_submission(path)
    assert name == "m"
    for task, doc in model.documents.items():
        for metric in ("hit@1", "hit@5", "hit@10", "ndcg@5", "ndcg@10"):
            assert back[metric][task] == pytest.approx(doc["metrics"][metric])
        counts = decode_outcomes(doc)
        assert counts is not None
        mrr5 = document_["metrics"]["image"][task]["mrr@5"]
        expected = np.mean([1 / (a + 1) if a < 5 else 0.0 for a in counts.above[counts.tied == 0]]
                           + list(reciprocal_rank_at(counts, 5)[counts.tied > 0]))
        assert mrr5 == pytest.approx(expected)
    # the shipped official files read through the same reader
    assert read_mmeb_submission(SHARED / "reference_scores" / "VLM2Vec-V1-Qwen2VL-7B.json")[1][
        "hit@1"]["ImageNet-1K"] == pytest.approx(0.802)


def test_mteb_files_round_trip(tmp_path):
    model = _model(tmp_path)
    folder = write_mteb_results(model, tmp_path / "mteb")
    assert folder == tmp_path / "mteb" / "m" / "no_revision_available"
    first = json.loads((folder / "ImageNet-1K.json").read_text())
    assert first["task_name"] == "ImageNet-1K"
    assert first["scores"]["test"][0]["main_score"] == pytest.approx(
        model.documents["ImageNet-1K"]["metrics"]["hit@1"])
    name, back = read_mteb_results(folder)
    assert name == "m"
    for task, doc in model.documents.items():
        assert {m: back[m][task] for m in doc["metrics"]} == pytest.approx(doc["metrics"])


def test_csv_json_latex_outputs_hold_the_same_numbers(tmp_path):
    random_model(tmp_path, "a", SAMPLE[:3], 0.4, seed=1)
    random_model(tmp_path, "b_1", SAMPLE[:3], 0.6, seed=2)
    comparisons = compare(load_models(resolve_models([], tmp_path)), resamples=100)
    cells = comparisons[0].cells
    from_csv = pd.read_csv(io.StringIO(render(comparisons, "csv")))
    assert list(from_csv.columns) == list(cells.columns)
    assert np.allclose(from_csv["value"], cells["value"].astype(float), equal_nan=True)
    assert np.allclose(from_csv["p_value"], cells["p_value"].astype(float), equal_nan=True)
    from_json = json.loads(render(comparisons, "json"))["comparisons"][0]
    assert from_json["reference"] == "a"
    assert from_json["status"]["b_1"]["complete"] is False
    assert [c["value"] for c in from_json["cells"]] == pytest.approx(list(cells["value"]))
    latex = render(comparisons, "latex")
    assert r"\toprule" in latex
    assert r"b\_1" in latex
    assert r"$\Delta$ b\_1 vs a" in latex
    value = 100 * comparisons[0].wide().loc[SAMPLE[0], "b_1"]
    assert f"{value:.1f} [" in latex


class _Tables(HTMLParser):
    """Every table of a page: id -> rows of (text, data-value) cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self._table = found.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._value = [], found.get("data-value")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell), self._value))
            self._cell = None
        elif tag == "table":
            self._table = None


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _browser(tmp_path: Path, *args: str) -> str:
    binary = _chromium()
    assert binary is not None
    # Output goes to files, not pipes: helper processes the browser leaves behind for a while
    # would otherwise hold a pipe open and keep the test waiting.
    out, err = tmp_path / "chromium.out", tmp_path / "chromium.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        done = subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu",
                               "--no-first-run", "--disable-dev-shm-usage",
                               "--disable-crash-reporter",
                               f"--user-data-dir={tmp_path / 'profile'}",
                               *args], stdout=stdout, stderr=stderr, timeout=120)
    assert done.returncode == 0, err.read_text()[-2000:]
    return out.read_text()


@pytest.mark.skipif(_chromium() is None,
                    reason="Debian's chromium is not installed (apt-get install chromium)")
def test_leaderboard_page_in_headless_chromium(tmp_path):
    results = tmp_path / "results"
    random_model(results, "a", SAMPLE, 0.3, seed=1)
    random_model(results, "b", SAMPLE, 0.6, seed=2)
    random_model(results, "c", SAMPLE[:-1], 0.5, seed=3)
    models = load_models(resolve_models([], results))
    comparisons = compare(models, resamples=100)
    index = write_site(comparisons, models, tmp_path / "site")
    frame = comparisons[0].wide()

    dom = _Tables()
    dom.feed(_browser(tmp_path, "--dump-dom", index.as_uri()))
    board = dom.tables["leaderboard-sample"]
    header = [text for text, _ in board[0]]
    assert header[:3] == ["model", "kind", "datasets"]
    read = {row[0][0]: {h: float(v) for h, (_, v) in zip(header, row, strict=True)
                        if v is not None} for row in board[1:]}
    expected = frame.loc[header[3:]].T
    assert set(read) == set(expected.index) == {"a", "b", "c"}
    for model, row in read.items():
        assert row == pytest.approx(expected.loc[model].to_dict())
    assert [row[2][0] for row in board[1:]] == ["12/12", "12/12", "11/12"]
    datasets = dom.tables["datasets-sample"]
    assert [row[0][0] for row in datasets[1:1 + len(SAMPLE)]] == SAMPLE
    column_a = [float(row[3][1]) for row in datasets[1:] if row[3][1] is not None]
    assert column_a == pytest.approx(list(frame["a"].dropna()))  # datasets, then aggregates

    # the page's own script sorts: overall, descending
    column = header.index("overall")
    sorted_dom = _Tables()
    sorted_dom.feed(_browser(tmp_path, "--dump-dom", f"{index.as_uri()}#sort=leaderboard-sample:"
                             f"{column}:desc"))
    order = [row[0][0] for row in sorted_dom.tables["leaderboard-sample"][1:]]
    assert order == list(frame.loc["overall"].sort_values(ascending=False).index)

    shot = tmp_path / "page.png"
    _browser(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", index.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 1600)
    for plot in ("sample-aggregates.png", "sample-datasets.png"):
        assert (tmp_path / "site" / "plots" / plot).stat().st_size > 10_000
    assert (tmp_path / "site" / "exports" / "mmeb" / "c.json").exists()


def test_compare_command_formats_and_errors(tmp_path):
    random_model(tmp_path, "a", SAMPLE[:2], 0.4, seed=1)
    random_model(tmp_path, "b", SAMPLE[:2], 0.6, seed=2)
    runner = CliRunner()
    md = runner.invoke(main, ["compare", "b", "a", "--results", str(tmp_path),
                              "--resamples", "100"])
    assert md.exit_code == 0, md.output
    assert "Δ a vs b" in md.output
    assert "| overall (12)" in md.output
    out = tmp_path / "table.html"
    html = runner.invoke(main, ["compare", "--results", str(tmp_path), "--format", "html",
                                "--out", str(out)])
    assert html.exit_code == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    only = runner.invoke(main, ["compare", "--results", str(tmp_path), "--tasks", SAMPLE[0],
                                "--format", "json"])
    rows = {c["row"] for c in json.loads(only.output)["comparisons"][0]["cells"]}
    assert SAMPLE[1] not in rows
    assert SAMPLE[0] in rows
    missing = runner.invoke(main, ["compare", "zz", "--results", str(tmp_path)])
    assert missing.exit_code == 1
    assert len(missing.output.strip().splitlines()) == 1
    assert "no results for model 'zz'" in missing.output
    exported = runner.invoke(main, ["export", "a", "--results", str(tmp_path), "--out",
                                    str(tmp_path.parent / f"{tmp_path.name}-sub")])
    assert exported.exit_code == 0, exported.output  # written outside the results folder
    name, back = read_mmeb_submission(tmp_path.parent / f"{tmp_path.name}-sub" / "a.json")
    assert name == "a"
    assert set(back["hit@1"]) == set(SAMPLE[:2])
    mteb = runner.invoke(main, ["export", "--to", "mteb", "--results", str(tmp_path), "--out",
                                str(tmp_path.parent / f"{tmp_path.name}-mteb")])
    assert mteb.exit_code == 0, mteb.output
    assert read_mteb_results(tmp_path.parent / f"{tmp_path.name}-mteb" / "b" /
                             "no_revision_available")[0] == "b"
    board = runner.invoke(main, ["leaderboard", "--results", str(tmp_path), "--out",
                                 str(tmp_path / "site"), "--resamples", "50"])
    assert board.exit_code == 0
    assert (tmp_path / "site" / "index.html").exists()


def test_compare_run_evaluates_what_is_missing_first(tmp_path):
    from mmeb_fixtures import colour_classification, colour_t2i

    colour_classification(tmp_path / "data")
    colour_t2i(tmp_path / "data")
    results = tmp_path / "results"
    random_model(results, "other", ["ImageNet-1K", "MSCOCO_t2i"], 0.5, seed=4, rows=12)
    args = ["compare", "random", "other", "--run", "--results", str(results), "--tasks",
            "ImageNet-1K,MSCOCO_t2i", "--data-dir", str(tmp_path / "data"), "--model-arg",
            "dim=8", "--no-progress", "--resamples", "50", "--format", "json"]
    first = CliRunner().invoke(main, args)
    # --run goes through the runner: a folder made with other settings is not reused
    assert first.exit_code == 1
    assert "was computed with other settings" in first.output
    args[2:3] = []
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in (results / "random").iterdir()) == [
        "ImageNet-1K.json", "MSCOCO_t2i.json"]
    report = json.loads(done.stdout)["comparisons"][0]
    assert report["models"] == ["random"]
    again = CliRunner().invoke(main, args)
    assert "done earlier" in again.output
    assert again.stdout == done.stdout
