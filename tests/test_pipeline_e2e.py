"""The whole pipeline, end to end, on this machine: a real OpenAI-compatible policy server on
127.0.0.1 that the test scripts, a tiny random PRM backbone, real sandboxed execution.

The server writes chain-of-functions solutions for six tiny functional problems; each sample is
right or wrong in a *later* function, decided by a hash of the request (seed, choice index,
problem or prefix), so every run sees the same replies whatever the order of requests. A prefill
request (a rollout) gets the rest of a canned solution that starts with the given prefix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from dreamprm_code.records import Problem
from dreamprm_code.records import TestCase as Case

pytestmark = pytest.mark.timeout(900)  # the machine is shared; each test is far quicker when idle

FENCE = "```python\n"


def _fn(name: str, args: str, doc: str, body: str) -> str:
    return f'def {name}({args}):\n    """{doc}"""\n{body}\n'


# problem id -> (entry point, statement, tests [(args, expected)], steps of the right solution,
#                index of the step that the wrong solution changes, the wrong version of that step)
SPECS: dict[str, tuple[str, str, list[tuple[list, object]], list[str], int, str]] = {
    "sq": (
        "add_squares", "Return a*a + b*b.", [([1, 2], 5), ([3, 4], 25), ([0, 5], 25)],
        [
            _fn("add_squares", "a, b", "Plan: square each number, then add.", "    return square(a) + square(b)"),
            _fn("square", "x", "The square of x.", "    return x * x"),
        ],
        1, _fn("square", "x", "The square of x.", "    return x * 2"),
    ),
    "vow": (
        "count_vowels", "Count the vowels (aeiou) in a lowercase string.", [(["hello"], 2), (["xyz"], 0), (["aia"], 3)],
        [
            _fn("count_vowels", "s", "Plan: keep the vowels, count them.", "    return count(keep_vowels(s))"),
            _fn("keep_vowels", "s", "The vowels of s, in order.", "    return [c for c in s if c in 'aeiou']"),
            _fn("count", "items", "How many items there are.", "    return len(items)"),
        ],
        2, _fn("count", "items", "How many items there are.", "    return len(items) + 1"),
    ),
    "gap": (
        "max_gap", "The largest difference between two adjacent numbers of the sorted list.",
        [([[1, 9, 3]], 6), ([[5, 5]], 0), ([[10, 1, 2, 4]], 6)],
        [
            _fn("max_gap", "nums", "Plan: sort, take adjacent differences, return the largest.",
                "    return largest(differences(sorted(nums)))"),
            _fn("differences", "xs", "Adjacent differences.", "    return [b - a for a, b in zip(xs, xs[1:])]"),
            _fn("largest", "ds", "The largest difference, 0 for none.", "    return max(ds, default=0)"),
        ],
        2, _fn("largest", "ds", "The largest difference, 0 for none.", "    return min(ds, default=0)"),
    ),
    "rev": (
        "reverse_words", "Reverse the order of the words of a sentence.",
        [(["a b c"], "c b a"), (["hi"], "hi"), (["x  y"], "y x")],
        [
            _fn("reverse_words", "s", "Plan: split into words, reverse, join.", "    return join(list(reversed(words(s))))"),
            _fn("words", "s", "The words of s.", "    return s.split()"),
            _fn("join", "ws", "Words joined by single spaces.", "    return ' '.join(ws)"),
        ],
        2, _fn("join", "ws", "Words joined by single spaces.", "    return ''.join(ws)"),
    ),
    "ev": (
        "sum_evens", "The sum of the even numbers of a list.", [([[1, 2, 3, 4]], 6), ([[5]], 0), ([[-2, 2]], 0)],
        [
            _fn("sum_evens", "nums", "Plan: keep the even numbers, add them.", "    return total(evens(nums))"),
            _fn("evens", "nums", "The even numbers.", "    return [n for n in nums if n % 2 == 0]"),
            _fn("total", "xs", "The sum.", "    return sum(xs)"),
        ],
        1, _fn("evens", "nums", "The even numbers.", "    return [n for n in nums if n % 2 == 1]"),
    ),
    "pal": (
        "is_palindrome", "Whether a string reads the same backwards, ignoring case.",
        [(["Abba"], True), (["abc"], False), ([""], True)],
        [
            _fn("is_palindrome", "s", "Plan: normalise the case, compare with the reverse.",
                "    t = lower(s)\n    return t == backwards(t)"),
            _fn("lower", "s", "s in lower case.", "    return s.lower()"),
            _fn("backwards", "s", "s reversed.", "    return s[::-1]"),
        ],
        2, _fn("backwards", "s", "s reversed.", "    return s[1:]"),
    ),
}
TRAIN_IDS = ["sq", "vow", "gap", "rev"]
EVAL_IDS = ["ev", "pal"]


def variants(pid: str) -> tuple[str, str]:
    """The right and the wrong solution of a problem."""
    _, _, _, steps, bad_at, bad = SPECS[pid]
    wrong = list(steps)
    wrong[bad_at] = bad
    return "\n\n".join(steps), "\n\n".join(wrong)


def problems() -> list[Problem]:
    out = []
    for pid, (entry, statement, tests, _, _, _) in SPECS.items():
        out.append(Problem(
            id=pid, title=entry, statement=statement, platform="test", difficulty="easy" if pid != "pal" else "medium",
            tests=[Case(kind="functional", input=args, output=exp) for args, exp in tests],
            entry_point=entry, source="e2e",
        ))
    return out


def _coin(*keys: object) -> int:
    return zlib.crc32(json.dumps(keys).encode())


class FakePolicyServer:
    """A real OpenAI-compatible chat server: canned CoF solutions and prefix continuations."""

    def __init__(self, prefill_delay: float = 0.0) -> None:
        self.prefill_delay = prefill_delay
        self.requests = {"generate": 0, "prefill": 0}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, reply = outer.reply(self.path, body)
                raw = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def reply(self, path: str, body: dict) -> tuple[int, dict]:
        if path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {path}"}}
        messages = body["messages"]
        user = next(m["content"] for m in messages if m["role"] == "user")
        pid = next((p for p, spec in SPECS.items() if f"`{spec[0]}`" in user), None)
        if pid is None:
            return 400, {"error": {"message": "unknown problem"}}
        right, wrong = variants(pid)
        n, seed = int(body.get("n", 1)), body.get("seed")
        texts = []
        if messages[-1]["role"] == "assistant":  # a rollout: continue the prefilled prefix
            with self.lock:
                self.requests["prefill"] += 1
            time.sleep(self.prefill_delay)
            prefix = messages[-1]["content"].removeprefix(FENCE)
            fits = [v for v in (right, wrong) if v.startswith(prefix)]
            if not fits:
                fits = [v for v in (right, wrong) if v.startswith(prefix.rstrip())]
                prefix = prefix.rstrip()
            for k in range(n):
                pick = fits[_coin(seed, k, prefix) % len(fits)] if fits else right
                texts.append(pick[len(prefix):] + "\n```\n")
        else:
            with self.lock:
                self.requests["generate"] += 1
            for k in range(n):
                code = right if _coin(seed, k, pid) % 3 else wrong
                texts.append(f"Here is a chain of functions.\n\n{FENCE}{code}```\n")
        stops = body.get("stop") or []
        choices = []
        for k, t in enumerate(texts):
            cut = min((t.find(s) for s in stops if s and s in t), default=-1)
            choices.append({"index": k, "message": {"role": "assistant", "content": t if cut < 0 else t[:cut]},
                            "finish_reason": "stop"})
        usage = {"prompt_tokens": sum(len(m["content"]) // 4 for m in messages),
                 "completion_tokens": sum(len(t) // 4 for t in texts)}
        return 200, {"id": "fake", "object": "chat.completion", "model": body.get("model"),
                     "choices": choices, "usage": usage}


def write_setup(root: Path, url: str, backbone: Path, run_dir: Path, **changes) -> Path:
    """The problems JSONL and a config YAML pointing at the server and the tiny backbone."""
    from dreamprm_code.io import atomic_write_jsonl

    problems_file = root / "problems.jsonl"
    if not problems_file.exists():
        atomic_write_jsonl(problems_file, [p.to_dict() for p in problems()])
    config = {
        "name": "e2e",
        "run_dir": str(run_dir),
        "train_problems": [{"source": str(problems_file), "ids": TRAIN_IDS}],
        "eval_problems": [{"source": str(problems_file), "ids": EVAL_IDS}],
        "policy": {"spec": f"openai:fake@{url}", "temperature": 0.8, "max_new_tokens": 256},
        "generate": {"n_train": 3, "n_eval": 4},
        "label": {"rollouts": 2, "strategy": "full", "max_new_tokens": 128, "concurrency": 4},
        "train": {"backbone": str(backbone), "num_train_epochs": 1, "per_device_train_batch_size": 8, "lora_r": 2, "max_length": 384,
                  "meta": {"refresh": 1}, "meta_share": 0.5},
        "evaluate": {"bootstrap": 100, "aggregations": ["min", "last"]},
        "execution": {"timeout": 3.0, "workers": 2},
    }
    for key, value in changes.items():
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    path = root / f"config-{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server():
    s = FakePolicyServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_backbone

    return save_tiny_backbone(tmp_path_factory.mktemp("backbone") / "tiny", hidden_size=32, layers=1)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, server, backbone):
    """One uninterrupted run, in-process; shared by the checks below."""
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline

    root = tmp_path_factory.mktemp("e2e")
    cfg_path = write_setup(root, server.url, backbone, root / "run")
    t0 = time.perf_counter()
    result = run_pipeline(load_config(str(cfg_path)), show_progress=False)
    return root, cfg_path, result, time.perf_counter() - t0


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


VARIANTS = ["orm", "prm", "prm-weights", "prm-labels"]
KILL_VARIANTS = ["prm", "prm-labels"]


@pytest.mark.slow
def test_whole_pipeline_outputs_are_complete_and_consistent(full_run):
    from dreamprm_code.cof import step_prefixes
    from dreamprm_code.records import Solution, Step

    root, _, result, seconds = full_run
    run = root / "run"
    assert seconds < 600  # about 20 s on an idle 2-core machine; a hang detector, not a benchmark
    assert result.skipped == [] and result.ran[0] == "problems" and result.ran[-1] == "evaluate"
    split = json.loads((run / "problems" / "split.json").read_text())
    assert sorted(split["label"] + split["meta"]) == sorted(TRAIN_IDS) and len(split["meta"]) == 2
    meta = {r["problem_id"] for r in _jsonl(run / "solutions" / "meta.jsonl")}
    val = {r["problem_id"] for r in _jsonl(run / "solutions" / "val.jsonl")}
    assert len(meta) == len(val) == 1 and meta | val == set(split["meta"])
    assert not set(EVAL_IDS) & set(TRAIN_IDS)

    train = [Solution.from_dict(r) for r in _jsonl(run / "solutions" / "train.jsonl")]
    evals = [Solution.from_dict(r) for r in _jsonl(run / "solutions" / "eval.jsonl")]
    assert sorted(s.id for s in train) == sorted(f"{p}#{i}" for p in TRAIN_IDS for i in range(3))
    assert sorted(s.id for s in evals) == sorted(f"{p}#{i}" for p in EVAL_IDS for i in range(4))
    for s in train + evals:  # verdicts match the canned variant the server sent
        right, wrong = variants(s.problem_id)
        assert s.code.strip() in (right.strip(), wrong.strip())
        assert s.verdict == ("pass" if s.code.strip() == right.strip() else "wrong_answer"), s.id
        assert s.steps and len(s.steps) == len(SPECS[s.problem_id][3])
    assert {s.verdict for s in evals} == {"pass", "wrong_answer"}

    # labels: every prefix of every solution of the labelled problems, nothing else, no duplicates
    labels = _jsonl(run / "labels" / "labels.jsonl")
    keys = [f"{r['solution_id']}@{r['step_index']}" for r in labels]
    assert len(keys) == len(set(keys))
    labelled = [s for s in train if s.problem_id in split["label"]]
    want = {f"{s.id}@{k}" for s in labelled for k in range(len(s.steps))}
    assert set(keys) == want
    by_key = {f"{r['solution_id']}@{r['step_index']}": r for r in labels}
    for s in labelled:
        prefixes = step_prefixes(s.code, [Step.from_dict(st.to_dict()) for st in s.steps])
        for k, prefix in enumerate(prefixes):
            lab = by_key[f"{s.id}@{k}"]
            assert lab["prefix"] == prefix
            if k == len(prefixes) - 1:
                assert lab["mc_value"] == (1.0 if s.passed else 0.0)
            else:
                assert lab["rollouts"] == 2 and 0.0 <= lab["mc_value"] <= 1.0
                bad_at = SPECS[s.problem_id][4]
                if k >= bad_at and not s.passed:  # the wrong function is in the prefix: no rollout can pass
                    assert lab["mc_value"] == 0.0

    eval_ids = {s.id for s in evals}
    for v in VARIANTS:
        model = run / "models" / v
        assert (model / "prm.json").exists() or any(model.glob("*.json")), v
        log = _jsonl(model / "train_log.jsonl")
        assert any("loss" in r for r in log) and any("val_steps" in r for r in log), v
        scores = _jsonl(run / "scores" / f"{v}.jsonl")
        assert {r["solution_id"] for r in scores} == eval_ids
        for r in scores:
            n_steps = len(next(s for s in evals if s.id == r["solution_id"]).steps)
            assert len(r["scores"]) == n_steps and all(0.0 <= p <= 1.0 for p in r["scores"])
    outer = [r for r in _jsonl(run / "models" / "prm-labels" / "train_log.jsonl") if "loss" in r]
    assert any(len(r) > 6 for r in outer), "the label-correction variant never ran an outer step"

    report = json.loads((run / "report" / "report.json").read_text())
    rows = {m["name"]: m for m in report["methods"]}
    for name in ["policy", "random", "majority", "oracle", *(f"{v}/min" for v in VARIANTS)]:
        assert name in rows, name
    overall = {n: m["cells"]["overall"]["value"] for n, m in rows.items()}
    assert overall["oracle"] >= overall["policy"]
    assert overall["oracle"] == 1.0  # each evaluation problem has a right candidate among 4
    html = (run / "report" / "report.html").read_text()
    assert "<html" in html.lower() and "DreamPRM" in html
    assert (run / "report" / "report.md").read_text().strip()
    assert (run / "report" / "prm-labels-label_histogram.png").stat().st_size > 1000  # the correction's plots
    assert report["settings"]["run"]["meta_problems"] == sorted(meta)
    timings = json.loads((run / "timings.json").read_text())
    assert set(timings["stages"]) >= {"problems", "label", "evaluate", *(f"train-{v}" for v in VARIANTS)}


@pytest.mark.slow
def test_second_invocation_skips_every_stage(full_run, server):
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline, stage_names

    root, cfg_path, _, _ = full_run
    before = dict(server.requests)
    report = (root / "run" / "report" / "report.json").read_bytes()
    cfg = load_config(str(cfg_path))
    t0 = time.perf_counter()
    again = run_pipeline(cfg, show_progress=False)
    assert again.ran == [] and again.skipped == stage_names(cfg)
    assert server.requests == before  # no policy call at all
    assert (root / "run" / "report" / "report.json").read_bytes() == report
    assert time.perf_counter() - t0 < 60


@pytest.mark.slow
def test_changed_evaluation_settings_rerun_only_the_evaluation(full_run, tmp_path):
    import shutil

    from dreamprm_code.errors import UserError
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline

    root, cfg_path, _, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(root / "run", copy)
    cfg = load_config(str(cfg_path), {"run_dir": str(copy), "evaluate.aggregations": ["last", "min"]})
    again = run_pipeline(cfg, show_progress=False)
    assert again.ran == ["evaluate"]
    report = json.loads((copy / "report" / "report.json").read_text())
    assert report["primary_aggregation"] == "last"
    # a changed training setting is an error that names the stage, not a silent mix
    cfg = load_config(str(cfg_path), {"run_dir": str(copy), "train.learning_rate": 0.5})
    with pytest.raises(UserError, match="train-orm"):
        run_pipeline(cfg, show_progress=False)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _cli(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dreamprm_code", "run", str(cfg), "--no-progress", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["label", "train"])
def test_kill_9_and_resume_gives_the_uninterrupted_outputs(full_run, backbone, tmp_path, kill_when):
    root, _, _, _ = full_run
    slow = FakePolicyServer(prefill_delay=0.3)  # rollouts take a while, so the kill lands mid-labelling
    try:
        run = tmp_path / "run"
        # two variants keep it short; the others train the same way and would give the same models
        cfg = write_setup(tmp_path, slow.url, backbone, run, **{"train.variants": KILL_VARIANTS})
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(_cli(cfg), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        labels = run / "labels" / "labels.jsonl"
        if kill_when == "label":
            def ready() -> bool:
                return labels.exists() and labels.stat().st_size > 0 and not (run / "stages" / "label.json").exists()
        else:
            def ready() -> bool:
                return (run / "models" / "prm").is_dir() and not (run / "stages" / "train-prm.json").exists()
        hit = _wait_for(ready, proc, 90)
        assert hit, proc.communicate()[0].decode()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (run / "stages" / "evaluate.json").exists()
        done = proc.communicate()[0].decode()
        assert "Traceback" not in done
        out = subprocess.run(_cli(cfg), env=env, capture_output=True, text=True, timeout=800)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "complete, skipped" in out.stderr  # the finished stages were not redone
    finally:
        slow.close()

    ref = root / "run"
    for rel in ["solutions/train.jsonl", "solutions/eval.jsonl", "labels/labels.jsonl"]:
        got, want = _jsonl(run / rel), _jsonl(ref / rel)
        key = "id" if rel.startswith("solutions") else "step_index"
        ids = [(r.get("solution_id", r.get("id")), r.get(key)) for r in got]
        assert len(ids) == len(set(ids)), f"duplicates in {rel}"

        def strip(r: dict) -> dict:
            r = dict(r)
            for volatile in ("result", "meta", "tokens"):
                r.pop(volatile, None)
            return r

        assert sorted(map(json.dumps, map(strip, got))) == sorted(map(json.dumps, map(strip, want))), rel
    for v in KILL_VARIANTS:
        got = {r["solution_id"]: r["scores"] for r in _jsonl(run / "scores" / f"{v}.jsonl")}
        want = {r["solution_id"]: r["scores"] for r in _jsonl(ref / "scores" / f"{v}.jsonl")}
        assert got.keys() == want.keys()
        if kill_when == "label":  # training ran whole after the resume: the same model
            for sid in want:
                assert got[sid] == pytest.approx(want[sid], abs=1e-4), (v, sid)
    def overall(path: Path) -> dict[str, float]:
        methods = json.loads((path / "report" / "report.json").read_text())["methods"]
        return {m["name"]: m["cells"]["overall"]["value"] for m in methods}

    got, want = overall(run), overall(ref)
    assert set(got) == {n for n in want if n.split("/")[0] not in set(VARIANTS) - set(KILL_VARIANTS)}
    for name in ("policy", "oracle", "majority"):
        assert got[name] == want[name]
