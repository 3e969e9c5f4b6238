"""The training config: YAML + flags, presets, one-line errors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from vlm2vec_fixtures import REPO, run_python

from vlm2vec.config import FIELDS, PRESETS, ConfigError, TrainConfig, build_config, to_yaml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_papers_recipe() -> None:
    c = TrainConfig()
    assert (c.learning_rate, c.warmup_steps, c.max_steps) == (2e-5, 200, 2000)
    assert (c.temperature, c.global_batch_size, c.max_per_subset) == (0.02, 1024, 50000)
    assert (c.split, c.subset_sampling, c.symmetric, c.hard_negatives) == (
        "original", "first", False, False)


def test_flags_override_the_file_and_parse_by_type(tmp_path: Path) -> None:
    path = write(tmp_path, "max_steps: 10\nsubsets: [A, B]\ntemperature: 0.05\n")
    c = build_config(path, ["--max_steps", "3", "--subsets", "C,D", "--model_args",
                            "{dim: 8}", "--resume", "--learning-rate=1e-3",
                            "--image_dir", "none"])
    assert c.max_steps == 3
    assert c.subsets == ["C", "D"]
    assert c.model_args == {"dim": 8}
    assert c.resume is True
    assert c.learning_rate == 1e-3
    assert c.temperature == 0.05
    assert c.image_dir is None


def test_presets_sit_below_the_file_and_the_flags(tmp_path: Path) -> None:
    c = build_config(None, ["--preset", "dora-code"])
    assert (c.use_dora, c.lora_alpha, c.lora_dropout, c.lora_r) == (True, 64, 0.1, 8)
    c = build_config(write(tmp_path, "preset: dora-code\nlora_dropout: 0.0\n"),
                     ["--lora_r", "4"])
    assert (c.use_dora, c.lora_dropout, c.lora_r) == (True, 0.0, 4)
    assert build_config(None, ["--preset", "lora-paper"]).lora_r == PRESETS["lora-paper"]["lora_r"]


@pytest.mark.parametrize("source", ["yaml", "flag"])
def test_a_typo_is_one_line_naming_the_key_and_the_closest(tmp_path: Path, source: str) -> None:
    args = ((write(tmp_path, "temprature: 0.1\n"),) if source == "yaml"
            else (None, ["--gc_chunk", "4"]))
    with pytest.raises(ConfigError) as info:
        build_config(*args)
    message = str(info.value)
    assert "\n" not in message
    if source == "yaml":
        assert "'temprature'" in message
        assert "'temperature'" in message
        assert "c.yaml" in message
    else:
        assert "'gc_chunk'" in message
        assert "'gc_chunk_size'" in message


@pytest.mark.parametrize(("flag", "value", "words"), [
    ("max_steps", "ten", "max_steps must be an integer"),
    ("subset_sampling", "randm", "subset_sampling must be one of first, random"),
    ("symmetric", "maybe", "symmetric must be true or false"),
    ("global_batch_size", "0", "global_batch_size must be > 0"),
    ("subset_weights", "{A: -1}", "subset_weights must map subsets to numbers >= 0"),
])
def test_bad_values_name_the_key(flag: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_config(None, [f"--{flag}", value])


def test_the_saved_config_reads_back_to_the_same(tmp_path: Path) -> None:
    c = build_config(None, ["--preset", "dora-code", "--subset_weights", "{A: 2, B: 1}",
                            "--subsets", "A,B"])
    again = build_config(write(tmp_path, to_yaml(c)))
    assert dataclasses.asdict(again) == dataclasses.asdict(c)


def test_every_key_is_documented() -> None:
    doc = (REPO / "docs" / "training.md").read_text()
    missing = [k for k in FIELDS if f"`{k}`" not in doc]
    assert not missing


def test_cli_reports_a_typo_in_one_line_before_loading_torch(tmp_path: Path) -> None:
    config = write(tmp_path, "max_steps: 2\n")
    code = ("import sys\nfrom vlm2vec.cli import main\n"
            "try:\n    main(['train', '--config', sys.argv[1], '--temprature', '0.1'])\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    result = run_python(["-c", code, str(config)], timeout=60)
    assert result.stdout.strip() == "exit 1 False"
    assert result.stderr.strip() == ("error: command line: unknown config key 'temprature'; "
                                     "did you mean 'temperature'?")
