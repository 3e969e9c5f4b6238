"""Security rules, checked over the source tree: no remote code, weights without pickle, no
shell, and data that cannot reach outside its folders."""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

import pytest
from mmeb_fixtures import write_image, write_rows

import mmeb
from mmeb.data import load_task_inputs
from mmeb.errors import DataError
from mmeb.hub import extract_zip
from mmeb.tasks import get_task

REPO = Path(mmeb.__file__).parent.parent
SOURCE_DIRS = ("mmeb", "models", "leaderboard", "vlm2vec", "benchmarks")


def source_files() -> list[Path]:
    return [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]


def violations(path: Path) -> list[str]:
    """Every use of remote code, pickle-based loading or a shell in one file."""
    found = []
    text = path.read_text(encoding="utf-8")
    if "trust_remote_code" in text:
        found.append("trust_remote_code")
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(
            func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"line {node.lineno}"
        if owner == "torch" and name == "load":
            safe = keywords.get("weights_only")
            if not (isinstance(safe, ast.Constant) and safe.value is True):
                found.append(f"torch.load without weights_only=True ({where})")
        if owner in ("pickle", "dill", "cloudpickle") and name in ("load", "loads"):
            found.append(f"{owner}.{name} ({where})")
        if owner == "os" and name in ("system", "popen"):
            found.append(f"os.{name} ({where})")
        shell = keywords.get("shell")
        if isinstance(shell, ast.Constant) and shell.value:
            found.append(f"shell=True ({where})")
        if isinstance(func, ast.Name) and name in ("eval", "exec"):  # not model.eval()
            found.append(f"{name}() ({where})")
    return found


def test_the_scanner_finds_planted_violations(tmp_path):
    planted = tmp_path / "bad.py"
    planted.write_text(
        "import os, pickle, subprocess, torch\n"
        "m = AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        "w = torch.load('w.bin')\n"
        "ok = torch.load('w.bin', weights_only=True)\n"
        "p = pickle.loads(b'')\n"
        "os.system('ls ' + name)\n"
        "subprocess.run(cmd, shell=True)\n"
        "eval(user_text)\n"
    )
    found = violations(planted)
    assert found == ["trust_remote_code", "torch.load without weights_only=True (line 3)",
                     "pickle.loads (line 5)", "os.system (line 6)", "shell=True (line 7)",
                     "eval() (line 8)"]


def test_no_remote_code_pickle_or_shell_in_the_project():
    files = source_files()
    assert len(files) > 30
    assert {f: v for f in files if (v := violations(f))} == {}


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/hostname", "ImageNet-1K/../../x.jpg",
                                  "ImageNet-1K/./../../eval_images/../x.jpg"])
def test_image_paths_are_confined_to_the_image_root(tmp_path, path):
    task = get_task("ImageNet-1K")
    write_image(tmp_path, "ImageNet-1K/a.jpg", "red")
    (tmp_path / "x.jpg").write_bytes((tmp_path / "eval_images" / "ImageNet-1K" / "a.jpg")
                                     .read_bytes())
    write_rows(tmp_path, task.name, [{
        "qry_text": "<|image_1|>\nRepresent the given image for classification\n",
        "qry_img_path": path, "tgt_text": ["red"], "tgt_img_path": [""]}])
    with pytest.raises(DataError, match="points outside the image root"):
        load_task_inputs(task, data_dir=tmp_path)


def test_zip_members_cannot_escape_and_a_damaged_zip_is_one_error(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("eval_images/ok.txt", "x")
        zf.writestr("eval_images/../../escaped.txt", "x")
    with pytest.raises(DataError, match="would extract outside"):
        extract_zip(evil, tmp_path / "target")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "target").exists()

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("eval_images/a.txt", "x" * 10_000)
    partial = tmp_path / "partial.zip"
    partial.write_bytes(good.read_bytes()[:-40])  # an interrupted download
    with pytest.raises(DataError, match=r"partial\.zip is damaged .*run `mmeb download` again"):
        extract_zip(partial, tmp_path / "target")
    assert not (tmp_path / "target").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".target")]
