"""Shared fixtures: the real datasets beside the repository and a registry of installed plugins."""

import os
from pathlib import Path

import pytest
import torch

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _dataset(name: str) -> Path:
    root = SHARED_DATASETS / name
    if not (root / "trainA").is_dir():
        message = f"shared dataset folder {root} is missing; put ../shared/datasets beside the repository"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def apple2orange() -> Path:
    """Root of the real apple2orange folders (trainA, trainB, testA, testB)."""
    return _dataset("apple2orange")


@pytest.fixture(scope="session")
def horse2zebra_mini() -> Path:
    """Root of the 10-image-per-folder horse2zebra subset."""
    return _dataset("horse2zebra_mini")


@pytest.fixture(scope="session")
def registry():
    from toolkit.plugins import get_registry

    return get_registry()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
