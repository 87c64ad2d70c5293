"""evaluate(): every method on pools built in the test, with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from dreamprm_code.errors import UserError
from dreamprm_code.records import PASS, WRONG_ANSWER, Problem, Solution, StepScores
from dreamprm_code.records import TestCase as Case
from dreamprm_code.scaling.evaluate import EvalOptions, evaluate


def make_problem(pid: str, difficulty: str) -> Problem:
    return Problem(
        id=pid,
        title=pid,
        statement=f"solve {pid}",
        platform="test",
        difficulty=difficulty,  # type: ignore[arg-type]
        tests=[Case("stdin", "1\n", "1\n", public=True)],
    )


def make_pool(pid: str, labels: list[bool]) -> list[Solution]:
    return [
        Solution(pid, i, f"print({i})", verdict=PASS if ok else WRONG_ANSWER) for i, ok in enumerate(labels)
    ]


def build(seed: int = 0, n_problems: int = 30, n: int = 8):
    """Pools where a 'good' score set ranks a correct candidate first whenever one exists."""
    rng = np.random.default_rng(seed)
    problems, solutions, good, bad, behaviours = [], [], [], [], {}
    for k in range(n_problems):
        diff = ("easy", "medium", "hard")[k % 3]
        pid = f"P{k}"
        problems.append(make_problem(pid, diff))
        labels = list(rng.random(n) < {"easy": 0.7, "medium": 0.4, "hard": 0.15}[diff])
        pool = make_pool(pid, labels)
        solutions += pool
        for s, ok in zip(pool, labels, strict=True):
            good.append(StepScores(s.id, pid, [0.9, 0.8 if ok else 0.2]))
            bad.append(StepScores(s.id, pid, [0.9, 0.2 if ok else 0.8]))
            # Correct candidates agree; wrong ones each behave differently.
            behaviours[s.id] = "right" if ok else f"wrong{s.sample_index}"
    return problems, solutions, {"good": good, "bad": bad}, behaviours


def test_known_answers():
    problems, solutions, sets, beh = build()
    rep = evaluate(problems, solutions, sets, EvalOptions(aggregations=("min", "last"), resamples=300), behaviours=beh)
    policy = rep.method("policy").cells["overall"].value
    oracle = rep.method("oracle").cells["overall"].value
    correct = {p.id: [s.passed for s in solutions if s.problem_id == p.id] for p in problems}
    assert policy == pytest.approx(np.mean([np.mean(v) for v in correct.values()]))
    assert rep.method("random").cells["overall"].value == pytest.approx(policy)
    assert oracle == pytest.approx(np.mean([any(v) for v in correct.values()]))
    # A perfect scorer reaches the oracle; an inverted one picks a wrong candidate when one exists.
    assert rep.method("good/min").cells["overall"].value == pytest.approx(oracle)
    assert rep.method("good/last").cells["overall"].value == pytest.approx(oracle)
    assert rep.method("bad/last").cells["overall"].value == pytest.approx(
        np.mean([all(v) for v in correct.values()])
    )
    # Majority: correct candidates share one behaviour, so any problem with >= 2 correct is solved.
    maj = rep.method("majority").per_problem
    for pid, v in correct.items():
        if sum(v) >= 2:
            assert maj[pid] == 1.0
    assert rep.method("good/min").vs_policy["overall"].verdict == "win"
    assert rep.method("bad/last").vs_policy["overall"].verdict == "loss"
    assert rep.best_baseline == "majority"
    assert rep.groups == ["easy", "medium", "hard", "overall"]
    assert rep.counts["easy"]["problems"] == 10
    # Chosen ids are real candidates of the problem.
    for pid, sid in rep.method("good/min").chosen.items():
        assert sid.startswith(pid + "#")


def test_table_rows_in_paper_order():
    problems, solutions, sets, beh = build(n_problems=6, n=4)
    sets = {"orm": sets["good"], "labels": sets["bad"]}
    rep = evaluate(problems, solutions, sets, EvalOptions(aggregations=("min", "mean"), resamples=100, baselines=("orm",)), behaviours=beh)
    labels = [m.label for m in rep.table_methods()]
    assert labels == ["Policy", "Random", "Majority vote", "ORM", "ORM weighted vote (sum)",
                      "DreamPRM-Code (label correction)", "DreamPRM-Code (label correction) weighted vote (sum)",
                      "Oracle (pass@N)"]
    assert rep.method("orm/min").kind == "baseline"
    assert rep.method("orm/min/vote-sum").kind == "baseline"
    assert rep.method("orm/mean").kind == "score"
    assert rep.method("orm/min/vote-mean").kind == "score"
    assert rep.method("orm/mean/vote-sum").label == "ORM weighted vote (sum, mean)"
    assert rep.best_baseline == "orm/min"


def test_scaling_curve_shape_and_ends():
    problems, solutions, sets, beh = build(n_problems=12, n=8)
    rep = evaluate(problems, solutions, sets, EvalOptions(aggregations=("min",), resamples=100, subsamples=10), behaviours=beh)
    ns = [p["n"] for p in rep.scaling["oracle"]]
    assert ns == [1, 2, 4, 8]
    # At N=1 every method is the policy's pass@1 on average; at full N the curve equals the table.
    policy = rep.method("policy").cells["overall"].value
    assert rep.scaling["oracle"][0]["value"] == pytest.approx(policy)
    # N=1 with at most `subsamples` singletons is averaged exactly: every selector equals the policy.
    for name in ("good/min", "bad/min", "majority"):
        assert rep.scaling[name][0]["value"] == pytest.approx(policy)
    for name in ("good/min", "bad/min", "majority", "oracle"):
        assert rep.scaling[name][-1]["value"] == pytest.approx(rep.method(name).cells["overall"].value)
    oracle = [p["value"] for p in rep.scaling["oracle"]]
    assert oracle == sorted(oracle)
    good = [p["value"] for p in rep.scaling["good/min"]]
    assert good[-1] >= good[0]


def test_deterministic_with_seed_and_changes_with_seed():
    problems, solutions, _, beh = build(n_problems=20, n=6)
    flat = {"flat": [StepScores(s.id, s.problem_id, [0.5]) for s in solutions]}
    a = evaluate(problems, solutions, flat, EvalOptions(aggregations=("min",), resamples=50, seed=1), behaviours=beh)
    b = evaluate(problems, solutions, flat, EvalOptions(aggregations=("min",), resamples=50, seed=1), behaviours=beh)
    c = evaluate(problems, solutions, flat, EvalOptions(aggregations=("min",), resamples=50, seed=2), behaviours=beh)
    assert a.to_dict() == b.to_dict()
    assert a.method("flat/min").chosen != c.method("flat/min").chosen


def test_pass_at_k_table_and_no_scores():
    problems, solutions, _, beh = build(n_problems=9, n=6)
    rep = evaluate(problems, solutions, {}, EvalOptions(resamples=50), behaviours=beh)
    assert rep.pass_at_k["overall"]["pass@1"] == pytest.approx(rep.method("policy").cells["overall"].value)
    assert rep.pass_at_k["overall"]["pass@5"] is not None
    assert rep.pass_at_k["overall"]["pass@10"] is None  # pools of 6
    assert [m.name for m in rep.methods] == ["policy", "random", "majority", "oracle"]


def test_missing_scores_rank_last_and_are_reported():
    problems = [make_problem("A", "easy")]
    solutions = make_pool("A", [False, True, False])
    partial = [StepScores("A#0", "A", [0.1]), StepScores("A#2", "A", [0.2]), StepScores("Z#0", "Z", [1.0])]
    rep = evaluate(problems, solutions, {"s": partial}, EvalOptions(aggregations=("min",), majority=False, resamples=10))
    assert rep.coverage["s"] == {"scored": 2, "missing": 1, "extra": 1}
    assert rep.method("s/min").chosen["A"] == "A#2"
    assert any("lacks 1" in n for n in rep.notes)


def test_user_errors():
    problems = [make_problem("A", "easy")]
    solutions = make_pool("A", [True, False])
    with pytest.raises(UserError, match="no verdict"):
        evaluate(problems, [Solution("A", 0, "x")], {}, EvalOptions(majority=False))
    with pytest.raises(UserError, match="scores none"):
        evaluate(problems, solutions, {"s": [StepScores("B#0", "B", [0.5])]}, EvalOptions(majority=False))
    with pytest.raises(UserError, match="no solution belongs"):
        evaluate([make_problem("B", "easy")], solutions, {}, EvalOptions(majority=False))
    with pytest.raises(UserError, match="unknown aggregation"):
        evaluate(problems, solutions, {}, EvalOptions(aggregations=("median",), majority=False))
    with pytest.raises(UserError, match="reserved"):
        evaluate(problems, solutions, {"oracle": []}, EvalOptions(majority=False))


def test_recorded_labels():
    problems = [make_problem("A", "hard")]
    sols = [Solution("A", 0, "x", meta={"recorded_is_solved": True}), Solution("A", 1, "y", meta={"is_solved": False})]
    rep = evaluate(problems, sols, {}, EvalOptions(majority=False, label="recorded", resamples=10))
    assert rep.method("policy").cells["overall"].value == 0.5


@pytest.mark.slow
def test_real_apps_pools_with_recorded_labels(shared_data, tmp_path):
    """The real MapCoder pools through evaluate and the report (the pool's own labels, no execution)."""
    from dreamprm_code.data import load_problems, load_solutions
    from dreamprm_code.report.write import write_report

    problems = load_problems(f"apps-stdin:{shared_data / 'apps-150' / 'problems.jsonl'}")
    solutions = load_solutions(shared_data / "pools" / "apps-mapcoder", problems)
    rep = evaluate(problems, solutions, {}, EvalOptions(majority=False, label="recorded", resamples=200, subsamples=5))
    assert rep.counts["overall"]["problems"] == 150
    assert rep.counts["overall"]["candidates"] == 1500
    recorded = np.mean([s.meta["recorded_is_solved"] for s in solutions])
    assert rep.method("policy").cells["overall"].value == pytest.approx(recorded)
    assert rep.method("oracle").cells["overall"].value >= rep.method("policy").cells["overall"].value
    write_report(rep, tmp_path, problems=problems, solutions=solutions, sample=2)
    assert "Oracle (pass@N)" in (tmp_path / "report.html").read_text()


def test_weighted_vote_rows_pick_what_neither_vote_nor_prm_picks():
    """One pool where plain vote and PRM argmax pick wrong candidates and the weighted vote a right one."""
    problems = [make_problem("A", "easy")]
    labels = [False, False, True, True, True, False, False, False, False]
    solutions = make_pool("A", labels)
    beh = dict(zip([s.id for s in solutions], ["A", "A", "B", "B", "B", "C", "C", "C", "C"], strict=True))
    values = [0.95, 0.1, 0.7, 0.7, 0.72, 0.2, 0.2, 0.2, 0.2]
    prm = [StepScores(s.id, "A", [0.99, v]) for s, v in zip(solutions, values, strict=True)]
    rep = evaluate(problems, solutions, {"prm": prm}, EvalOptions(aggregations=("min", "mean"), resamples=20,
                                                                 subsamples=9), behaviours=beh)
    assert rep.method("majority").per_problem["A"] == 0.0
    assert rep.method("prm/min").chosen["A"] == "A#0" and rep.method("prm/min").per_problem["A"] == 0.0
    for name in ("prm/min/vote-sum", "prm/min/vote-mean", "prm/mean/vote-sum"):
        assert rep.method(name).chosen["A"] == "A#4", name
        assert rep.method(name).per_problem["A"] == 1.0
    # The curve carries the weighted votes too: N=1 (all 9 singletons) is the policy, the full pool the table.
    curve = rep.scaling["prm/min/vote-sum"]
    assert curve[0]["value"] == pytest.approx(rep.method("policy").cells["overall"].value)
    assert curve[-1]["n"] == 9 and curve[-1]["value"] == 1.0
    names = {m.name for m in rep.table_methods()}
    assert "prm/min/vote-sum" in names and "prm/min/vote-mean" not in names
    # Without the vote's clusters there is no weighted vote; a bad weighting is a user error.
    off = evaluate(problems, solutions, {"prm": prm}, EvalOptions(majority=False, resamples=10))
    assert not any(m.vote for m in off.methods)
    with pytest.raises(UserError, match="weighted vote"):
        evaluate(problems, solutions, {"prm": prm}, EvalOptions(weighted_vote=("max",)), behaviours=beh)
