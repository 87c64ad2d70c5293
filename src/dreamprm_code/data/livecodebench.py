"""LiveCodeBench ``code_generation_lite``: local files in its layout, or the hub dataset.

Record layout (LiveCodeBench's ``CodeGenerationProblem``): ``question_id``, ``question_title``,
``question_content``, ``platform``, ``contest_date`` (ISO), ``starter_code``, ``difficulty``,
``public_test_cases`` (JSON string of ``[{input, output, testtype}]``), ``private_test_cases``
(the same JSON, or base64 of zlib of a pickled JSON string), ``metadata`` (JSON, ``func_name``).
Functional tests hold one JSON value per argument, one per line, and the expected value as JSON,
exactly as LiveCodeBench's grader reads them.

The private tests are unpickled with an unpickler that refuses every global, so a crafted
file can only ever produce plain strings, bytes, lists and dicts, never run code.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import json
import pickle
import re
import zlib
from pathlib import Path
from typing import Any

from dreamprm_code.errors import UserError
from dreamprm_code.io import is_json_list, iter_jsonl, read_json_list, require
from dreamprm_code.records import Problem, TestCase

HUB_REPO = "livecodebench/code_generation_lite"
HUB_BASE = f"hf://datasets/{HUB_REPO}"
FILES = ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"]
DIFFICULTIES = ("easy", "medium", "hard")
#: ``contest_date`` written for a problem without one (HumanEval, MBPP, APPS...) in the LCB layout:
#: LiveCodeBench's ``compute_scores`` parses every record's date with ``datetime.fromisoformat``,
#: and the epoch sorts before any contest, so a ``--start_date`` window leaves these problems out.
PLACEHOLDER_DATE = "1970-01-01T00:00:00"
#: the fields that tell a LiveCodeBench problem record from our own problems JSONL
LCB_FIELDS = ("question_id", "question_content")


def contest_date(problem: Problem) -> str:
    """The problem's contest date as LiveCodeBench writes it (full ISO, ``2023-08-21T00:00:00``)."""
    full = problem.meta.get("contest_date") if isinstance(problem.meta, dict) else None
    if isinstance(full, str) and full:
        return dt.datetime.fromisoformat(full).isoformat()
    if problem.date:
        return dt.datetime.fromisoformat(problem.date).isoformat()
    return PLACEHOLDER_DATE


def is_lcb_file(path: Path) -> bool:
    """Whether a problems file is in LiveCodeBench's layout (its first record has :data:`LCB_FIELDS`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            listed = fh.read(1024).lstrip().startswith("[")
        first = _local_records(path)[0] if listed else next(iter_jsonl(path), None)
    except (OSError, UnicodeDecodeError, UserError, IndexError):
        return False
    return first is not None and isinstance(first[1], dict) and all(k in first[1] for k in LCB_FIELDS)


def release_files(release: str) -> list[str]:
    """The hub files of a version tag, as LiveCodeBench's dataset script maps them.

    ``release_vN``: the cumulative release (``test.jsonl`` .. ``testN.jsonl``);
    ``release_latest``: all of them; ``vN``: only the problems new in version N;
    ``vA_vB``: versions A to B.
    """
    if release == "release_latest":
        return list(FILES)
    m = re.fullmatch(r"release_v(\d+)", release)
    if m and 1 <= int(m.group(1)) <= len(FILES):
        return FILES[: int(m.group(1))]
    m = re.fullmatch(r"v(\d+)(?:_v(\d+))?", release)
    if m:
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if 1 <= a <= b <= len(FILES):
            return FILES[a - 1 : b]
    raise UserError(
        f"unknown LiveCodeBench release {release!r}: expected release_v1..release_v{len(FILES)}, "
        f"release_latest, vN or vA_vB"
    )


class _PlainUnpickler(pickle.Unpickler):
    """Admits only what pickle builds without globals (str, bytes, list, dict...)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain data is allowed")


