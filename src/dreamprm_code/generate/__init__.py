"""The ``generate`` stage: problems -> candidate solutions, sampled with any policy backend.

``generate_solutions`` samples N candidates per problem, splits them into steps and runs them
against the tests, into a resumable JSONL; ``export_lcb`` writes LiveCodeBench's layout. The
backends themselves are ``dreamprm_code.policy``.
"""

from dreamprm_code.generate.solutions import export_lcb, generate_solutions, problem_seed

__all__ = ["export_lcb", "generate_solutions", "problem_seed"]
