"""Finding models: built-in names, entry points, module and file paths, option checks."""

from __future__ import annotations

import importlib.metadata
from importlib.metadata import EntryPoint

import pytest

import mmeb.registry as registry
from mmeb.errors import ModelError
from mmeb.random_encoder import RandomEncoder


def test_entry_point_models_are_listed_and_loadable(monkeypatch):
    ep = EntryPoint(name="my-random", value="mmeb.random_encoder:RandomEncoder",
                    group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [ep])
    assert "my-random" in registry.registered_models()
    encoder = registry.load_model("my-random", model_args={"dim": 8})
    assert isinstance(encoder, RandomEncoder)
    assert encoder.dim == 8


def test_model_args_are_typed():
    assert registry.parse_model_args(["dim=8", "scale=0.5", "flag=true", "x=none",
                                      "fusion=sum", "image-size=224"]) == {
        "dim": 8, "scale": 0.5, "flag": True, "x": None, "fusion": "sum", "image_size": 224}


def test_factory_returning_a_non_encoder_is_refused(tmp_path):
    file = tmp_path / "bad.py"
    file.write_text("def build():\n    return object()\n")
    with pytest.raises(ModelError, match="lacks a `name` attribute or an `encode"):
        registry.load_model(f"{file}:build")


def test_missing_attribute_in_module():
    with pytest.raises(ModelError, match="has no attribute 'Nope'"):
        registry.load_model("mmeb.random_encoder:Nope")


def test_missing_dependency_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "needs_dep.py").write_text("import not_installed_lib\n\ndef build():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match=r"needs the package 'not_installed_lib'.*mmeb\[all\]"):
        registry.load_model("needs_dep:build")


def test_unknown_module():
    with pytest.raises(ModelError, match=r"cannot import module 'no_such_pkg.mod'"):
        registry.load_model("no_such_pkg.mod:build")


class _Base:
    def __init__(self, checkpoint=None, *, dim: int = 4) -> None:
        self.name, self.dim = "base", dim

    def encode(self, items, *, side, task):
        return [[0.0] * self.dim for _ in items]


class _Child(_Base):
    def __init__(self, checkpoint=None, *, extra: int = 0, **options) -> None:
        self.extra = extra
        super().__init__(checkpoint, **options)


def test_options_forwarded_to_a_parent_class_are_accepted_and_checked():
    assert registry.accepted_options(_Child) == ["checkpoint", "extra", "dim"]
    encoder = registry.load_model(f"{__name__}:_Child", model_args={"extra": 1, "dim": 2})
    assert (encoder.extra, encoder.dim) == (1, 2)
    with pytest.raises(ModelError, match=r"does not take --model-arg colour=\.\.\. "
                                         r"\(it accepts: checkpoint, extra, dim\)"):
        registry.load_model(f"{__name__}:_Child", model_args={"colour": "red"})


def test_a_function_with_kwargs_accepts_anything():
    def build(**kwargs):
        return _Base()

    assert registry.accepted_options(build) is None


def readme_model_rows() -> dict[str, list[str]]:
    """The README's model table: ``--model`` name -> its cells."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Models", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].startswith("`") and cells[0] != "`--model`":
            rows[cells[0].strip("`")] = cells
    return rows


def test_readme_model_table_matches_the_registry():
    rows = readme_model_rows()
    entries = {e.name: e for e in registry.BUILTIN_MODELS}
    assert set(rows) == set(entries), "the README's model table and the registry disagree"
    for name, (_, _, checkpoint, install, paper, *_) in rows.items():
        entry = registry.model_entry(name)  # an alias's row shows its target's facts
        assert checkpoint.strip("`") == (entry.default_checkpoint or "-"), name
        assert install.strip("`") == (f"mmeb[{entry.extra}]" if entry.extra else "core"), name
        if entry.paper_score is None:
            assert not paper[:1].isdigit(), name
        else:
            assert paper.split()[0] == f"{entry.paper_score:.1f}", name


def test_aliases_resolve_to_their_target():
    entry = registry.ModelEntry("paper-model", "", "second name", alias_of="clip")
    assert entry.label == "paper-model (alias of clip)"
    assert registry.model_entry("clip").default_checkpoint == "openai/clip-vit-large-patch14"
    with pytest.raises(ModelError, match="unknown built-in model 'nope'"):
        registry.model_entry("nope")
