"""The scripts under ``bench/`` as modules, for the tests that check their arithmetic and models
(``bench/`` is not a package: each is loaded from its file path, once)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def load_bench_script(name: str) -> ModuleType:
    """``bench/{name}.py``, loaded once and kept in ``sys.modules`` (dataclasses resolve their module there)."""
    module_name = f"skypacs_bench_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCH_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
