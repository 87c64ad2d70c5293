"""The generate stage: records, real execution, resuming after a kill, and the CLI over a real HTTP server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dreamprm_code.errors import UserError
from dreamprm_code.generate.solutions import generate_solutions, problem_seed, reply_text
from dreamprm_code.io import read_jsonl
from dreamprm_code.policy import Completion, Prompt, SamplingParams
from dreamprm_code.records import PASS, WRONG_ANSWER, Problem
from dreamprm_code.records import TestCase as Case

COF = '''Here is my plan.
```python
def add(a, b):
    """Strategy: combine the two numbers with the helper."""
    return plus(a, b)


def plus(a, b):
    """Helper: the sum."""
    return a + b
```
'''
WRONG = "```python\ndef add(a, b):\n    return a - b\n```"


def problems(k: int = 3) -> list[Problem]:
    return [
        Problem(
            id=f"p{i}",
            title=f"add {i}",
            statement="Return the sum of a and b.",
            platform="test",
            difficulty="easy",
            tests=[Case("functional", input=[1, 2], output=3), Case("functional", input=[5, i], output=5 + i)],
            entry_point="add",
        )
        for i in range(k)
    ]


class Scripted:
    """A policy whose replies are fixed: sample 0 is CoF and right, the others are wrong."""

    name = "scripted"

    def __init__(self, fail_after: int | None = None, delay: float = 0.0):
        self.calls: list[list[Prompt]] = []
        self.fail_after = fail_after
        self.delay = delay

    def generate(self, prompts, n, sampling):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append(prompts)
        time.sleep(self.delay)
        return [[Completion(COF if j == 0 else WRONG, 40, 20 + j) for j in range(n)] for _ in prompts]


@pytest.fixture(scope="module")
def executor():
    from dreamprm_code.execution import Executor, Limits

    with Executor(limits=Limits(timeout=5), workers=2) as ex:
        yield ex


def test_records_hold_prompt_reply_code_steps_tokens_and_verdicts(tmp_path, executor):
    out = tmp_path / "sol.jsonl"
    sampling = SamplingParams(temperature=0.5, max_new_tokens=64, seed=3)
    sols = generate_solutions(problems(2), Scripted(), 2, sampling, "cof", out, executor=executor, show_progress=False)
    assert [s.id for s in sols] == ["p0#0", "p0#1", "p1#0", "p1#1"]
    assert [s.verdict for s in sols] == [PASS, WRONG_ANSWER, PASS, WRONG_ANSWER]
    first = sols[0]
    assert first.code.startswith("def add(a, b):") and first.raw == COF
    assert [s.name for s in first.steps] == ["add", "plus"] and first.steps[-1].end == len(first.code)
    assert first.meta["step_mode"] == "functions" and sols[1].meta["step_mode"] != "functions"
    assert first.tokens == {"prompt": 40, "completion": 20}
    assert first.sampling["seed"] == problem_seed(3, "p0") and first.sampling["base_seed"] == 3
    assert first.sampling["temperature"] == 0.5 and first.sampling["n"] == 2
    assert first.prompt["messages"][-1]["role"] == "user" and "sum of a and b" in first.prompt["messages"][-1]["content"]
    assert first.result.passed == 2
    assert [r["id"] for r in read_jsonl(out)] == [s.id for s in sols]


def test_no_execute_limit_and_seed_per_problem(tmp_path):
    pol = Scripted()
    sols = generate_solutions(problems(3), pol, 1, SamplingParams(seed=1), "plain", tmp_path / "s.jsonl",
                              execute=False, limit=2, show_progress=False)
    assert [s.id for s in sols] == ["p0#0", "p1#0"] and all(s.verdict is None for s in sols)
    seeds = [p.seed for call in pol.calls for p in call]
    assert seeds == [problem_seed(1, "p0"), problem_seed(1, "p1")] and seeds[0] != seeds[1]


def test_resume_after_interrupt_has_no_duplicates_or_gaps(tmp_path):
    out = tmp_path / "s.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_solutions(problems(5), Scripted(fail_after=2), 2, SamplingParams(seed=0), "cof", out,
                           execute=False, batch_size=1, show_progress=False)
    assert [r["id"] for r in read_jsonl(out)] == ["p0#0", "p0#1", "p1#0", "p1#1"]
    pol = Scripted()
    sols = generate_solutions(problems(5), pol, 2, SamplingParams(seed=0), "cof", out,
                              execute=False, batch_size=1, show_progress=False)
    assert [[p.seed for p in c] for c in pol.calls] == [[problem_seed(0, f"p{i}")] for i in (2, 3, 4)]
    ids = [r["id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == 10 and [s.id for s in sols] == sorted(ids)


def test_half_written_problem_is_completed_not_duplicated(tmp_path):
    out = tmp_path / "s.jsonl"
    generate_solutions(problems(2), Scripted(), 3, SamplingParams(seed=0), "cof", out, execute=False, show_progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:25])  # p1#0 kept; p1#1 torn by a kill; p1#2 lost
    generate_solutions(problems(2), Scripted(), 3, SamplingParams(seed=0), "cof", out, execute=False, show_progress=False)
    assert [r["id"] for r in read_jsonl(out)] == ["p0#0", "p0#1", "p0#2", "p1#0", "p1#1", "p1#2"]


def test_resuming_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "s.jsonl"
    generate_solutions(problems(1), Scripted(), 1, SamplingParams(seed=0), "cof", out, execute=False, show_progress=False)
    with pytest.raises(UserError, match=r"other settings \(temperature: 0.7 -> 0.2\)") as err:
        generate_solutions(problems(1), Scripted(), 1, SamplingParams(seed=0, temperature=0.2), "cof", out,
                           execute=False, show_progress=False)
    assert err.value.line == 1 and err.value.path == str(out)


def test_reply_text_puts_back_the_prefill_or_open_fence():
    c = Completion("x = 1\n```")
    assert reply_text(Prompt([{"role": "user", "content": "q"}], prefill="```python\n"), c) == "```python\nx = 1\n```"
    assert reply_text(Prompt(text="Solve it.\n\n```python\n"), c) == "```python\nx = 1\n```"
    assert reply_text(Prompt(text="Solve it."), c) == "x = 1\n```"


def test_killed_process_resumes_without_duplicates(tmp_path):
    out = tmp_path / "s.jsonl"
    here = Path(__file__).resolve().parent
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(here)!r})
        from test_generate import Scripted, problems
        from dreamprm_code.policy import SamplingParams
        from dreamprm_code.generate.solutions import generate_solutions
        generate_solutions(problems(40), Scripted(delay=0.05), 2, SamplingParams(seed=0), "cof",
                           {str(out)!r}, execute=False, batch_size=1, show_progress=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 6):
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = out.read_text().count("\n")
    assert 6 <= before < 80
    generate_solutions(problems(40), Scripted(), 2, SamplingParams(seed=0), "cof", out, execute=False,
                       show_progress=False)
    ids = [r["id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == 80


# ------------------------------------------------------------------ CLI end to end over HTTP
class _Server:
    def __init__(self):
        self.bodies: list[dict] = []

        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                texts = [COF if k == 0 else WRONG for k in range(body["n"])]
                raw = json.dumps({
                    "choices": [{"index": k, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                                for k, t in enumerate(texts)],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 50 * len(texts)},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_cli_generate_over_http_with_execution(tmp_path):
    from typer.testing import CliRunner

    from dreamprm_code.cli import app

    probs = tmp_path / "problems.jsonl"
    probs.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in problems(2)))
    server = _Server()
    out = tmp_path / "sol.jsonl"
    args = ["generate", "--problems", str(probs), "--policy", f"openai:m@{server.url}", "--n", "2",
            "--out", str(out), "--seed", "5", "--workers", "1", "--policy-opt", "concurrency=2",
            "--lcb-out", str(tmp_path / "lcb.json")]
    try:
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        recs = read_jsonl(out)
        assert [r["verdict"] for r in recs] == [PASS, WRONG_ANSWER] * 2
        assert {b["seed"] for b in server.bodies} == {problem_seed(5, "p0"), problem_seed(5, "p1")}
        assert "50.0%" in res.output  # pass@1 in the summary table
        lcb = json.loads((tmp_path / "lcb.json").read_text())
        assert [r["question_id"] for r in lcb] == ["p0", "p1"] and lcb[0]["graded_list"] == [True, False]
        from dreamprm_code.data import load_solutions

        back = load_solutions(tmp_path / "lcb.json", problems(2))
        assert sorted(s.id for s in back) == sorted(r["id"] for r in recs)
        assert {s.id: s.code for s in back} == {r["id"]: r["code"] for r in recs}
        res = CliRunner().invoke(app, args)  # resume: nothing left to do
        assert res.exit_code == 0 and len(server.bodies) == 2 and len(read_jsonl(out)) == 4
    finally:
        server.httpd.shutdown()


def test_policy_opts_parse_as_json_values():
    from dreamprm_code.generate.commands import parse_opts

    assert parse_opts(["concurrency=32", "prefill_extras=false", "dtype=bfloat16", "api-key-env=K"]) == {
        "concurrency": 32, "prefill_extras": False, "dtype": "bfloat16", "api_key_env": "K"}
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_opts(["novalue"])


class Recording:
    """Replies with the body of `add`; records each call's prompts and sampling."""

    name = "recording"

    def __init__(self):
        self.calls: list[tuple[list[Prompt], SamplingParams]] = []

    def generate(self, prompts, n, sampling):
        self.calls.append((prompts, sampling))
        return [[Completion("    return a + b\n```\n", 40, 8) for _ in range(n)] for _ in prompts]


