"""``python tests/kill_after_step.py K --key value ...``: train, and SIGKILL the process right
after step K (no chance to clean up), as a preemption would."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from vlm2vec.config import build_config
from vlm2vec.trainer import Trainer, train


class KilledAfter(Trainer):
    kill_at = 0

    def _after_step(self, record: dict[str, Any]) -> None:
        if self.step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    KilledAfter.kill_at = int(sys.argv[1])
    import vlm2vec.trainer

    vlm2vec.trainer.Trainer = KilledAfter  # type: ignore[misc]
    train(build_config(None, sys.argv[2:]))
