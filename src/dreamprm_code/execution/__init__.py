"""Execution: run candidate programs against unit tests in an OS sandbox (docs/architecture.md#candidates-run-in-an-os-sandbox).

``run_program`` runs one program; ``Executor`` runs many on persistent sandboxed workers with a
cache; ``run_outputs`` returns each test's behaviour for majority votes. See docs/execution.md.
"""

from dreamprm_code.execution.limits import Limits
from dreamprm_code.execution.sandbox import SandboxInfo, detect_sandbox
from dreamprm_code.execution.verdicts import Executor, cache_key, run_program

__all__ = ["Executor", "Limits", "SandboxInfo", "cache_key", "detect_sandbox", "run_program"]
