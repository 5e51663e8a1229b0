"""Shared fixtures for the CDK tests.

The ``cdk`` extra (aws-cdk-lib, cdk-nag) is part of the README's test install: these tests import it
directly and fail, not skip, where it is missing.

This directory deliberately has no ``__init__.py``: with pytest's default ``prepend`` import mode and no
``tests/__init__.py``, it would be imported as a package named ``infra`` and shadow the CDK app package
``infra/`` at the repository root.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The CDK app (`infra/`) is not part of the installed distribution; import it from the checkout, also under a
# bare `pytest` (which, unlike `python -m pytest`, does not put the working directory on sys.path).
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# jsii prints a screenful about Node.js 20's end of life on every synthesis; Debian's Node is 20.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


@pytest.fixture(scope="session")
def cdk_json() -> dict[str, Any]:
    """The repository's ``cdk.json``."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())


@pytest.fixture(scope="session")
def cdk_context(cdk_json: dict[str, Any]) -> dict[str, Any]:
    """The context ``cdk synth`` passes to the app: feature flags and settings from ``cdk.json``, with
    Lambda bundling skipped (tests/infra/test_bundling.py builds the bundle itself)."""
    return {**cdk_json.get("context", {}), "aws:cdk:bundling-stacks": []}
