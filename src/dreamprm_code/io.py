"""Files: JSON lines read with positions for errors, atomic writes, append-only resumable logs.

Writes are atomic (temp file + ``os.replace``) or append-only (one ``write`` + ``flush`` +
``fsync`` per record), so a run killed at any moment leaves every finished record intact and a
torn last line at worst, which :func:`read_jsonl` skips when ``tolerate_torn_tail`` is set.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dreamprm_code.errors import UserError

T = TypeVar("T")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)``; a malformed line is a :class:`UserError` naming it.

    ``tolerate_torn_tail`` skips an unparsable *last* line (a write cut by a kill).
    """
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", path=path)
    with _open_text(path) as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if tolerate_torn_tail and i == len(lines) and not line.endswith("\n"):
                return
            raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno})", path=path, line=i) from None
        if not isinstance(rec, dict):
            raise UserError("expected a JSON object", path=path, line=i)
        yield i, rec


def is_json_list(path: str | Path) -> bool:
    """Whether the file is one JSON list (its first non-space character is ``[``) rather than JSONL."""
    with _open_text(Path(path)) as fh:
        while True:
            ch = fh.read(1)
            if not ch or not ch.isspace():
                return ch == "["


def read_json_list(path: str | Path) -> list[dict]:
    """A file holding one JSON list of objects (LiveCodeBench's exports)."""
    try:
        with _open_text(Path(path)) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg})", path=path, line=exc.lineno) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError("expected a JSON list of objects", path=path)
    return data


def read_jsonl(path: str | Path, *, tolerate_torn_tail: bool = False) -> list[dict]:
    return [rec for _, rec in iter_jsonl(path, tolerate_torn_tail=tolerate_torn_tail)]


def load_records(path: str | Path, parse: Callable[[dict], T], *, tolerate_torn_tail: bool = False) -> list[T]:
    """Parse each line with ``parse``; a missing or wrong field becomes a :class:`UserError`."""
    out = []
    for line, rec in iter_jsonl(path, tolerate_torn_tail=tolerate_torn_tail):
        try:
            out.append(parse(rec))
        except UserError as exc:
            raise UserError(exc.message, path=path, line=line, field=exc.field) from None
        except KeyError as exc:
            raise UserError("missing required field", path=path, line=line, field=str(exc.args[0])) from None
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad record: {exc}", path=path, line=line) from None
    return out


def require(rec: dict, key: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """Fetch ``rec[key]`` or raise a :class:`UserError` naming the field."""
    if key not in rec:
        raise UserError("missing required field", field=key)
    value = rec[key]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise UserError(f"expected {names}, got {type(value).__name__}", field=key)
    return value


def check_resume(
    saved: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    where: str | Path,
    ignore: Iterable[str] = (),
    keys: Iterable[str] | None = None,
    what: str = "this output",
    hint: str = "use another output, or delete it to start over",
    line: int | None = None,
) -> None:
    """Refuse to resume work made with other settings: a ``UserError`` naming the first differing key.

    ``saved`` holds the settings recorded with the work, ``now`` those of this run; ``keys``
    restricts the comparison (default: every key of either), ``ignore`` lists the settings a
    resumed run may change (how long to go on, how parallel to be).
    """
    names = list(keys) if keys is not None else [*now, *(k for k in saved if k not in now)]
    skip = set(ignore)
    for key in names:
        if key not in skip and saved.get(key) != now.get(key):
            raise UserError(
                f"{what} used other settings ({key}: {saved.get(key)!r} -> {now.get(key)!r}); {hint}",
                path=where, line=line, field=key,
            )


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never a half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class JsonlAppender:
    """An append-only JSONL log that a killed run can resume.

    On open it reads what is already there (dropping a torn last line by truncating the file
    to the last complete record), so ``done`` holds the keys of finished records and the
    caller skips them. Each ``append`` is one write, flushed and fsynced.
    """

    def __init__(self, path: str | Path, key: Callable[[dict], str] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.key = key
        self.records: list[dict] = []
        if self.path.exists():
            self._recover()
        self.done: set[str] = {key(r) for r in self.records} if key else set()
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _recover(self) -> None:
        data = self.path.read_bytes()
        good = 0
        pos = 0
        for line in data.splitlines(keepends=True):
            pos += len(line)
            if not line.endswith(b"\n"):
                break
            if line.strip():
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError("corrupt record in resumable log; not touching it", path=self.path) from None
            good = pos
        if good != len(data):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)

    def append(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)
        if self.key:
            self.done.add(self.key(record))

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
