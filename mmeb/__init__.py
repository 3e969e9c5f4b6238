"""mmeb: evaluate universal multimodal embedding models on MMEB.

``import mmeb`` is light: it loads no model library and no data library.
"""

from mmeb.encoder import Encoder
from mmeb.errors import DataError, MMEBError, ModelError, ResultsError
from mmeb.items import Item, Side
from mmeb.tasks import TaskSpec, get_task, select_tasks

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The evaluation entry point pulls in numpy and the engine; load it on first use only.
    if name == "evaluate":
        from mmeb.runner import evaluate

        return evaluate
    raise AttributeError(f"module 'mmeb' has no attribute {name!r}")


__all__ = [
    "DataError",
    "Encoder",
    "Item",
    "MMEBError",
    "ModelError",
    "ResultsError",
    "Side",
    "TaskSpec",
    "__version__",
    "evaluate",
    "get_task",
    "select_tasks",
]
