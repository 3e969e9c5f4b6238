"""The training configuration: one typed record, read from YAML and ``--key value`` flags.

Precedence, lowest first: the defaults below, the named ``preset``, the YAML file, the flags.
Every key is both a YAML key and a flag (``--max_steps 10`` or ``--max-steps 10``; a bare
``--resume`` means true). Unknown keys and ill-typed values are one-line errors that name the
key (and the closest valid key). This module imports neither torch nor yaml at import time, so a
typo is reported before any heavy import.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmeb.errors import MMEBError


class ConfigError(MMEBError):
    """A configuration key or value is wrong."""


def _key(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # -- data -----------------------------------------------------------------------------
    data: str = _key("sample", "Training pairs: `sample` (the built-in sample suite's train "
                     "split), `hub` (TIGER-Lab/MMEB-train through `datasets`), or a local folder "
                     "in the MMEB-train layout (<DIR>/<Subset>/<split>-*.parquet).")
    subsets: list[str] = _key([], "Subsets to train on (MMEB-train config names); empty: all "
                              "subsets found (sample, local) or the 20 of the paper (hub).")
    split: str = _key("original", "MMEB-train split: `original` (the paper) or "
                      "`diverse_instruction`.")
    image_dir: str | None = _key(None, "Folder the rows' image paths are relative to; default: "
                                 "the data folder itself (local, sample) or the extracted zips "
                                 "(hub).")
    hub_revision: str | None = _key(None, "Revision of TIGER-Lab/MMEB-train (hub only); default: "
                                    "the main branch.")
    max_per_subset: int = _key(50000, "Cap on pairs per subset (the paper: 50K, 662K in total); "
                               "0 for no cap.")
    subset_sampling: str = _key("first", "How a capped subset is cut: `first` N rows (as the "
                                "original code) or a `random` sample seeded by `seed`.",
                                ("first", "random"))
    subset_weights: dict[str, float] = _key({}, "Weighted interleaving: subset -> weight (each "
                                            "batch draws subsets with these probabilities). "
                                            "Empty: one shuffle of all pairs per epoch, as the "
                                            "original (subsets in proportion to their size).")
    batch_by_subset: bool = _key(False, "Draw every global batch from one subset (chosen with "
                                 "subset_weights, else in proportion to the subsets' sizes), so "
                                 "in-batch negatives come from the same task; the original mixes "
                                 "subsets in every batch.")
    hard_negatives: bool = _key(False, "Add each row's neg_text/neg_image_path (where present) "
                                "as an extra negative target.")
    augment_shift: int = _key(0, "Move every training picture by up to this many pixels on "
                              "each axis, drawn anew each time it is used (the border repeats "
                              "the edge pixels); 0: pictures as they are (the original).")
    data_workers: int = _key(0, "Worker processes that read, augment and collate the next "
                             "steps' batches while this one trains (the same batches); 0: "
                             "in the training process.")
    check_images: str = _key("header", "How images are checked before training: `exists`, "
                             "`header` (open and parse the header) or `decode` (read every "
                             "pixel).", ("exists", "header", "decode"))
    skip_bad_rows: bool = _key(False, "Skip rows with a missing or unreadable image or an empty "
                               "text (they are always counted and listed in bad_rows.jsonl); "
                               "without it such rows stop the run before step 0.")
    # -- model ----------------------------------------------------------------------------
    model: str = _key("toy", "The embedding model: `toy` (a small pure-torch model for tests "
                      "and demos) or a VLM backbone of mmeb.models: `qwen2vl`, `qwen2vl-2b`, "
                      "`qwen2vl-7b`, `llava-next`.")
    model_args: dict[str, Any] = _key({}, "Options of the model (toy: dim, vocab, image_size; a "
                                      "VLM: its eval adapter's options, e.g. "
                                      "image_resolution).")
    checkpoint: str | None = _key(None, "Initial weights (a folder the model can load; a VLM's "
                                  "base model, a Hub id or folder); default: the model's own "
                                  "initialisation (qwen2vl-2b/-7b: Qwen2-VL-*-Instruct).")
    merge: bool = _key(False, "Save LoRA adapters merged into the weights (a full model folder) "
                       "instead of a peft adapter folder.")
    finetune: str = _key("lora", "`lora` (adapters only; DoRA with use_dora) or `full`.",
                         ("lora", "full"))
    preset: str | None = _key(None, "Named adapter settings applied below the file and the "
                              "flags: `lora-paper` (r 8, the paper) or `dora-code` (DoRA r 8, "
                              "alpha 64, dropout 0.1, the released code).",
                              ("lora-paper", "dora-code"))
    lora_r: int = _key(8, "LoRA rank.")
    lora_alpha: int = _key(16, "LoRA alpha (scale = alpha / r).")
    lora_dropout: float = _key(0.0, "Dropout on the LoRA input.")
    lora_target_modules: list[str] = _key([], "Module names that get adapters; empty: the "
                                          "model's default list.")
    use_dora: bool = _key(False, "Weight-decomposed LoRA (DoRA).")
    gradient_checkpointing: bool = _key(False, "Recompute activations in the backward pass.")
    normalize: bool = _key(True, "L2-normalise embeddings before the similarity (cosine).")
    # -- loss and batch -------------------------------------------------------------------
    temperature: float = _key(0.02, "InfoNCE temperature.")
    mask_duplicates: bool = _key(False, "Leave out of a row's softmax the in-batch candidates "
                                 "equal to its positive (same text and image), which are copies, "
                                 "not negatives; the original counts them as negatives.")
    symmetric: bool = _key(False, "Add the target->query InfoNCE term (mean of both); the "
                           "original is query->target only.")
    global_batch_size: int = _key(1024, "Pairs per optimizer step over all processes; each of N "
                                  "processes encodes global_batch_size / N.")
    gc_chunk_size: int = _key(0, "GradCache chunk (pairs per forward); 0: no GradCache, the "
                              "whole per-process batch in one forward.")
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = _key(2e-5, "Peak learning rate (AdamW).")
    weight_decay: float = _key(0.0, "AdamW weight decay.")
    adam_beta1: float = _key(0.9, "AdamW beta1.")
    adam_beta2: float = _key(0.999, "AdamW beta2.")
    adam_epsilon: float = _key(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _key(1.0, "Clip the gradient norm to this; 0: no clipping.")
    warmup_steps: int = _key(200, "Linear warm-up steps from 0 to learning_rate.")
    max_steps: int = _key(2000, "Optimizer steps; the rate decays linearly to 0 at this step.")
    precision: str = _key("auto", "`auto` (bf16 autocast on GPU, fp32 on CPU), `bf16` or "
                          "`fp32`.", ("auto", "bf16", "fp32"))
    device: str = _key("auto", "`auto` (the process's GPU if any, else CPU), `cpu` or `cuda`.",
                       ("auto", "cpu", "cuda"))
    seed: int = _key(42, "Seed of initialisation, data order and dropout.")
    # -- run ------------------------------------------------------------------------------
    output_dir: str = _key("runs/vlm2vec", "Run folder: config.yaml, metrics.jsonl, "
                           "checkpoints/, and the final model.")
    save_steps: int = _key(500, "Write a resumable checkpoint every N steps (the final model "
                           "is always written to output_dir); 0: no checkpoints.")
    keep_checkpoints: int = _key(2, "How many of the newest checkpoints to keep.")
    resume: bool = _key(False, "Continue from the newest checkpoint in output_dir (a fresh start "
                        "when there is none).")
    log_steps: int = _key(1, "Write metrics every N steps.")
    progress: bool = _key(True, "Show a progress bar.")

    @property
    def has_adapters(self) -> bool:
        return self.finetune == "lora"


#: Keys whose change does not change the numbers: allowed to differ on --resume.
RUN_ONLY_KEYS = frozenset({"resume", "progress", "save_steps", "keep_checkpoints", "log_steps",
                           "output_dir", "device", "check_images", "image_dir", "merge",
                           "data_workers"})

PRESETS: dict[str, dict[str, Any]] = {
    # The paper, section 4: LoRA rank 8 (the alpha and dropout are not stated; ours).
    "lora-paper": {"finetune": "lora", "lora_r": 8, "use_dora": False},
    # The released training code: LoraConfig(r=8, lora_alpha=64, lora_dropout=0.1,
    # use_dora=True).
    "dora-code": {"finetune": "lora", "lora_r": 8, "lora_alpha": 64, "lora_dropout": 0.1,
                  "use_dora": True},
}

FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(FIELDS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else "; `vlm2vec train --help` lists the keys"
    return ConfigError(f"{where}: unknown config key {key!r}{hint}")


def _type_of(name: str) -> Any:
    hints = typing.get_type_hints(TrainConfig)
    return hints[name]


def _coerce(name: str, value: Any, where: str) -> Any:
    """Check ``value`` against the key's type; ints pass as floats, strings parse for flags."""
    kind = _type_of(name)
    args = typing.get_args(kind)
    optional = (typing.get_origin(kind) in (typing.Union, types.UnionType)
                and type(None) in args)
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        kind = next(a for a in args if a is not type(None))
    origin = typing.get_origin(kind) or kind
    bad = ConfigError(f"{where}: {name} must be {_describe(kind, optional)}, got {value!r}")
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise bad
    if origin is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad from None
        raise bad
    if origin is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if origin is str:
        if isinstance(value, str):
            choices = FIELDS[name].metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{where}: {name} must be one of {', '.join(choices)}, "
                                  f"got {value!r}")
            return value
        raise bad
    if origin is list:
        if isinstance(value, str):  # a flag: comma-separated
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise bad
    if origin is dict:
        if isinstance(value, str):
            value = _yaml_value(value, name, where)
        if not isinstance(value, dict):
            raise bad
        if name == "subset_weights":
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                       for v in value.values()):
                raise ConfigError(f"{where}: subset_weights must map subsets to numbers >= 0")
            return {str(k): float(v) for k, v in value.items()}
        return {str(k): v for k, v in value.items()}
    raise bad  # pragma: no cover - every field type is handled above


