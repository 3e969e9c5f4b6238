"""Progress bars only when shown: tqdm (and the asyncio, multiprocessing and metadata modules
it loads) is imported only for a bar that will be drawn."""

from __future__ import annotations

from typing import Any


class _NoBar:
    def update(self, _n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(*, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", leave=False)
