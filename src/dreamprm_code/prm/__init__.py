"""The process reward model (docs/architecture.md#one-forward-pass-scores-every-step): one forward pass scores every step of a candidate.

``build_prm`` / ``load_prm`` give a :class:`ProcessRewardModel`; ``train_prm`` trains one on
Monte-Carlo step labels (with the ``dreamprm_code.meta`` label correction); ``score_solutions``
scores candidates; ``aggregate`` turns step scores into one number per candidate.
"""

import importlib
from typing import Any

#: public name -> submodule; imported on first use so that ``import dreamprm_code.prm`` (and the
#: CLI, which imports every stage's commands) does not pay for importing torch.
_EXPORTS = {
    "load_prm": "checkpoint",
    "save_prm": "checkpoint",
    "StepBatch": "data",
    "FORMAT_VERSION": "format",
    "PromptFormat": "format",
    "ProcessRewardModel": "model",
    "build_prm": "model",
    "AGGREGATES": "score",
    "aggregate": "score",
    "score_solutions": "score",
    "TrainConfig": "config",
    "train_prm": "train",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"dreamprm_code.prm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dreamprm_code.prm' has no attribute {name!r}")


__all__ = [
    "AGGREGATES",
    "FORMAT_VERSION",
    "ProcessRewardModel",
    "PromptFormat",
    "StepBatch",
    "TrainConfig",
    "aggregate",
    "build_prm",
    "load_prm",
    "save_prm",
    "score_solutions",
    "train_prm",
]