def _describe(kind: Any, optional: bool) -> str:
    origin = typing.get_origin(kind) or kind
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             list: "a list of strings (a flag takes A,B,C)",
             dict: "a mapping (a flag takes YAML, e.g. '{a: 1}')"}
    text = names.get(origin, str(kind))
    return f"{text} or null" if optional else text


def _yaml_value(text: str, name: str, where: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: {name} is not valid YAML: {text!r}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" line {line + 1}" if line is not None else ""
        raise ConfigError(f"{path}{at}: not valid YAML; check the indentation and quoting") \
            from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def parse_flags(argv: list[str]) -> dict[str, str | bool]:
    """``--key value`` / ``--key=value`` / bare ``--flag`` (true) into raw strings."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or arg == "--":
            raise ConfigError(f"unexpected argument {arg!r}; flags look like --key value")
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if name not in FIELDS:
            raise _unknown(name, "command line")
        if eq:
            out[name] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[name] = argv[i + 1]
            i += 1
        elif _type_of(name) is bool:
            out[name] = True
        else:
            raise ConfigError(f"command line: --{name} needs a value")
        i += 1
    return out


def build_config(
    yaml_path: Path | None = None, flags: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """The effective config: defaults < preset < YAML file < flags < ``overrides``."""
    layers: list[tuple[str, dict[str, Any]]] = []
    if yaml_path is not None:
        layers.append((str(yaml_path), read_yaml(Path(yaml_path))))
    if flags:
        layers.append(("command line", dict(parse_flags(flags))))
    if overrides:
        layers.append(("overrides", dict(overrides)))
    values: dict[str, Any] = {}
    for where, layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                raise _unknown(str(key), where)
            values[key] = _coerce(key, value, where)
    preset = values.get("preset")
    merged: dict[str, Any] = dict(PRESETS[preset]) if preset else {}
    merged.update(values)
    config = TrainConfig(**merged)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Cross-key checks that a type alone cannot express."""
    positive = ("global_batch_size", "max_steps", "lora_r", "log_steps", "keep_checkpoints")
    for key in positive:
        if getattr(config, key) <= 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(config, key)}")
    for key in ("gc_chunk_size", "save_steps", "warmup_steps", "max_per_subset",
                "augment_shift", "data_workers"):
        if getattr(config, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(config, key)}")
    if config.temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {config.temperature}")
    if not 0 <= config.lora_dropout < 1:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {config.lora_dropout}")
    if config.use_dora and config.finetune != "lora":
        raise ConfigError("use_dora needs finetune: lora")


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_yaml(config: TrainConfig) -> str:
    import yaml

    return str(yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None))


def config_help() -> str:
    """One line per key: name, default and meaning (for ``vlm2vec train --help``)."""
    lines = []
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  --{name} (default {default!r})\n      {f.metadata['help']}")
    return "\n".join(lines)


def differing_keys(saved: dict[str, Any], current: TrainConfig) -> list[str]:
    """Keys that change the numbers and differ between a checkpoint's config and ``current``."""
    now = to_dict(current)
    return [k for k in now if k not in RUN_ONLY_KEYS and saved.get(k) != now[k]]
