"""Shared fixtures: where the real data lives, and tiny models for fast unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dreamprm_code.data import data_dir
from dreamprm_code.distributed import pin_ray_to_loopback

# Before any test imports Ray (it reads the switch at import), and inherited by the CLIs tests start:
# every Ray cluster a test starts listens on and talks to 127.0.0.1 only.
pin_ray_to_loopback()


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