def _check_plain(value: Any) -> None:
    if isinstance(value, (str, bytes)):
        return
    if isinstance(value, list):
        for v in value:
            _check_plain(v)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k)
            _check_plain(v)
        return
    raise pickle.UnpicklingError(f"unexpected {type(value).__name__} in the private tests")


def decode_private_tests(blob: Any) -> list[dict]:
    """``private_test_cases`` as a list: plain JSON, or base64(zlib(pickle(JSON string)))."""
    if isinstance(blob, list):
        return blob
    if not isinstance(blob, str):
        raise UserError("expected a JSON or base64 string", field="private_test_cases")
    try:
        value = json.loads(blob)
    except json.JSONDecodeError:
        try:
            raw = zlib.decompress(base64.b64decode(blob.encode("ascii"), validate=False))
            value = _PlainUnpickler(io.BytesIO(raw)).load()
            _check_plain(value)
            if isinstance(value, (str, bytes)):
                value = json.loads(value)
        except (
            binascii.Error,
            zlib.error,
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            UnicodeError,
        ) as exc:
            raise UserError(
                f"neither JSON nor base64/zlib/pickle of JSON ({exc})", field="private_test_cases"
            ) from None
    if not isinstance(value, list):
        raise UserError("expected a list of tests", field="private_test_cases")
    return value


def _json_field(rec: dict, key: str, default: Any) -> Any:
    value = rec.get(key, default)
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else default
        except json.JSONDecodeError as exc:
            raise UserError(f"not valid JSON ({exc.msg})", field=key) from None
    return value


def _tests(items: Any, *, public: bool, field: str) -> list[TestCase]:
    if not isinstance(items, list):
        raise UserError("expected a list of tests", field=field)
    out = []
    for i, t in enumerate(items):
        if (
            not isinstance(t, dict)
            or not isinstance(t.get("input"), str)
            or not isinstance(t.get("output"), str)
        ):
            raise UserError("each test needs 'input' and 'output' strings", field=f"{field}[{i}]")
        kind = t.get("testtype", "stdin")
        if kind == "stdin":
            out.append(TestCase(kind="stdin", input=t["input"], output=t["output"], public=public))
        elif kind == "functional":
            try:
                args = [json.loads(line) for line in t["input"].split("\n")]
                expected = json.loads(t["output"])
            except json.JSONDecodeError as exc:
                raise UserError(f"functional test is not JSON ({exc.msg})", field=f"{field}[{i}]") from None
            out.append(TestCase(kind="functional", input=args, output=expected, public=public))
        else:
            raise UserError(f"unknown testtype {kind!r}", field=f"{field}[{i}].testtype")
    return out


def _contest_date(rec: dict) -> dt.datetime:
    value = require(rec, "contest_date", (str, dt.datetime))
    if isinstance(value, dt.datetime):  # pyarrow's JSON reader may already have parsed it
        return value.replace(tzinfo=None)
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise UserError(f"not an ISO date: {value!r}", field="contest_date") from None


def parse_record(rec: dict) -> Problem:
    """One LiveCodeBench record -> :class:`Problem` (id = ``question_id``)."""
    qid = str(require(rec, "question_id", (str, int)))
    difficulty = require(rec, "difficulty", str).lower()
    if difficulty not in DIFFICULTIES:
        raise UserError(f"expected one of {DIFFICULTIES}", field="difficulty")
    date = _contest_date(rec)
    metadata = _json_field(rec, "metadata", {})
    if not isinstance(metadata, dict):
        raise UserError("expected a JSON object", field="metadata")
    tests = _tests(_json_field(rec, "public_test_cases", []), public=True, field="public_test_cases")
    tests += _tests(
        decode_private_tests(rec.get("private_test_cases", "[]")), public=False, field="private_test_cases"
    )
    if not tests:
        raise UserError("no tests", field="private_test_cases")
    functional = any(t.kind == "functional" for t in tests)
    entry = metadata.get("func_name")
    if functional and not isinstance(entry, str):
        raise UserError("functional tests need metadata.func_name", field="metadata")
    return Problem(
        id=qid,
        title=str(rec.get("question_title") or qid),
        statement=require(rec, "question_content", str),
        platform=str(require(rec, "platform", str)).lower(),
        difficulty=difficulty,
        tests=tests,
        starter_code=rec.get("starter_code") or "",
        entry_point=entry if functional else None,
        date=date.date().isoformat(),
        source="livecodebench",
        meta={"contest_id": rec.get("contest_id"), "contest_date": date.isoformat()},
    )


