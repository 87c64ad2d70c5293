"""Unit tests of the labelling pieces that need neither a policy nor a sandbox."""

from __future__ import annotations

import json

import pytest

from dreamprm_code.errors import UserError
from dreamprm_code.labeling import LabelConfig, first_failing_step, infer_unvisited, summarize
from dreamprm_code.labeling.label import rollout_seed
from dreamprm_code.labeling.rolloutlog import RolloutLog
from dreamprm_code.labeling.summary import plot_mc_by_step, summary_table
from dreamprm_code.records import StepLabel


def _lab(k: int, hard: int, mc: float, num_steps: int = 5, sid: str = "p#0", **meta) -> StepLabel:
    return StepLabel(
        solution_id=sid,
        problem_id="p",
        step_index=k,
        num_steps=num_steps,
        prefix="x" * k,
        rollouts=4 if meta.get("source") != "verdict" else 0,
        passed=round(mc * 4),
        mc_value=mc,
        hard_label=hard,
        tokens=40,
        meta=meta,
    )


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(UserError) as exc:
        LabelConfig(rollouts=0)
    assert exc.value.field == "rollouts"
    with pytest.raises(UserError) as exc:
        LabelConfig(strategy="greedy")  # type: ignore[arg-type]
    assert exc.value.field == "strategy"
    with pytest.raises(UserError):
        LabelConfig(concurrency=0)


def test_rounds_full_is_n_search_doubles_from_the_first_round_up_to_give_up():
    assert LabelConfig(rollouts=8).rounds() == [8]
    # search gives up after N/2 failed rollouts by default
    assert LabelConfig(rollouts=8, strategy="search").rounds() == [1, 1, 2]
    assert LabelConfig(rollouts=4, strategy="search").rounds() == [1, 1]
    assert LabelConfig(rollouts=1, strategy="search").rounds() == [1]
    assert LabelConfig(rollouts=8, strategy="search", search_give_up=8).rounds() == [1, 1, 2, 4]
    assert LabelConfig(rollouts=4, strategy="search", search_give_up=4).rounds() == [1, 1, 2]
    assert LabelConfig(rollouts=8, strategy="search", search_round=3, search_give_up=8).rounds() == [3, 3, 2]
    assert LabelConfig(rollouts=2, strategy="search", search_round=5, search_give_up=2).rounds() == [2]
    assert LabelConfig(rollouts=8, strategy="search", search_give_up=3).rounds() == [1, 1, 1]
    assert LabelConfig(rollouts=4, search_give_up=2).rounds() == [4]
    with pytest.raises(UserError) as exc:
        LabelConfig(strategy="search", search_give_up=0)
    assert exc.value.field == "search_give_up"
    with pytest.raises(UserError) as exc:
        LabelConfig(strategy="search", search_round=0)
    assert exc.value.field == "search_round"


def test_fingerprint_ignores_how_work_is_spread_not_what_is_sampled():
    a = LabelConfig(rollouts=4, concurrency=1)
    assert a.fingerprint() == LabelConfig(rollouts=4, concurrency=8, ray="auto").fingerprint()
    assert a.fingerprint() != LabelConfig(rollouts=4, temperature=0.2).fingerprint()
    # settings of search only do not change what full samples
    assert (
        a.fingerprint()
        == LabelConfig(rollouts=4, search_round=2, probe_passing=False, search_give_up=1).fingerprint()
    )
    s = LabelConfig(rollouts=4, strategy="search")
    assert s.fingerprint() != LabelConfig(rollouts=4, strategy="search", probe_passing=False).fingerprint()
    assert s.fingerprint() != LabelConfig(rollouts=4, strategy="search", search_round=2).fingerprint()
    assert s.fingerprint() == LabelConfig(rollouts=4, strategy="search", search_give_up=2).fingerprint()
    assert s.fingerprint() != LabelConfig(rollouts=4, strategy="search", search_give_up=3).fingerprint()


def test_rollout_seed_is_stable_distinct_per_prefix_and_one_stream_per_prefix():
    assert rollout_seed(0, "a#0", 1) == rollout_seed(0, "a#0", 1)
    streams = {rollout_seed(0, sid, k) for sid in ("a#0", "a#1") for k in range(5)}
    assert len(streams) == 10
    assert rollout_seed(1, "a#0", 1) != rollout_seed(0, "a#0", 1)
    # rollout j of a prefix is sample 0 of stream + j: a round starting at rollout 3 continues it
    assert rollout_seed(0, "a#0", 1, 3) == rollout_seed(0, "a#0", 1) + 3


