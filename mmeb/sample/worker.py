"""Child process of the parallel generator: ``python -m mmeb.sample.worker``.

Reads one JSON request on stdin (output folder, seed, scale, sizes, task names and where to put
the result), generates those tasks and writes their files' sha256 as JSON to the result path.
"""

from __future__ import annotations

import json
import sys

from mmeb.sample.generate import generate_task
from mmeb.sample.job import Profile


def main() -> int:
    request = json.loads(sys.stdin.read())
    profile = Profile(*request["profile"])
    digests: dict[str, str] = {}
    for name in request["tasks"]:
        digests.update(generate_task(request["out"], name, request["seed"], request["scale"],
                                      profile))
    with open(request["result"], "w", encoding="utf-8") as handle:
        json.dump(digests, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
