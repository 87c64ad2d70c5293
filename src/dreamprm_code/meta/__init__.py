"""Meta-learned label correction (docs/architecture.md, "Label correction corrects labels"): labels as learnable logits, one-step unrolled."""

import importlib
from typing import Any

__all__ = ["MODES", "Correction", "CorrectionConfig", "make_correction"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI imports every stage's commands and should not pay for torch.
    if name in __all__:
        module = "config" if name in ("MODES", "CorrectionConfig") else "correction"
        return getattr(importlib.import_module(f"dreamprm_code.meta.{module}"), name)
    raise AttributeError(f"module 'dreamprm_code.meta' has no attribute {name!r}")
