"""Finding models: built-in names, entry points, module and file paths, option checks."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

import mmeb.registry as registry
from mmeb.errors import ModelError
from mmeb.random_encoder import RandomEncoder


def test_entry_point_models_are_listed_and_loadable(monkeypatch):
    ep = EntryPoint(name="my-random", value="mmeb.random_encoder:RandomEncoder",
                    group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep])
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