def test_infer_unvisited_zero_after_first_fail_interpolates_before():
    visited = {1: _lab(1, 1, 0.5), 2: _lab(2, 0, 0.0), 4: _lab(4, 0, 0.0, source="verdict")}
    out = infer_unvisited(5, visited, first_fail=2)
    assert out == {0: (1, 0.5), 3: (0, 0.0)}


def test_infer_unvisited_linear_between_anchors_and_passing_solution_is_one():
    visited = {0: _lab(0, 1, 0.25), 4: _lab(4, 1, 1.0, source="verdict")}
    out = infer_unvisited(5, visited, first_fail=5)
    assert out[1] == (1, pytest.approx(0.4375))
    assert out[2] == (1, pytest.approx(0.625))
    assert out[3] == (1, pytest.approx(0.8125))
    assert infer_unvisited(3, {2: _lab(2, 1, 1.0, num_steps=3)}, 3) == {0: (1, 1.0), 1: (1, 1.0)}


def test_infer_unvisited_on_a_passing_solution_is_one_after_a_probed_zero():
    # passing solution probed in order: prefix 0 solvable (0.5), prefix 1 hopeless, 2-3 unvisited
    visited = {0: _lab(0, 1, 0.5), 1: _lab(1, 0, 0.0), 4: _lab(4, 1, 1.0, source="verdict")}
    out = infer_unvisited(5, visited, first_fail=1, zeros_after=False)
    assert out[2] == (1, pytest.approx(0.5 + 0.5 * 2 / 4))
    assert out[3] == (1, pytest.approx(0.5 + 0.5 * 3 / 4))
    assert set(out) == {2, 3}


def test_first_failing_step():
    assert first_failing_step([_lab(0, 1, 1), _lab(1, 0, 0), _lab(2, 1, 1)]) == 1
    assert first_failing_step([_lab(0, 1, 1)]) is None


def test_summary_counts_costs_and_by_step(tmp_path):
    labels = [
        _lab(0, 1, 0.75, num_steps=3, source="rollouts"),
        _lab(1, 0, 0.0, num_steps=3, source="rollouts"),
        _lab(2, 0, 0.0, num_steps=3, source="verdict"),
        _lab(0, 1, 1.0, num_steps=2, sid="q#1", source="monotone", inferred=True),
        _lab(1, 1, 1.0, num_steps=2, sid="q#1", source="verdict"),
    ]
    for lab in labels:
        if lab.meta["source"] != "rollouts":
            lab.rollouts, lab.passed, lab.tokens = 0, 0, 0
    s = summarize(labels)
    assert s["labels"] == 5 and s["solutions"] == 2
    assert s["hard_labels"] == {"0": 2, "1": 3}
    assert s["mc_value_histogram"]["counts"][0] == 2 and s["mc_value_histogram"]["counts"][-1] == 2
    assert s["rollouts"] == 8 and s["tokens"] == 80
    assert s["rollouts_per_measured_label"] == 4.0
    assert s["by_source"]["monotone"]["labels"] == 1
    assert s["by_hard_label"]["0"] == {"labels": 2, "rollouts": 4, "tokens": 40}
    step0 = s["by_step"][0]
    assert step0["labels"] == 2 and step0["hard_pass_rate"] == 1.0 and step0["rollout_pass_rate"] == 0.75
    assert s["first_failing_step"] == {"p#0": 1, "q#1": None}
    json.dumps(s)
    assert summary_table(s).row_count == 3
    png = plot_mc_by_step(labels, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rollout_log_survives_a_torn_tail(tmp_path):
    path = tmp_path / "r.jsonl"
    log = RolloutLog(path)
    log.add_gen(
        "a#0@0#0", seed=1, texts=["x", "y"], completion_tokens=[1, 2], prompt_tokens=9, finish=["stop"] * 2
    )
    log.add_exec("a#0@0#0", verdicts=["pass", "wrong_answer"], tests_passed=[3, 1])
    log.close()
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"type": "gen", "key": "a#0@1#0", "te')  # a kill mid-write
    again = RolloutLog(path)
    assert set(again.gen) == {"a#0@0#0"} and again.exec["a#0@0#0"]["verdicts"][0] == "pass"
    again.close()
