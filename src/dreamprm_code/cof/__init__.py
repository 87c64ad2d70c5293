"""Chain-of-functions (CoF): program steps from ``ast`` (docs/architecture.md#steps-come-from-the-syntax-tree) and the prompts that ask for them.

``split_steps`` / ``step_prefixes`` / ``next_step_end`` are the step rules every stage shares;
``build_prompt`` / ``continuation_prompt`` / ``code_from_continuation`` turn problems and code
prefixes into policy prompts (docs/architecture.md#step-labels-from-rollouts).
"""

from __future__ import annotations

from dreamprm_code.cof.prompts import (
    FENCE_OPEN,
    build_prompt,
    code_from_continuation,
    code_stops,
    continuation_prompt,
    load_templates,
    problem_kind,
    trailer_stops,
)
from dreamprm_code.cof.steps import (
    BLOCK,
    FUNCTION,
    MAX_BLOCKS,
    METHOD,
    MODE_BLOCKS,
    MODE_FUNCTIONS,
    MODE_MODULE,
    MODULE,
    STEP_KINDS,
    SplitInfo,
    check_steps,
    complete_head,
    is_cof,
    next_step_end,
    solution_steps,
    split_info,
    split_steps,
    step_prefixes,
)

__all__ = [
    "BLOCK",
    "FENCE_OPEN",
    "FUNCTION",
    "MAX_BLOCKS",
    "METHOD",
    "MODE_BLOCKS",
    "MODE_FUNCTIONS",
    "MODE_MODULE",
    "MODULE",
    "STEP_KINDS",
    "SplitInfo",
    "build_prompt",
    "check_steps",
    "code_from_continuation",
    "code_stops",
    "complete_head",
    "continuation_prompt",
    "is_cof",
    "load_templates",
    "next_step_end",
    "problem_kind",
    "split_info",
    "solution_steps",
    "split_steps",
    "step_prefixes",
    "trailer_stops",
]
