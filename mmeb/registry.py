"""Finding models by name, module path, file path or entry point, without importing them early.

Built-in adapters are listed as ``"module:factory"`` strings so that ``import mmeb`` and
``mmeb models`` never import torch or a model library. A factory is any callable that returns
an :class:`~mmeb.encoder.Encoder`; it receives ``checkpoint``, ``device`` and ``dtype`` when the
user sets them, plus every ``--model-arg key=value``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmeb.encoder import Encoder
from mmeb.errors import ModelError

ENTRY_POINT_GROUP = "mmeb.models"
#: A default checkpoint written ``package:<folder>`` ships inside the ``mmeb.models`` package.
PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class ModelEntry:
    """Everything the harness states about a built-in model, in one place.

    The adapter reads its default checkpoint, revision and extra from here (by ``name``), the
    CLI lists them, the README's model table is checked against them, and the leaderboard puts
    the published row named ``paper_row`` beside measured results.
    """

    name: str
    target: str  # "module:factory"
    description: str
    default_checkpoint: str | None = None
    revision: str | None = None  # pinned Hub revision of the default checkpoint (None: main)
    extra: str | None = None  # pip extra that provides its dependencies
    paper_score: float | None = None  # MMEB overall hit@1 (%) in the paper's Table 2
    paper_row: str | None = None  # that row's model name in the paper's tables
    alias_of: str | None = None  # another entry's name: this one is a second name for it

    @property
    def label(self) -> str:
        return f"{self.name} (alias of {self.alias_of})" if self.alias_of else self.name


BUILTIN_MODELS: tuple[ModelEntry, ...] = (
    ModelEntry(
        "random", "mmeb.random_encoder:RandomEncoder",
        "deterministic hash-seeded vectors for smoke tests (every modality; scores chance)",
    ),
    ModelEntry(
        "vlm2vec-tiny", "mmeb.models.vlm2vec_tiny:VLM2VecTiny",
        "a 3 MB Qwen2-VL trained by `vlm2vec train` on the sample suite, shipped in the package",
        "package:weights/vlm2vec-tiny", extra="vlm",
    ),
    ModelEntry(
        "clip", "mmeb.models.clip:CLIPEncoder",
        "CLIP (transformers CLIPModel); image+text fused by a named policy",
        "openai/clip-vit-large-patch14", extra="clip", paper_score=37.8, paper_row="CLIP",
    ),
    ModelEntry(
        "openclip", "mmeb.models.openclip:OpenCLIPEncoder",
        "OpenCLIP (open_clip); hf-hub ids, local dirs, architecture + pretrained tag",
        "hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K", extra="clip", paper_score=39.7,
        paper_row="OpenCLIP",
    ),
    ModelEntry(
        "siglip", "mmeb.models.siglip:SigLIPEncoder",
        "SigLIP (transformers SiglipModel); image+text fused by a named policy",
        "google/siglip-base-patch16-224", extra="clip", paper_score=34.8, paper_row="SigLIP",
    ),
    ModelEntry(
        "blip", "mmeb.models.blip:BLIPEncoder",
        "BLIP retrieval (BlipForImageTextRetrieval), contrastive-head features",
        "Salesforce/blip-itm-base-coco", extra="blip",
    ),
    ModelEntry(
        "blip2", "mmeb.models.blip2:BLIP2Encoder",
        "BLIP-2 Q-Former (Blip2ForImageTextRetrieval), one query token per image",
        "Salesforce/blip2-itm-vit-g", extra="blip", paper_score=25.2, paper_row="BLIP2",
    ),
    ModelEntry(
        "vlm2vec-phi35v", "mmeb.models.phi35v:VLM2VecPhi35V",
        "VLM2Vec, Phi-3.5-V full fine-tune (released at bs 2048; the score is the paper's FFT "
        "row, bs 1024); own Phi-3.5-V module, num_crops 4",
        "TIGER-Lab/VLM2Vec-Full", revision="e9afa98002097ac2471827ba23ea1f2ddd229480",
        extra="vlm", paper_score=55.9, paper_row="VLM2Vec (Phi-3.5-V, FFT, bs=1024)",
    ),
    ModelEntry(
        "vlm2vec-phi35v-lora", "mmeb.models.phi35v:VLM2VecPhi35VLoRA",
        "VLM2Vec, Phi-3.5-vision-instruct + LoRA (DoRA) merged at load; num_crops 4",
        "TIGER-Lab/VLM2Vec-LoRA", revision="7403b6327958071c1e33c822c7453adadccc7298",
        extra="vlm", paper_score=60.1, paper_row="VLM2Vec (Phi-3.5-V, LoRA, bs=1024)",
    ),
    ModelEntry("vlm2vec", "", "the paper's VLM2Vec", alias_of="vlm2vec-phi35v"),
    ModelEntry(
        "vlm2vec-qwen2vl-2b", "mmeb.models.qwen2vl:VLM2VecQwen2VL2B",
        "VLM2Vec, Qwen2-VL-2B + LoRA merged at load; last-token pooling",
        "TIGER-Lab/VLM2Vec-Qwen2VL-2B", extra="vlm", paper_score=60.1,
        paper_row="VLM2Vec (Qwen2-VL-2B, LoRA, high-res)",
    ),
    ModelEntry(
        "vlm2vec-qwen2vl-7b", "mmeb.models.qwen2vl:VLM2VecQwen2VL7B",
        "VLM2Vec, Qwen2-VL-7B + LoRA merged at load; last-token pooling",
        "TIGER-Lab/VLM2Vec-Qwen2VL-7B", extra="vlm", paper_score=65.8,
        paper_row="VLM2Vec (Qwen2-VL-7B, LoRA, high-res)",
    ),
    ModelEntry(
        "vlm2vec-llava-next", "mmeb.models.llava_next:LlavaNextEncoder",
        "VLM2Vec, LLaVA-NeXT Mistral-7B at 1344px; last-token pooling",
        "TIGER-Lab/VLM2Vec-LLaVa-Next", extra="vlm", paper_score=62.9,
        paper_row="VLM2Vec (LLaVA-1.6, LoRA, bs=1024, res=1344x1344)",
    ),
    ModelEntry(
        "e5-v", "mmeb.models.e5v:E5VEncoder",
        "E5-V, LLaVA-NeXT Llama-3-8B, one-word-summary prompts",
        "royokong/e5-v", extra="vlm", paper_score=13.3,
        paper_row="E5-V",
    ),
)


def model_entry(name: str) -> ModelEntry:
    """The built-in entry ``name``, aliases followed (a ModelError names the known ones)."""
    entries = {entry.name: entry for entry in BUILTIN_MODELS}
    entry = entries.get(name)
    if entry is None:
        raise ModelError(f"unknown built-in model {name!r}; known: {', '.join(sorted(entries))}")
    return entries[entry.alias_of] if entry.alias_of else entry


def registered_models() -> dict[str, ModelEntry]:
    """Built-in adapters plus those installed under the ``mmeb.models`` entry-point group."""
    # Scanning the installed distributions costs ~0.1 s: done only when a name is not built in.
    from importlib.metadata import entry_points

    models = {entry.name: entry for entry in BUILTIN_MODELS}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        models.setdefault(ep.name, ModelEntry(ep.name, ep.value, f"entry point ({ep.value})"))
    return models


def find_model(name: str) -> ModelEntry | None:
    """The registered entry ``name`` (built in first, then entry points), or None."""
    for entry in BUILTIN_MODELS:
        if entry.name == name:
            return entry
    if ":" in name:  # a module or file spec, never an entry point's name
        return None
    return registered_models().get(name)


def resolve_factory(spec: str) -> Callable[..., Any]:
    """``name`` | ``pkg.module:factory`` | ``path/to/file.py:factory`` -> the factory."""
    entry = find_model(spec)
    if entry is not None:
        spec = model_entry(entry.alias_of).target if entry.alias_of else entry.target
    elif ":" not in spec:
        raise ModelError(
            f"unknown model {spec!r}; registered models: {', '.join(sorted(registered_models()))} "
            "(or pass pkg.module:factory / path/to/file.py:factory)"
        )
    location, _, attr = spec.rpartition(":")
    module = _load_file(location) if location.endswith(".py") else _import(location, spec)
    try:
        return getattr(module, attr)  # type: ignore[no-any-return]
    except AttributeError:
        raise ModelError(f"{location} has no attribute {attr!r} (from --model {spec})") from None


def _import(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ModelError(
                f"cannot import module {module_name!r} (from --model {spec})"
            ) from None
        raise ModelError(
            f"model {spec!r} needs the package {exc.name!r}; install it, e.g. "
            f"pip install \"mmeb[{_extra_for(spec)}]\""
        ) from None


def _extra_for(spec: str) -> str:
    for entry in BUILTIN_MODELS:
        if spec == entry.name and entry.alias_of:
            return _extra_for(entry.alias_of)
        if spec in (entry.name, entry.target) and entry.extra:
            return entry.extra
    return "all"


def _load_file(path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"model file not found: {path}")
    module_name = f"mmeb_user_model_{abs(hash(file.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        del sys.modules[module_name]  # nothing half-imported is left behind
        if isinstance(exc, SyntaxError):
            raise ModelError(f"{path}:{exc.lineno}: {exc.msg}; fix the model file") from None
        if isinstance(exc, ModuleNotFoundError):
            raise ModelError(f"{path} imports {exc.name!r}, which is not installed; install it "
                             "in this environment") from None
        raise  # any other failure is a bug in the user's code: its traceback is what they need
    return module


def packaged_checkpoint(checkpoint: str) -> str:
    """The folder of a ``package:<folder>`` checkpoint (any other name unchanged), found
    without importing the adapters."""
    if not checkpoint.startswith(PACKAGE_PREFIX):
        return checkpoint
    spec = importlib.util.find_spec("mmeb.models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the mmeb.models package is missing; reinstall mmeb")
    root = Path(next(iter(spec.submodule_search_locations)))
    return str(root / checkpoint.removeprefix(PACKAGE_PREFIX))


def _packaged_digest(spec: str) -> str | None:
    """The sha256 of a packaged default checkpoint's manifest (it lists every file's hash)."""
    entry = find_model(spec)
    if entry is None or not (entry.default_checkpoint or "").startswith(PACKAGE_PREFIX):
        return None
    manifest = Path(packaged_checkpoint(str(entry.default_checkpoint))) / "manifest.json"
    from mmeb.revision import file_sha256

    return file_sha256(manifest) if manifest.is_file() else None


def model_identity(spec: str) -> dict[str, str]:
    """What names the model's code in a run's fingerprint.

    A ``file.py:factory`` spec is recorded by the file's absolute path and the sha256 of its
    content, so the same relative spec run from another folder, or the file edited in place,
    never reuses the other code's results. Registered names and module paths are recorded as
    given (their code is versioned with the installed packages, recorded in every result); one
    with weights in the package adds its manifest's hash, so new weights are a new model.
    """
    location, _, attr = spec.rpartition(":")
    if not location.endswith(".py") or find_model(spec) is not None:
        packaged = _packaged_digest(spec)
        return {"model": spec} if packaged is None else {"model": spec,
                                                          "packaged_sha256": packaged}
    file = Path(location)
    if not file.is_file():
        raise ModelError(f"model file not found: {location}")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    return {"model": f"{file.resolve()}:{attr}", "model_sha256": digest}


def load_model(
    spec: str,
    *,
    checkpoint: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    model_args: Mapping[str, Any] | None = None,
) -> Encoder:
    """Build an encoder from a ``--model`` spec and the shared options."""
    factory = resolve_factory(spec)
    kwargs: dict[str, Any] = {
        k: v for k, v in {"checkpoint": checkpoint, "device": device, "dtype": dtype}.items() if v
    }
    kwargs.update(model_args or {})
    _check_accepts(factory, kwargs, spec)
    kwargs.update(_check_types(factory, model_args or {}, spec))
    try:
        encoder = factory(**kwargs)
    except (TypeError, ValueError) as exc:
        if not model_args:
            raise
        # A factory that converts an option (int(dim)) fails on a bad value; name the options.
        given = " ".join(f"{k}={v!r}" for k, v in model_args.items())
        raise ModelError(
            f"model {spec!r} refused --model-arg {given} ({type(exc).__name__}: {exc}); "
            "check the values' types"
        ) from None
    if not isinstance(encoder, Encoder):
        raise ModelError(
            f"--model {spec} returned {type(encoder).__name__}, which lacks a `name` attribute "
            "or an `encode(items, *, side, task)` method"
        )
    return encoder


def accepted_options(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword options ``factory`` takes; None when it takes any.

    A class whose ``__init__`` forwards ``**kwargs`` to its parent accepts the parent's options
    too, so adapters declare only their own extra options and the check still names every one.
    """
    if isinstance(factory, type):
        chain = [vars(c)["__init__"] for c in factory.__mro__ if "__init__" in vars(c)]
    else:
        chain = [factory]
    names: list[str] = []
    for function in chain:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        names += [p.name for p in params if p.name != "self" and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return list(dict.fromkeys(names))
    return None


def _check_accepts(factory: Callable[..., Any], kwargs: Mapping[str, Any], spec: str) -> None:
    params = accepted_options(factory)
    if params is None:
        return
    unknown = [k for k in kwargs if k not in params]
    if unknown:
        option = {"checkpoint": "--checkpoint", "device": "--device", "dtype": "--dtype"}
        named = ", ".join(option.get(k, f"--model-arg {k}=...") for k in unknown)
        accepted = ", ".join(params) or "nothing"
        raise ModelError(f"model {spec!r} does not take {named} (it accepts: {accepted})")


#: Annotations a --model-arg value is checked against (strings: annotations are often lazy).
_SIMPLE_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,),
}


