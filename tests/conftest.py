"""Shared fixtures: where the real data lives, and tiny models for fast unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamprm_code.data import data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real problem sets and pools; tests that need them skip when a clone has none."""
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set DREAMPRM_DATA)")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two cores, often shared: one torch thread beats two fighting other jobs (up to ~10x)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
