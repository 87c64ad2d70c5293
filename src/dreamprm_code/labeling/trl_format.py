"""Step labels in TRL's stepwise layout, both ways, through the ``datasets`` library.

TRL's PRM datasets (``trl-lib/math_shepherd``, what ``PRMTrainer`` reads) hold one row per
solution: ``prompt`` (str), ``completions`` (the step texts, list[str]) and ``labels``
(list[bool], one per step). Ours hold one row per step prefix (:class:`StepLabel`). Export groups
a solution's labels into a row: the prompt is the problem statement, step k's text is prefix k
minus prefix k-1, and its label is ``mc_value > threshold`` (with the default 0: some rollout
from that prefix passed, Math-Shepherd's hard estimate). The extra columns ``problem_id``,
``solution_id``, ``mc_values``, ``num_steps`` (a row may stop before the solution's last step)
and ``separator`` (``""``: our steps tile the code exactly) make
the round trip exact; TRL ignores them. Import rebuilds prefixes by concatenating steps (with
the row's ``separator``, else ``separator``, after a step that does not already end with it, as
``PRMTrainer`` joins them) and takes ``mc_values`` when present, else the labels.

A directory is a ``datasets`` ``save_to_disk`` folder; a ``.jsonl``/``.json`` file is JSON lines;
anything else on import is a hub dataset name (``load_dataset``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.records import Problem, StepLabel


def labels_to_trl(
    labels: Sequence[StepLabel], problems: Mapping[str, Problem] | None = None, *, threshold: float = 0.0
) -> tuple[list[dict[str, Any]], int]:
    """Rows in TRL's layout, and how many solutions were cut short by a missing step label.

    A solution's row runs from step 0 up to the first step without a label.
    """
    by_solution: dict[str, dict[int, StepLabel]] = defaultdict(dict)
    for lab in labels:
        by_solution[lab.solution_id][lab.step_index] = lab
    rows, cut = [], 0
    for sid, steps in by_solution.items():
        run = []
        while len(run) in steps:
            run.append(steps[len(run)])
        if not run:
            cut += 1
            continue
        if len(run) < run[0].num_steps:
            cut += 1
        texts, prev = [], ""
        for lab in run:
            if not lab.prefix.startswith(prev):
                raise UserError(f"prefix of step {lab.step_index} does not extend step {lab.step_index - 1}'s",
                                field="prefix")
            texts.append(lab.prefix[len(prev):])
            prev = lab.prefix
        problem = (problems or {}).get(run[0].problem_id)
        rows.append({
            "prompt": problem.statement if problem else "",
            "completions": texts,
            "labels": [lab.mc_value > threshold for lab in run],
            "problem_id": run[0].problem_id,
            "solution_id": sid,
            "mc_values": [lab.mc_value for lab in run],
            "separator": "",
            "num_steps": run[0].num_steps,
        })
    return rows, cut


def trl_to_labels(
    rows: Sequence[Mapping[str, Any]], *, separator: str = "\n", source: str | Path = "<rows>"
) -> tuple[list[StepLabel], list[Problem]]:
    """Our step labels (and one problem per distinct prompt) from rows in TRL's layout;
    ``source`` names the rows in errors (row n is "line" n)."""
    labels: list[StepLabel] = []
    problems: dict[str, Problem] = {}
    by_prompt: dict[str, str] = {}
    for i, row in enumerate(rows):
        where: dict[str, Any] = {"path": source, "line": i + 1}
        prompt, steps, flags = row.get("prompt"), row.get("completions"), row.get("labels")
        if not isinstance(prompt, str):
            raise UserError("missing or not a string", field="prompt", **where)
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise UserError("must be a non-empty list of step strings", field="completions", **where)
        if not isinstance(flags, list) or len(flags) != len(steps):
            raise UserError(f"must be a list of {len(steps)} booleans, one per step", field="labels", **where)
        values = row.get("mc_values") or [float(bool(f)) for f in flags]
        if len(values) != len(steps) or not all(0.0 <= float(v) <= 1.0 for v in values):
            raise UserError("must be one value in [0, 1] per step", field="mc_values", **where)
        pid = row.get("problem_id") or by_prompt.get(prompt) or f"trl-{len(by_prompt)}"
        by_prompt.setdefault(prompt, pid)
        problems.setdefault(pid, Problem(id=pid, title="", statement=prompt, platform="trl", difficulty="medium", tests=[]))
        sid = row.get("solution_id") or f"{pid}#{i}"
        sep = row.get("separator", separator)
        total = int(row.get("num_steps") or len(steps))
        prefix = ""
        for k, (text, flag, value) in enumerate(zip(steps, flags, values, strict=True)):
            if k and sep and not prefix.endswith(sep):
                prefix += sep
            prefix += text
            labels.append(StepLabel(sid, pid, k, total, prefix, 0, 0, float(value), int(bool(flag))))
    return labels, list(problems.values())


def write_trl(rows: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Write rows with ``datasets``: JSON lines for a ``.jsonl``/``.json`` path, else ``save_to_disk``."""
    from datasets import Dataset

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset.from_list(list(rows))
    if out.suffix in (".jsonl", ".json"):
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
        os.close(fd)
        ds.to_json(tmp, lines=True)
        os.replace(tmp, out)
        return out
    tmp_dir = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        ds.save_to_disk(str(tmp_dir / "ds"))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp_dir / "ds", out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def read_trl(source: str | Path, *, split: str = "train") -> list[dict[str, Any]]:
    """Rows from a ``save_to_disk`` folder, a JSON lines file, or a hub dataset name."""
    import datasets

    path = Path(source)
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[split]
        elif path.is_file():
            ds = datasets.load_dataset("json", data_files=str(path), split="train")
        else:
            ds = datasets.load_dataset(str(source), split=split)
    except (FileNotFoundError, ValueError, OSError, KeyError) as exc:
        raise UserError(f"cannot read a TRL stepwise dataset: {exc}", path=path) from None
    missing = {"prompt", "completions", "labels"} - set(ds.column_names)
    if missing:
        raise UserError(f"not TRL's stepwise layout: no column {sorted(missing)[0]!r} "
                        f"(columns: {', '.join(ds.column_names)})", path=path)
    return ds.to_list()
