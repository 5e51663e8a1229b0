"""Shared fixtures for the CDK tests.

aws_cdk is imported lazily: these fixtures must load even where the ``cdk`` extra is not installed, in which
case each test module skips itself with ``pytest.importorskip("aws_cdk")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cdk_json() -> dict[str, Any]:
    """The repository's ``cdk.json``."""
    return json.loads((REPO_ROOT / "cdk.json").read_text())


@pytest.fixture(scope="session")
def cdk_context(cdk_json: dict[str, Any]) -> dict[str, Any]:
    """The context ``cdk synth`` passes to the app: feature flags and settings from ``cdk.json``."""
    return dict(cdk_json.get("context", {}))
