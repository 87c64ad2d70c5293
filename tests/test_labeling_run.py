"""label_solutions end to end: a scripted policy (a real Policy object) and real sandbox runs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dreamprm_code.cof import split_steps, step_prefixes
from dreamprm_code.cof.prompts import code_from_continuation
from dreamprm_code.errors import UserError
from dreamprm_code.execution import Executor
from dreamprm_code.labeling import LabelConfig, RunStats, first_failing_step, label_solutions, load_labels
from dreamprm_code.labeling.label import rollout_seed
from dreamprm_code.labeling.rolloutlog import RolloutLog, rollouts_path
from dreamprm_code.policy import SamplingParams, truncate_at_stop
from test_labeling_support import (
    PROBLEM,
    ScriptedPolicy,
    failing_solution,
    passing_solution,
)

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def executor(tmp_path):
    return Executor(workers=2, cache_dir=tmp_path / "exec-cache")


def expected_passes(policy: ScriptedPolicy, sid: str, k: int, n: int, prefix: str, seed: int = 0):
    """Which of the first ``n`` scripted rollouts of a prefix pass (the script's own ground truth)."""
    s = rollout_seed(seed, sid, k)
    have = len([ln for ln in prefix.splitlines() if ln.startswith("def ")])
    rate = policy.good_rate.get(have, 0.0)
    prefix_ok = "x + x" not in prefix
    return [prefix_ok and random.Random((s + i) * 1009).random() < rate for i in range(n)]


def strip_run_meta(labels):
    out = []
    for lab in labels:
        d = lab.to_dict()
        d["meta"] = {k: v for k, v in d["meta"].items() if k != "reused_rounds"}
        out.append(d)
    return sorted(out, key=lambda d: (d["solution_id"], d["step_index"]))


def test_full_labels_every_prefix_with_one_call_per_prefix(tmp_path, executor):
    policy = ScriptedPolicy(good_rate={1: 0.5, 2: 0.75})
    sols = [passing_solution(0), failing_solution(1)]
    cfg = LabelConfig(rollouts=4, strategy="full")
    stats = RunStats()
    out = tmp_path / "labels.jsonl"
    labels = label_solutions(sols, [PROBLEM], policy, executor, cfg, out, show_progress=False, stats=stats)

    assert [(lab.solution_id, lab.step_index) for lab in labels] == [
        ("sq/1#0", 0),
        ("sq/1#0", 1),
        ("sq/1#0", 2),
        ("sq/1#1", 0),
        ("sq/1#1", 1),
        ("sq/1#1", 2),
    ]
    assert policy.calls == [(1, 4)] * 4  # one generate(n=N) per non-final prefix
    prefixes = {sol.id: step_prefixes(sol.code, split_steps(sol.code)) for sol in sols}
    assert sorted(policy.prefills) == sorted(p for sol in sols for p in prefixes[sol.id][:-1])
    for lab in labels:
        assert lab.prefix == prefixes[lab.solution_id][lab.step_index]
        assert lab.meta["steps_from"] == "split here"
        if lab.step_index == lab.num_steps - 1:
            assert lab.rollouts == 0 and lab.meta["source"] == "verdict"
            assert lab.mc_value == (1.0 if lab.solution_id == "sq/1#0" else 0.0)
            continue
        want = expected_passes(policy, lab.solution_id, lab.step_index, 4, lab.prefix)
        assert lab.rollouts == 4
        assert lab.passed == sum(want)
        assert lab.mc_value == sum(want) / 4
        assert lab.hard_label == int(any(want))
        assert lab.tokens > 0 and lab.meta["early_stop"] is False
    # the broken prefix (bad squares) can never be completed into a passing program
    assert labels[4].passed == 0 and labels[4].hard_label == 0
    # identical continuations ran once: as many sandbox runs as distinct programs
    sampling = SamplingParams(stop=["```"])
    distinct = {
        code_from_continuation(
            lab.prefix,
            truncate_at_stop(
                policy.continuation(lab.prefix, rollout_seed(0, lab.solution_id, lab.step_index), i),
                sampling.stop,
            )[0],
        )
        for lab in labels
        if lab.rollouts
        for i in range(4)
    }
    assert stats.programs_executed == len(distinct) < 16
    assert stats.rollouts == 16 and stats.labels_written == 6
    # the file holds exactly what was returned
    assert strip_run_meta(load_labels(out)) == strip_run_meta(labels)


def test_a_missing_verdict_is_executed_and_a_single_step_has_only_its_verdict(tmp_path, executor):
    one_step = passing_solution(5)
    one_step.code = "def solve(xs):\n    return sum(x * x for x in xs)\n"
    one_step.verdict = None
    policy = ScriptedPolicy(good_rate={1: 1.0, 2: 1.0})
    labels = label_solutions(
        [failing_solution(1, verdict=None), one_step],
        [PROBLEM],
        policy,
        executor,
        LabelConfig(rollouts=2),
        tmp_path / "l.jsonl",
        show_progress=False,
    )
    final = {lab.solution_id: lab for lab in labels if lab.step_index == lab.num_steps - 1}
    assert final["sq/1#1"].meta["verdict"] == "wrong_answer" and final["sq/1#1"].hard_label == 0
    assert final["sq/1#5"].num_steps == 1 and final["sq/1#5"].mc_value == 1.0
    assert policy.calls == [(1, 2), (1, 2)]


def _label(tmp_path, executor, sols, cfg, name, good_rate, stats=None):
    policy = ScriptedPolicy(good_rate=good_rate)
    labels = label_solutions(
        sols, [PROBLEM], policy, executor, cfg, tmp_path / name, show_progress=False, stats=stats
    )
    return labels, policy


def test_search_binary_searches_failing_and_probes_passing(tmp_path, executor):
    sols = [passing_solution(0), failing_solution(1)]
    stats = RunStats()
    cfg = LabelConfig(rollouts=4, strategy="search", search_give_up=4)
    assert cfg.rounds() == [1, 1, 2]
    labels, policy = _label(tmp_path, executor, sols, cfg, "s.jsonl", {1: 1.0, 2: 1.0}, stats)
    by = {(lab.solution_id, lab.step_index): lab for lab in labels}
    # passing solution: prefixes probed in order, each stops at its first (passing) rollout
    for k in range(2):
        lab = by[("sq/1#0", k)]
        assert (lab.rollouts, lab.passed, lab.hard_label, lab.meta["early_stop"]) == (1, 1, 1, True)
        assert lab.meta["source"] == "rollouts" and "inferred" not in lab.meta
    # failing solution: mid=1 gets all 4 rollouts in rounds 1, 1, 2 (no pass); mid=0 stops at once
    assert policy.calls == [(1, 1), (1, 1), (1, 1), (1, 1), (1, 2), (1, 1)]
    b1, b0 = by[("sq/1#1", 1)], by[("sq/1#1", 0)]
    assert (b1.rollouts, b1.passed, b1.hard_label, b1.meta["rounds"]) == (4, 0, 0, 3)
    assert (b0.rollouts, b0.passed, b0.hard_label, b0.meta["early_stop"]) == (1, 1, 1, True)
    assert first_failing_step([by[("sq/1#1", k)] for k in range(3)]) == 1
    assert stats.rollouts == 7

    full, _ = _label(tmp_path, executor, sols, LabelConfig(rollouts=4), "f.jsonl", {1: 1.0, 2: 1.0})
    assert [x.hard_label for x in full] == [x.hard_label for x in labels]
    assert sum(x.tokens for x in labels) < sum(x.tokens for x in full) / 2


def test_search_probe_finds_a_hopeless_prefix_of_a_passing_solution(tmp_path, executor):
    # the policy never completes the first prefix, although the solution shows it can be completed
    rate = {1: 0.0, 2: 1.0}
    sols = [passing_solution(0)]
    full, _ = _label(tmp_path, executor, sols, LabelConfig(rollouts=4), "f.jsonl", rate)
    assert first_failing_step(full) == 0 and [x.hard_label for x in full] == [0, 1, 1]

    probed, policy = _label(
        tmp_path, executor, sols, LabelConfig(rollouts=4, strategy="search"), "p.jsonl", rate
    )
    assert first_failing_step(probed) == 0 and [x.hard_label for x in probed] == [0, 1, 1]
    # it gives up after N/2 = 2 failed rollouts
    assert (probed[0].rollouts, probed[0].meta["rounds"], probed[0].meta["gave_up"]) == (2, 2, True)
    # after the first failing step the probe stops: prefix 1 is inferred from the passing solution
    assert probed[1].rollouts == 0 and probed[1].meta["source"] == "solution_passes"
    assert probed[1].meta["inferred"] and probed[1].mc_value == 1.0
    assert len(policy.calls) == 2

    cfg = LabelConfig(rollouts=4, strategy="search", probe_passing=False)
    skipped, policy = _label(tmp_path, executor, sols, cfg, "n.jsonl", rate)
    assert policy.calls == [] and first_failing_step(skipped) is None
    assert all(x.meta["source"] in ("solution_passes", "verdict") for x in skipped)


def test_search_give_up_labels_a_prefix_zero_after_m_failures(tmp_path, executor):
    sols = [failing_solution(1)]
    cfg = LabelConfig(rollouts=4, strategy="search", search_give_up=2)
    labels, policy = _label(tmp_path, executor, sols, cfg, "g.jsonl", {1: 1.0, 2: 1.0})
    # mid=1 (broken squares) gives up after rounds 1, 1; mid=0 passes at once
    assert policy.calls == [(1, 1), (1, 1), (1, 1)]
    assert (labels[1].rollouts, labels[1].hard_label, labels[1].meta["gave_up"]) == (2, 0, True)
    assert labels[1].meta["early_stop"] is False
    assert (labels[0].rollouts, labels[0].meta["early_stop"], labels[0].meta["gave_up"]) == (1, True, False)
    assert first_failing_step(labels) == 1


def test_search_draws_the_first_rollouts_full_draws(tmp_path, executor):
    """One seeded stream per prefix: a visited prefix sees full's first rollouts, so the labels agree."""
    rate = {1: 0.4, 2: 0.6}
    sols = [passing_solution(0), failing_solution(1), passing_solution(2), failing_solution(3)]
    full, _ = _label(tmp_path, executor, sols, LabelConfig(rollouts=4), "f.jsonl", rate)
    cfg = LabelConfig(rollouts=4, strategy="search", search_give_up=4)
    search, _ = _label(tmp_path, executor, sols, cfg, "s.jsonl", rate)
    full_log, search_log = (
        RolloutLog(rollouts_path(tmp_path / "f.jsonl")),
        RolloutLog(rollouts_path(tmp_path / "s.jsonl")),
    )
    try:
        f_by = {(x.solution_id, x.step_index): x for x in full}
        visited = [x for x in search if x.meta["source"] == "rollouts"]
        assert visited
        for lab in visited:
            texts = [
                t
                for r in range(lab.meta["rounds"])
                for t in search_log.gen[f"{lab.solution_id}@{lab.step_index}#{r}"]["texts"]
            ]
            assert texts == full_log.gen[f"{lab.solution_id}@{lab.step_index}#0"]["texts"][: len(texts)]
            assert lab.hard_label == f_by[(lab.solution_id, lab.step_index)].hard_label
    finally:
        full_log.close()
        search_log.close()


def test_concurrency_batches_prefixes_of_several_solutions_in_one_call(tmp_path, executor):
    policy = ScriptedPolicy()
    sols = [passing_solution(i) for i in range(3)]
    labels = label_solutions(
        sols,
        [PROBLEM],
        policy,
        executor,
        LabelConfig(rollouts=2, concurrency=4),
        tmp_path / "c.jsonl",
        show_progress=False,
    )
    assert len(labels) == 9
    assert (
        sum(p for p, _ in policy.calls) == 6
        and max(p for p, _ in policy.calls) <= 4
        and len(policy.calls) < 6
    )
    # the same labels as one prefix per call (seeds are per prefix, not per batch)
    serial = label_solutions(
        sols,
        [PROBLEM],
        ScriptedPolicy(),
        executor,
        LabelConfig(rollouts=2),
        tmp_path / "d.jsonl",
        show_progress=False,
    )
    assert [(x.passed, x.hard_label) for x in labels] == [(x.passed, x.hard_label) for x in serial]


def test_resume_after_a_crash_reuses_logged_rounds(tmp_path, executor):
    sols = [passing_solution(0), failing_solution(1), failing_solution(2)]
    cfg = LabelConfig(rollouts=4, strategy="search", search_round=2)
    ref = label_solutions(
        sols,
        [PROBLEM],
        ScriptedPolicy(good_rate={1: 0.3, 2: 0.5}),
        executor,
        cfg,
        tmp_path / "ref.jsonl",
        show_progress=False,
    )
    out = tmp_path / "labels.jsonl"
    crashing = ScriptedPolicy(good_rate={1: 0.3, 2: 0.5}, fail_after=3)
    with pytest.raises(RuntimeError, match="scripted crash"):
        label_solutions(sols, [PROBLEM], crashing, executor, cfg, out, show_progress=False)
    assert len(load_labels(out)) >= 1
    again = ScriptedPolicy(good_rate={1: 0.3, 2: 0.5})
    stats = RunStats()
    labels = label_solutions(sols, [PROBLEM], again, executor, cfg, out, show_progress=False, stats=stats)
    assert strip_run_meta(labels) == strip_run_meta(ref)
    assert len(again.calls) + 3 == sum(
        lab.meta["rounds"] for lab in ref if lab.meta.get("source") == "rollouts"
    ), "no logged round is sampled again"
    assert stats.labels_resumed >= 1
    # a third run has nothing left to do and loads no policy
    done = label_solutions(sols, [PROBLEM], "no-such-policy-spec", executor, cfg, out, show_progress=False)
    assert strip_run_meta(done) == strip_run_meta(ref)


def test_resume_refuses_other_settings(tmp_path, executor):
    out = tmp_path / "l.jsonl"
    label_solutions(
        [passing_solution()],
        [PROBLEM],
        ScriptedPolicy(),
        executor,
        LabelConfig(rollouts=2),
        out,
        show_progress=False,
    )
    with pytest.raises(UserError) as exc:
        label_solutions(
            [passing_solution()],
            [PROBLEM],
            ScriptedPolicy(),
            executor,
            LabelConfig(rollouts=3),
            out,
            show_progress=False,
        )
    assert exc.value.field == "rollouts" and "l.jsonl.config.json" in str(exc.value)


def test_user_errors_name_the_solution(tmp_path, executor):
    sol = passing_solution()
    sol.problem_id = "nope"
    with pytest.raises(UserError, match="no problem with id 'nope'"):
        label_solutions(
            [sol],
            [PROBLEM],
            ScriptedPolicy(),
            executor,
            LabelConfig(),
            tmp_path / "l.jsonl",
            show_progress=False,
        )
    with pytest.raises(UserError, match="appears twice"):
        label_solutions(
            [passing_solution(), passing_solution()],
            [PROBLEM],
            ScriptedPolicy(),
            executor,
            LabelConfig(),
            tmp_path / "m.jsonl",
            show_progress=False,
        )


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from test_labeling_support import PROBLEM, ScriptedPolicy, failing_solution, passing_solution
    from dreamprm_code.execution import Executor
    from dreamprm_code.labeling import LabelConfig, label_solutions

    out, cache, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sols = [passing_solution(i) if i % 2 else failing_solution(i) for i in range(6)]
    label_solutions(sols, [PROBLEM], ScriptedPolicy(delay=delay), Executor(workers=2, cache_dir=cache),
                    LabelConfig(rollouts=3, strategy="full"), out, show_progress=False)
    """
)


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR)}

    def run(out: Path, delay: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, str(script), str(out), str(tmp_path / f"cache-{out.stem}"), str(delay)], env=env
        )

    ref = tmp_path / "ref.jsonl"
    assert run(ref, 0.0).wait(timeout=120) == 0
    out = tmp_path / "killed.jsonl"
    proc = run(out, 0.4)
    deadline = time.time() + 60
    while time.time() < deadline:
        if out.exists() and out.read_text().count("\n") >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text().count("\n")
    assert 4 <= written < 18, "the kill should land mid-run"
    assert run(out, 0.0).wait(timeout=120) == 0
    assert strip_run_meta(load_labels(out)) == strip_run_meta(load_labels(ref))
    # every key once: nothing repeated after the resume
    keys = [
        json.loads(line)["solution_id"] + "@" + str(json.loads(line)["step_index"]) for line in out.open()
    ]
    assert len(keys) == len(set(keys)) == 18
    gen_keys = [json.loads(line)["key"] for line in rollouts_path(out).open() if '"gen"' in line]
    assert len(gen_keys) == len(set(gen_keys)) == 12


class _FailingOnce:
    """The real executor, except that its first batch dies (a crash between generation and execution)."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.failed = inner, False

    def run_many(self, pairs, progress: bool = True):
        if not self.failed:
            self.failed = True
            raise RuntimeError("executor crash")
        return self.inner.run_many(pairs, progress=progress)


def test_a_round_generated_before_a_crash_is_executed_not_sampled_again(tmp_path, executor):
    out = tmp_path / "l.jsonl"
    cfg = LabelConfig(rollouts=3)
    first = ScriptedPolicy()
    with pytest.raises(RuntimeError, match="executor crash"):
        label_solutions(
            [passing_solution()], [PROBLEM], first, _FailingOnce(executor), cfg, out, show_progress=False
        )
    assert first.calls == [(1, 3)]
    assert load_labels(out) == []
    again = ScriptedPolicy()
    stats = RunStats()
    labels = label_solutions(
        [passing_solution()], [PROBLEM], again, executor, cfg, out, show_progress=False, stats=stats
    )
    assert len(again.calls) == 1, "prefix 0 was read back from the rollout log; only prefix 1 is sampled"
    assert labels[0].meta["reused_rounds"] == 1 and labels[1].meta["reused_rounds"] == 0
    assert stats.rollouts == 3
