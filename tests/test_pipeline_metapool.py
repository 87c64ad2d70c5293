"""The pipeline's meta set drawn from solutions outside the run (``train.meta_solutions``): a real
MapCoder-style pool folder without verdicts, executed once, the run's own problems dropped; the
same fake policy server, tiny backbone and sandbox as tests/test_pipeline_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamprm_code.errors import UserError
from dreamprm_code.io import atomic_write_jsonl
from test_pipeline_e2e import FakePolicyServer, problems, variants, write_setup

pytestmark = pytest.mark.timeout(900)

TRAIN = ["sq", "vow"]
EVAL = ["ev", "pal"]
POOL = ["gap", "rev", "sq", "pal"]  # sq is a training problem, pal an evaluation one: both dropped


def _pool(folder: Path, ids: list[str]) -> Path:
    """Two pool files (one policy's right and another's wrong candidate per problem), no verdicts."""
    for name, which in (("policy-a", 0), ("policy-b", 1)):
        atomic_write_jsonl(folder / f"{name}.jsonl", [
            {"task_id": pid, "source_codes": [variants(pid)[which]], "is_solved": which == 0} for pid in ids])
    return folder


def _problems_file(root: Path) -> Path:
    path = root / "problems.jsonl"
    atomic_write_jsonl(path, [p.to_dict() for p in problems()])
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


@pytest.mark.slow
def test_the_meta_set_comes_from_a_pool_less_the_runs_own_problems(tmp_path):
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline, stage_names
    from tiny_models import save_tiny_backbone

    backbone = save_tiny_backbone(tmp_path / "tiny", hidden_size=32, layers=1)
    problems_file = _problems_file(tmp_path)
    pool = _pool(tmp_path / "pool", POOL)
    server = FakePolicyServer()
    try:
        run = tmp_path / "run"
        cfg_path = write_setup(tmp_path, server.url, backbone, run, **{
            "train_problems": [{"source": str(problems_file), "ids": TRAIN}],
            "eval_problems": [{"source": str(problems_file), "ids": EVAL}],
            "train.variants": ["prm", "prm-labels"],
            "train.meta_solutions": str(pool), "train.meta_problems": str(problems_file),
        })
        cfg = load_config(str(cfg_path))
        result = run_pipeline(cfg, show_progress=False)
        assert "meta-set" in result.ran
        before = dict(server.requests)
        again = run_pipeline(cfg, show_progress=False)  # resumed: nothing runs again, the pool included
        assert again.ran == [] and again.skipped == stage_names(cfg) and server.requests == before
    finally:
        server.close()

    split = json.loads((run / "problems" / "split.json").read_text())
    assert split == {"label": sorted(TRAIN), "meta": []}  # every training problem is labelled
    executed = _jsonl(run / "solutions" / "meta-pool.jsonl")
    assert sorted({r["problem_id"] for r in executed}) == ["gap", "rev"]
    for r in executed:  # verdicts executed here, not read from the pool's is_solved
        right, _ = variants(r["problem_id"])
        assert r["verdict"] == ("pass" if r["code"] == right else "wrong_answer")
    meta = {r["problem_id"] for r in _jsonl(run / "solutions" / "meta.jsonl")}
    val = {r["problem_id"] for r in _jsonl(run / "solutions" / "val.jsonl")}
    assert len(meta) == len(val) == 1 and meta | val == {"gap", "rev"}

    settings = json.loads((run / "report" / "report.json").read_text())["settings"]["run"]
    assert settings["meta_problems"] == sorted(meta)
    assert settings["meta_pool"] == {
        "solutions_file": str(pool), "problems_source": str(problems_file), "solutions": 4, "problems": 2,
        "passing": 2, "executed": 4, "dropped_training_problems": 1, "dropped_evaluation_problems": 1,
        "dropped_solutions": 4,
    }
    assert settings["correction_fallbacks"] == {}
    card = json.loads((run / "models" / "prm-labels" / "prm.json").read_text())
    assert card["data"]["meta-set solutions"] == 2
    log = [r for r in _jsonl(run / "models" / "prm-labels" / "train_log.jsonl") if "loss" in r]
    assert any("meta_loss" in r for r in log), "the label-correction variant never ran an outer step"


@pytest.mark.slow
def test_a_pool_of_one_class_trains_without_correction_and_says_so(tmp_path):
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline
    from tiny_models import save_tiny_backbone

    backbone = save_tiny_backbone(tmp_path / "tiny", hidden_size=32, layers=1)
    problems_file = _problems_file(tmp_path)
    pool = _pool(tmp_path / "pool", ["gap", "rev"])
    (pool / "policy-b.jsonl").unlink()  # only right candidates: every meta solution passes
    server = FakePolicyServer()
    try:
        cfg_path = write_setup(tmp_path, server.url, backbone, tmp_path / "run", **{
            "train_problems": [{"source": str(problems_file), "ids": TRAIN}],
            "eval_problems": [{"source": str(problems_file), "ids": EVAL}],
            "train.variants": ["prm-labels"],
            "train.meta_solutions": str(pool), "train.meta_problems": str(problems_file),
        })
        run_pipeline(load_config(str(cfg_path)), show_progress=False)
    finally:
        server.close()
    settings = json.loads((tmp_path / "run" / "report" / "report.json").read_text())["settings"]["run"]
    assert "1 passing and 0 failing" in settings["correction_fallbacks"]["prm-labels"]
    assert settings["meta_pool"]["passing"] == settings["meta_pool"]["solutions"] == 2


def test_a_meta_source_needs_its_problem_source(tmp_path):
    from dreamprm_code.pipeline.config import load_config

    with pytest.raises(UserError) as err:
        load_config("demo", {"train.meta_solutions": str(tmp_path)})
    assert err.value.field == "train.meta_problems"
    with pytest.raises(UserError) as err:
        load_config("demo", {"train.meta_problems": "humaneval"})
    assert err.value.field == "train.meta_problems"
    cfg = load_config("demo", {"train.meta_solutions": "pool", "train.meta_problems": "humaneval"})
    assert cfg.train.held_out_share == 0.0 and load_config("demo").train.held_out_share == cfg.train.meta_share


def test_a_missing_pool_or_one_of_other_problems_is_named(tmp_path):
    from dreamprm_code.pipeline.metapool import draw_meta_pool

    problems_file = _problems_file(tmp_path)
    with pytest.raises(UserError) as err:
        draw_meta_pool(str(tmp_path / "absent"), str(problems_file), training=[], evaluation=[])
    assert err.value.path == str(tmp_path / "absent") and err.value.field == "train.meta_solutions"

    pool = _pool(tmp_path / "pool", ["gap"])
    atomic_write_jsonl(pool / "policy-c.jsonl", [{"task_id": "gap", "source_codes": ["x = 1"]},
                                                 {"task_id": "nope", "source_codes": ["x = 1"]}])
    with pytest.raises(UserError) as err:
        draw_meta_pool(str(pool), str(problems_file), training=[], evaluation=[])
    assert err.value.path == str(pool / "policy-c.jsonl") and err.value.line == 2 and err.value.field == "task_id"
    assert "'nope'" in err.value.message and str(problems_file) in err.value.message

    (pool / "policy-c.jsonl").unlink()
    gap = [p for p in problems() if p.id == "gap"]
    with pytest.raises(UserError, match="none of its 1 problems is left") as err:
        draw_meta_pool(str(pool), str(problems_file), training=gap, evaluation=[])
    assert err.value.field == "train.meta_solutions"
