"""The ``vlm2vec`` command line: ``vlm2vec train --config FILE.yaml [--key value ...]``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mmeb.errors import MMEBError

USAGE = """usage: vlm2vec train [--config FILE.yaml] [--key value ...]
       vlm2vec tiny [--out DIR] [--install] [--limit N] [--key value ...]

Contrastive training of an embedding model on MMEB-train pairs (the VLM2Vec recipe).
Every config key is also a flag; precedence: defaults < preset < FILE.yaml < flags.
Under several processes: torchrun --nproc_per_node N -m vlm2vec.cli train ...
Example: vlm2vec train --config {example} --max_steps 50
`vlm2vec tiny` rebuilds the packaged vlm2vec-tiny model from the configs in {recipe}
(stages: {stages}) into DIR (default runs/vlm2vec-tiny); --install
replaces the packaged copy; --limit N scores only the first N queries of each sample task
(a quick check).

config keys:
{keys}
"""


def example_config() -> Path:
    """The committed example: the toy model on the sample suite."""
    return Path(__file__).resolve().parent / "configs" / "sample-toy.yaml"


def _usage() -> str:
    from vlm2vec.config import config_help
    from vlm2vec.recipe import STAGES, recipe_config

    stages = ", ".join(name for _, name in STAGES)
    return USAGE.format(example=example_config(), recipe=recipe_config().parent, stages=stages,
                        keys=config_help())


def _split_config(argv: list[str]) -> tuple[Path | None, list[str]]:
    """Take ``--config FILE`` (or ``--config=FILE``) out of the flags."""
    from vlm2vec.config import ConfigError

    rest: list[str] = []
    path: Path | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a YAML file")
            path = Path(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return path, rest


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in ("train", "tiny"):
        sys.stderr.write(f"error: unknown command {command!r}; the commands are `vlm2vec "
                         "train` and `vlm2vec tiny`\n")
        sys.exit(2)
    if "-h" in rest or "--help" in rest:
        sys.stdout.write(_usage())
        sys.exit(0)
    # Under torchrun every process logs; only the first says more than errors.
    level = logging.INFO if os.environ.get("RANK", "0") == "0" else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "tiny":
            _tiny(rest)
            return
        from vlm2vec.config import build_config

        path, flags = _split_config(rest)
        config = build_config(path, flags)
        from vlm2vec.trainer import train  # torch loads only once the config is valid

        train(config)
    except MMEBError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)


def _tiny(argv: list[str]) -> None:
    """``vlm2vec tiny [--out DIR] [--install] [--key value ...]``."""
    from vlm2vec.config import ConfigError
    from vlm2vec.recipe import rebuild

    out, install, limit, flags = Path("runs/vlm2vec-tiny"), False, None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--install":
            install = True
        elif arg == "--limit":
            if i + 1 >= len(argv) or not argv[i + 1].isdigit() or int(argv[i + 1]) < 1:
                raise ConfigError("--limit needs a positive number of queries per task")
            i += 1
            limit = int(argv[i])
        elif arg == "--out" or arg.startswith("--out="):
            if arg == "--out":
                if i + 1 >= len(argv):
                    raise ConfigError("--out needs a folder")
                i += 1
                arg = argv[i]
            out = Path(arg.removeprefix("--out="))
        elif arg in ("--config", "--checkpoint", "--output_dir", "--output-dir") or \
                arg.startswith(("--config=", "--checkpoint=", "--output_dir=", "--output-dir=")):
            raise ConfigError(f"{arg.split('=')[0]} is set by the recipe; use --out DIR")
        else:
            flags.append(arg)
        i += 1
    if install and limit is not None:
        raise ConfigError("--install ships scores of every query: drop --limit")
    rebuild(out, flags, install=install, limit=limit)


if __name__ == "__main__":
    main()
