from __future__ import annotations

import subprocess
import sys


def test_import_mmeb_loads_no_heavy_library():
    code = ("import sys, mmeb, mmeb.cli, mmeb.registry, mmeb.tasks; "
            "heavy = ['torch', 'transformers', 'open_clip', 'pyarrow', 'pandas', 'PIL', "
            "'datasets', 'huggingface_hub', 'numpy']; "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_evaluate_is_reachable_from_the_top_level():
    import mmeb
    from mmeb.runner import evaluate

    assert mmeb.evaluate is evaluate
