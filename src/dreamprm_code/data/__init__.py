"""Problems, candidate solutions and code extraction: what every other stage builds on.

- :func:`load_problems` maps HumanEval, MBPP, APPS, the LeetCode set, LiveCodeBench and our own
  problems JSONL to one :class:`~dreamprm_code.records.Problem`;
- :func:`load_solutions` reads our solutions JSONL, LiveCodeBench generations and the MapCoder
  pools into :class:`~dreamprm_code.records.Solution` records;
- :func:`extract_code` finds the program in a raw LLM reply;
- :func:`data_dir` / :func:`data_path` find the real data (``$DREAMPRM_DATA``, else
  ``../shared/data``) for benchmarks, experiments and tests.
"""

from dreamprm_code.data.common import data_dir, data_path
from dreamprm_code.data.extract import extract_code
from dreamprm_code.data.problems import SOURCES, load_problem_file, load_problems
from dreamprm_code.data.solutions import load_solutions, recorded_verdict

__all__ = [
    "SOURCES",
    "data_dir",
    "data_path",
    "extract_code",
    "load_problem_file",
    "load_problems",
    "load_solutions",
    "recorded_verdict",
]