def _check_types(
    factory: Callable[..., Any], model_args: Mapping[str, Any], spec: str
) -> dict[str, Any]:
    """Refuse a --model-arg whose value cannot be what the factory's annotation asks for.

    Returns the values to pass: a number given for a ``str`` option (``revision=2024``) is
    passed as the string it was typed as."""
    coerced: dict[str, Any] = {}
    target: Any = factory
    if isinstance(factory, type):  # the class's own __init__ (parents' options pass unchecked)
        target = next((vars(c)["__init__"] for c in factory.__mro__ if "__init__" in vars(c)),
                      factory)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return coerced
    for key, value in model_args.items():
        if key not in params:
            continue
        annotation = params[key].annotation
        name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        kinds = [k.strip() for k in str(name).split("|")]
        if any(kind not in _SIMPLE_TYPES and kind != "None" for kind in kinds):
            continue  # unannotated, or an annotation we do not model: the factory judges
        allowed = tuple(t for kind in kinds for t in _SIMPLE_TYPES.get(kind, ()))
        if not allowed or (value is None and "None" in kinds):
            continue
        if str in allowed and not isinstance(value, allowed) and value is not None:
            coerced[key] = str(value).lower() if isinstance(value, bool) else str(value)
            continue
        ok = isinstance(value, allowed) and not (
            isinstance(value, bool) and bool not in allowed)
        if not ok:
            raise ModelError(
                f"--model-arg {key}={value!r} is {type(value).__name__}, but model {spec!r} "
                f"takes {key}: {name}; pass a value of that type"
            )
    return coerced


#: Model options that change how vectors are computed, not what they are (the adapters'
#: DataLoader workers: same batches, same vectors, tested bit for bit). They are left out of
#: a result's fingerprint and of the embedding cache's identity, so that adding workers to a
#: finished run reuses its results and cached vectors instead of recomputing them.
EXECUTION_MODEL_ARGS = frozenset({"workers"})


def identity_model_args(model_args: Mapping[str, Any]) -> dict[str, Any]:
    """The model options that can change a vector, sorted by name."""
    return {k: v for k, v in sorted(model_args.items()) if k not in EXECUTION_MODEL_ARGS}


def parse_model_args(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict, with ints, floats, booleans and ``none`` converted."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ModelError(f"--model-arg {pair!r} is not key=value")
        out[key.strip().replace("-", "_")] = _convert(value.strip())
    return out


def _convert(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
