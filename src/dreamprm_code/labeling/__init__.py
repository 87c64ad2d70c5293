"""Monte-Carlo step labels from rollouts (docs/architecture.md#step-labels-from-rollouts): ``label_solutions`` and its config.

Every step prefix of a solution is continued N times by the policy, each continuation is run
against the unit tests in the sandbox, and the pass fraction is the prefix's label. Strategies
``full`` (every prefix) and ``search`` (binary search for the first failing step) are described
in :mod:`dreamprm_code.labeling.label`.
"""

from dreamprm_code.labeling.config import STRATEGIES, LabelConfig
from dreamprm_code.labeling.label import RunStats, infer_unvisited, label_solutions, load_labels
from dreamprm_code.labeling.summary import first_failing_step, summarize

__all__ = [
    "STRATEGIES",
    "LabelConfig",
    "RunStats",
    "first_failing_step",
    "infer_unvisited",
    "label_solutions",
    "load_labels",
    "summarize",
]