def _parse_date(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%d")
    except ValueError:
        raise UserError(f"{name} must be YYYY-MM-DD, got {value!r}") from None


def _local_records(path: Path) -> list[tuple[int | None, dict]]:
    if is_json_list(path):
        return [(None, r) for r in read_json_list(path)]
    return list(iter_jsonl(path))


def hub_records(release: str, base: str = HUB_BASE, cache_dir: str | None = None) -> list[dict]:
    """The release's rows through ``datasets`` (JSON builder over ``hf://`` or local files).

    ``datasets`` no longer runs dataset scripts, so the version tag is mapped to files here the
    way LiveCodeBench's ``code_generation_lite.py`` does, and the files are read as JSON lines.
    """
    files = [f"{base.rstrip('/')}/{name}" for name in release_files(release)]
    remote = base.startswith(("hf://", "http://", "https://"))
    if not remote:
        missing = [f for f in files if not Path(f).exists()]
        if missing:
            raise UserError(f"release {release} needs {', '.join(Path(m).name for m in missing)}", path=base)
    import datasets  # slow to import; only the hub path needs it

    try:
        ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache_dir)
    except Exception as exc:  # network, auth, offline mode, schema: all end the same way for a user
        if remote:
            raise UserError(
                f"could not load {HUB_REPO} from the Hugging Face hub ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); the hub may be unreachable from "
                "here: download the release's test*.jsonl files and pass 'livecodebench:FOLDER' "
                "(or one JSONL/JSON file as 'livecodebench:FILE')"
            ) from None
        raise UserError(
            f"could not read the LiveCodeBench files ({type(exc).__name__}: {exc})", path=base
        ) from None
    return [dict(row) for row in ds]


def load_livecodebench(
    path: str | Path | None = None,
    *,
    release: str = "release_latest",
    start_date: str | None = None,
    end_date: str | None = None,
    hub_base: str | None = None,
    platform: str | None = None,
    cache_dir: str | None = None,
) -> list[Problem]:
    """LiveCodeBench problems in a contest-date window (inclusive, like LiveCodeBench).

    ``path``: one JSONL/JSON file in LiveCodeBench's layout, or a folder holding the hub's
    ``test*.jsonl`` (then ``release`` picks the files). Without it, the hub dataset
    (``hub_base`` overrides where the files are fetched from). ``platform`` keeps one platform.
    """
    start, end = _parse_date(start_date, "start_date"), _parse_date(end_date, "end_date")
    records: list[tuple[Path | str, int | None, dict]]
    if path is not None and Path(path).is_file():
        records = [(path, line, rec) for line, rec in _local_records(Path(path))]
    else:
        if path is not None and not Path(path).is_dir():
            raise UserError("LiveCodeBench file or folder not found", path=path)
        base = str(path) if path is not None else (hub_base or HUB_BASE)
        records = [
            (f"{base} (row {i})", None, rec) for i, rec in enumerate(hub_records(release, base, cache_dir), 1)
        ]
    problems = []
    for where, line, rec in records:
        try:
            problem = parse_record(rec)
        except UserError as exc:
            raise UserError(exc.message, path=where, line=line, field=exc.field) from None
        when = dt.datetime.fromisoformat(problem.meta["contest_date"])
        if (start and when < start) or (end and when > end):
            continue
        if platform and problem.platform != platform.lower():
            continue
        problems.append(problem)
    return problems
