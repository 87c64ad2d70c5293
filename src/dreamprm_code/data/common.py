"""Pieces every loader shares: where the data lives, and JSON-faithful literal parsing."""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError

#: The repository root (``src/dreamprm_code/data/common.py`` -> four levels up).
REPO_ROOT = Path(__file__).resolve().parents[3]


def data_dir() -> Path:
    """The folder holding ``mbpp/``, ``apps-150/``, ``leetcode-180/``, ``pools/``.

    ``$DREAMPRM_DATA`` wins; then ``../shared/data`` relative to the working directory (the
    layout every developer checkout has); then the repository's sibling ``shared/data`` (so it
    also works when run from elsewhere).
    """
    env = os.environ.get("DREAMPRM_DATA")
    if env:
        return Path(env)
    for cand in (Path.cwd().parent / "shared" / "data", REPO_ROOT.parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return Path("../shared/data")


def data_path(*parts: str, root: str | Path | None = None) -> Path:
    """``parts`` inside the data folder (``root``, else :func:`data_dir`), which must exist.

    Benchmarks, experiments and tests find the data this one way; a missing folder stops with
    one line that says where it looked and how to point at the data.
    """
    path = Path(root if root is not None else data_dir()).joinpath(*parts)
    if not path.exists():
        raise UserError(
            "data not found; set DREAMPRM_DATA to the folder holding mbpp/, apps-150/, "
            "leetcode-180/ and pools/ (see the README there)",
            path=path,
        )
    return path


def default_path(source: str, relative: str) -> Path:
    """The default file of ``source``, or a :class:`UserError` saying how to point at it."""
    path = data_dir() / relative
    if not path.exists():
        raise UserError(
            f"default file for '{source}' not found; set DREAMPRM_DATA to the data folder "
            f"or pass '{source}:PATH'",
            path=path,
        )
    return path


class _Missing:
    """Marks a text that is not a Python literal."""


NOT_LITERAL = _Missing()


def literal(text: str | ast.AST) -> Any:
    """``ast.literal_eval`` of ``text`` (or of a parsed node), or :data:`NOT_LITERAL`."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return NOT_LITERAL


def json_faithful(value: Any) -> bool:
    """True when ``value`` survives a JSON round trip with the same types.

    A tuple would come back as a list, a set not at all, an int-keyed dict with string keys:
    such values would let a wrong answer compare equal (or a right one fail), so tests holding
    them stay as the original Python ``assert`` instead of becoming ``functional`` tests.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(json_faithful(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_faithful(v) for k, v in value.items())
    return False


def split_source(source: str) -> tuple[str, str | None]:
    """``"mbpp:/x/y.jsonl"`` -> ``("mbpp", "/x/y.jsonl")``; a plain name -> ``(name, None)``."""
    name, sep, rest = source.partition(":")
    return name, (rest if sep and rest else None)