def test_code_prefill_gives_starter_prefill_and_stops_by_kind(tmp_path, executor):
    stdin = Problem(
        id="s0", title="echo", statement="Print the sum.", platform="test", difficulty="easy",
        tests=[Case("stdin", input="1 2\n", output="3\n")],
    )
    funcs = [
        Problem(
            id=f"f{i}", title="add", statement="Return a + b.", platform="test", difficulty="easy",
            tests=[Case("functional", input=[1, 2], output=3)], entry_point="add",
            starter_code="def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n",
        )
        for i in range(2)
    ]
    pol = Recording()
    sols = generate_solutions([funcs[0], stdin, funcs[1]], pol, 2, SamplingParams(seed=0), "cof", tmp_path / "s.jsonl",
                              executor=executor, code_prefill=True, batch_size=4, show_progress=False)
    # function problems and stdin problems never share a call: their stop lists differ
    assert [[p.messages[-1]["content"].startswith("Write the Python 3 function") for p in ps] for ps, _ in pol.calls] == [
        [True, True], [False]
    ]
    func_stops, stdin_stops = pol.calls[0][1].stop, pol.calls[1][1].stop
    assert "```" in func_stops and "\nprint(" in func_stops and stdin_stops == ["```"]
    by_id = {s.id: s for s in sols}
    assert by_id["f0#0"].code == 'def add(a, b):\n    """Return a + b."""\n    return a + b'
    assert by_id["f0#0"].passed and by_id["f1#1"].passed
    assert by_id["f0#0"].sampling["code_prefill"] is True


def test_a_reply_cut_by_the_token_limit_is_judged_on_its_complete_head(tmp_path, executor):
    class Cut:
        name = "cut"

        def generate(self, prompts, n, sampling):
            text = "```python\ndef add(a, b):\n    return a + b\n\n\ndef extra(x):\n    return (x +"
            return [[Completion(text, 30, 64, finish_reason="length") for _ in range(n)] for _ in prompts]

    sols = generate_solutions(problems(1), Cut(), 1, SamplingParams(seed=0), "cof", tmp_path / "s.jsonl",
                              executor=executor, show_progress=False)
    assert sols[0].code == "def add(a, b):\n    return a + b\n" and sols[0].passed
    assert sols[0].meta["trimmed_chars"] > 0 and "def extra" in sols[0].raw
