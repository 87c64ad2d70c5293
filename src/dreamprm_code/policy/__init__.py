"""Policy backends behind one interface: ``load_policy(spec).generate(prompts, n, sampling)``.

The ``generate`` stage that samples candidate solutions with them is ``dreamprm_code.generate``.
"""

from __future__ import annotations

from dreamprm_code.policy.base import (
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    Policy,
    Prompt,
    SamplingParams,
    load_policy,
    truncate_at_stop,
)

__all__ = [
    "FINISH_LENGTH",
    "FINISH_STOP",
    "Completion",
    "Policy",
    "Prompt",
    "SamplingParams",
    "load_policy",
    "truncate_at_stop",
]

