"""``dreamprm-code run CONFIG``: generate -> label -> train (+ correction) -> score -> evaluate.

Every stage writes under one run directory and is itself resumable (append-only logs, atomic
files, the trainer's saved state); a stage whose outputs are complete is skipped. Its
``stages/<name>.json`` marker records a fingerprint of the settings it ran with (and of the
stages it read from), so a changed setting is an error naming the stage rather than a silent
mix of old and new outputs; only the evaluation, which is cheap and rewrites its files
atomically, simply runs again when its settings change. Kill it at any point and run the same
command again.

Training problems are split by problem (``problems/split.json``): the ``label`` part is
labelled by rollouts and trains every variant; the held-out ``meta`` part (whole solutions
with verdicts) is split again by problem (``meta.metaset.split_meta_set``): its first share
drives the label-correction outer step, the rest validates every variant.
With ``train.meta_solutions`` the meta part comes from those solutions instead (the
``meta-set`` stage, :mod:`dreamprm_code.pipeline.metapool`) and every training problem is labelled.
Evaluation problems never enter training, labelling or the meta set.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dreamprm_code.distributed import as_options
from dreamprm_code.errors import UserError
from dreamprm_code.io import atomic_write_json, atomic_write_jsonl, check_resume, read_jsonl
from dreamprm_code.pipeline.config import PipelineConfig
from dreamprm_code.pipeline.problems import split_train_eval, split_training_problems
from dreamprm_code.progress import console
from dreamprm_code.records import Problem, Solution, StepScores

#: variant -> (trainer correction mode, outcome-only)
VARIANTS = {
    "orm": ("none", True),
    "prm": ("none", False),
    "prm-weights": ("weights", False),
    "prm-labels": ("labels", False),
}


class RunDir:
    """The layout of a run directory, in one place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.json"
        self.problems_train = root / "problems" / "train.jsonl"
        self.problems_eval = root / "problems" / "eval.jsonl"
        self.split = root / "problems" / "split.json"
        self.solutions_train = root / "solutions" / "train.jsonl"
        self.solutions_eval = root / "solutions" / "eval.jsonl"
        self.solutions_meta = root / "solutions" / "meta.jsonl"
        self.solutions_val = root / "solutions" / "val.jsonl"
        self.problems_meta = root / "problems" / "meta-pool.jsonl"
        self.meta_pool = root / "solutions" / "meta-pool.jsonl"
        self.meta_pool_summary = root / "solutions" / "meta-pool.json"
        self.problems_prm = root / "problems" / "train-and-meta-pool.jsonl"
        self.labels = root / "labels" / "labels.jsonl"
        self.models = root / "models"
        self.scores = root / "scores"
        self.report = root / "report"
        self.exec_cache = root / "cache" / "execution"
        self.behaviours = root / "cache" / "behaviours.jsonl"
        self.stages = root / "stages"
        self.timings = root / "timings.json"

    def model(self, variant: str) -> Path:
        return self.models / variant

    def score_file(self, variant: str) -> Path:
        return self.scores / f"{variant}.jsonl"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of settings (pydantic models by their values)."""

    def plain(x: Any) -> Any:
        if isinstance(x, BaseModel):
            return x.model_dump(mode="json")
        if isinstance(x, list | tuple):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {str(k): plain(v) for k, v in x.items()}
        return x

    blob = json.dumps(plain(list(parts)), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Stages:
    """Done-markers: a stage is skipped when its marker exists with the same fingerprint."""

    def __init__(self, run: RunDir, total: int) -> None:
        self.run = run
        self.total = total
        self.index = 0
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.ran: list[str] = []

    def _marker(self, name: str) -> Path:
        return self.run.stages / f"{name}.json"

    def done(self, name: str, fp: str, *, redo_on_change: bool = False) -> bool:
        marker = self._marker(name)
        if not marker.exists():
            return False
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False  # a marker is written atomically; an unreadable one means "not done"
        if recorded.get("fingerprint") != fp:
            if redo_on_change:
                return False
            check_resume(recorded, {"fingerprint": fp}, keys=["fingerprint"], where=marker,
                         what=f"stage {name!r}",
                         hint=f"use another run_dir (--run-dir) or delete {self.run.root} to start over")
        self.timings[name] = recorded.get("seconds", 0.0)
        return True

    def run_stage(self, name: str, fp: str, fn: Callable[[], Any], *, redo_on_change: bool = False) -> None:
        """Run ``fn`` unless the stage is complete; print one header line either way."""
        self.index += 1
        head = f"[{self.index}/{self.total}] {name}"
        if self.done(name, fp, redo_on_change=redo_on_change):
            console.print(f"[dim]{head}: complete, skipped[/]")
            self.skipped.append(name)
            return
        console.print(f"[bold cyan]{head}[/]")
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        self.timings[name] = seconds
        self.ran.append(name)
        atomic_write_json(self._marker(name), {"fingerprint": fp, "seconds": seconds, "finished": time.time()})
        console.print(f"[dim]  {name} took {seconds:.1f} s[/]")


def _load_problems(path: Path) -> list[Problem]:
    return [Problem.from_dict(r) for r in read_jsonl(path)]


def _load_solutions(path: Path) -> list[Solution]:
    return [Solution.from_dict(r) for r in read_jsonl(path, tolerate_torn_tail=True)]


def _meta_split(
    config: PipelineConfig, split: dict[str, list[str]], pool: list[Solution], eval_problems: list[Problem]
) -> tuple[list[Solution], list[Solution]]:
    """The meta pool's solutions (the held-out training problems', or ``train.meta_solutions``),
    split by problem: (outer-step meta set, validation set)."""
    from dreamprm_code.meta.metaset import split_meta_set

    held = pool if config.train.meta_solutions else [s for s in pool if s.problem_id in set(split["meta"])]
    if not held:
        return [], []
    parts = split_meta_set(held, config.train.meta_fraction, config.train.seed,
                           eval_problems=eval_problems, train_problems=split["label"])
    return parts.outer, parts.select


@dataclass
class RunResult:
    """What one invocation did: where the report is, which stages ran and which were skipped."""

    report_dir: Path
    ran: list[str]
    skipped: list[str]
    timings: dict[str, float]


def train_launch_command(run: RunDir, tc: Any, num_processes: int, *, with_meta: bool,
                         problems: Path | None = None) -> list[str]:
    """``accelerate launch`` of the stand-alone ``train`` command on this run's files, with the
    pipeline's own :class:`~dreamprm_code.prm.TrainConfig` (``models/V.train_config.json``), so the
    pipeline's in-process trainer then finds the state complete and only writes the checkpoint.
    No held-out labels (``labels/no-holdout.jsonl`` is empty): the pipeline validates on
    ``solutions/val.jsonl`` itself. ``problems``: the statements' file (default: the training
    problems'). ``--multi_gpu`` is DDP (NCCL on GPUs; gloo on CPUs when no GPU is visible)."""
    out = Path(tc.output_dir)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",
           "-m", "dreamprm_code", "train",
           "--labels", str(run.labels), "--eval-labels", str(run.root / "labels" / "no-holdout.jsonl"),
           "--problems", str(problems or run.problems_train), "--output-dir", str(out),
           "--config", str(out.parent / f"{out.name}.train_config.json")]
    if with_meta:
        cmd += ["--meta", str(run.solutions_meta)]
    return cmd


def launch_training(run: RunDir, tc: Any, num_processes: int, *, with_meta: bool,
                    problems: Path | None = None) -> None:
    """Train one variant in ``num_processes`` processes and wait; a failure names the command."""
    cmd = train_launch_command(run, tc, num_processes, with_meta=with_meta, problems=problems)
    out = Path(tc.output_dir)
    atomic_write_json(out.parent / f"{out.name}.train_config.json", tc.to_dict())
    holdout = run.root / "labels" / "no-holdout.jsonl"
    if not holdout.exists():
        atomic_write_jsonl(holdout, [])
    console.print(f"  [dim]{' '.join(cmd)}[/]")
    done = subprocess.run(cmd)
    if done.returncode != 0:
        raise UserError(f"`accelerate launch` of train exited with {done.returncode}: {' '.join(cmd)}",
                        field="train.num_processes")


def _meta_set_stage(config: PipelineConfig, run: RunDir, stages: Stages, train_problems: list[Problem],
                    eval_problems: list[Problem], *, show_progress: bool) -> tuple[list[Problem], dict[str, Any]]:
    """Stage ``meta-set``: ``train.meta_solutions`` less the run's own problems, every candidate with a
    verdict, in ``solutions/meta-pool.jsonl`` (so a resumed run executes nothing again); returns the
    pool's problems and what was kept and dropped (``solutions/meta-pool.json``)."""
    from dreamprm_code.embedded import sha256_of
    from dreamprm_code.pipeline.metapool import draw_meta_pool, source_files

    tc = config.train
    assert tc.meta_solutions and tc.meta_problems
    digest, _ = sha256_of(source_files(tc.meta_solutions))
    fp = fingerprint(config.train_problems, config.eval_problems, tc.meta_solutions, tc.meta_problems, digest,
                     config.execution.timeout)

    def stage() -> None:
        pool = draw_meta_pool(tc.meta_solutions, tc.meta_problems, training=train_problems, evaluation=eval_problems,
                              limits=config.execution.build(), workers=config.execution.workers or 2,
                              cache_dir=run.exec_cache, show_progress=show_progress)
        atomic_write_jsonl(run.problems_meta, [p.to_dict() for p in pool.problems])
        atomic_write_jsonl(run.problems_prm, [p.to_dict() for p in [*train_problems, *pool.problems]])
        atomic_write_jsonl(run.meta_pool, [s.to_dict() for s in pool.solutions])
        atomic_write_json(run.meta_pool_summary, pool.summary)
        s = pool.summary
        console.print(
            f"  meta pool: {s['solutions']} solutions ({s['passing']} passing, {s['executed']} executed) of "
            f"{s['problems']} problems from {tc.meta_solutions}; dropped {s['dropped_training_problems']} training "
            f"and {s['dropped_evaluation_problems']} evaluation problems ({s['dropped_solutions']} solutions)"
        )

    stages.run_stage("meta-set", fp, stage)
    return _load_problems(run.problems_meta), json.loads(run.meta_pool_summary.read_text(encoding="utf-8"))


def stage_names(config: PipelineConfig) -> list[str]:
    """Every stage of a run, in order."""
    names = ["problems", *(["meta-set"] if config.train.meta_solutions else []), "generate-train", "generate-eval",
             "label"]
    for v in config.train.variants:
        names += [f"train-{v}", f"score-{v}"]
    return [*names, "evaluate"]


def run_pipeline(config: PipelineConfig, *, show_progress: bool = True) -> RunResult:
    """Run (or resume) the whole pipeline; a complete stage is skipped."""
    run = RunDir(config.run_path)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.config, config.model_dump(mode="json"))
    stages = Stages(run, len(stage_names(config)))
    t_start = time.perf_counter()
    console.rule(f"dreamprm-code run {config.name}: {run.root}")

    # --- problems -------------------------------------------------------------------------------
    fp_problems = fingerprint(config.train_problems, config.eval_problems, config.train.held_out_share,
                              config.train.seed)

    def stage_problems() -> None:
        train, evaluation = split_train_eval(config.train_problems, config.eval_problems)
        split = split_training_problems([p.id for p in train], config.train.held_out_share, config.train.seed)
        atomic_write_jsonl(run.problems_train, [p.to_dict() for p in train])
        atomic_write_jsonl(run.problems_eval, [p.to_dict() for p in evaluation])
        atomic_write_json(run.split, split)
        console.print(
            f"  {len(train)} training problems ({len(split['label'])} labelled, {len(split['meta'])} held out "
            f"for the meta set and validation), {len(evaluation)} evaluation problems"
        )

    stages.run_stage("problems", fp_problems, stage_problems)
    train_problems = _load_problems(run.problems_train)
    eval_problems = _load_problems(run.problems_eval)
    split: dict[str, list[str]] = json.loads(run.split.read_text(encoding="utf-8"))
    meta_problems: list[Problem] = []
    meta_pool: dict[str, Any] | None = None
    if config.train.meta_solutions:
        meta_problems, meta_pool = _meta_set_stage(config, run, stages, train_problems, eval_problems,
                                                   show_progress=show_progress)

    from dreamprm_code.execution import Executor

    executor = Executor(limits=config.execution.build(), workers=config.execution.workers, cache_dir=run.exec_cache)
    policy_holder: dict[str, Any] = {}
    ray_opts = as_options(config.ray)
    policy_spec = (config.policy.spec, dict(config.policy.options))  # what Ray actors load

    def policy() -> Any:
        if "policy" not in policy_holder:
            from dreamprm_code.policy import load_policy

            try:
                policy_holder["policy"] = load_policy(config.policy.spec, **config.policy.options)
            except TypeError as exc:  # an option the backend does not take
                raise UserError(f"{exc}", field="policy.options") from None
        return policy_holder["policy"]

    try:
        # --- generate -------------------------------------------------------------------------
        def generate(problems: list[Problem], n: int, out: Path, seed_offset: int) -> None:
            from dreamprm_code.generate.solutions import generate_solutions

            sampling = config.policy.sampling(seed_offset)
            generate_solutions(
                problems, policy_spec if ray_opts else policy(), n=n, sampling=sampling, style=config.policy.style,
                out=out, executor=executor, code_prefill=config.policy.code_prefill, show_progress=show_progress,
                ray=ray_opts,
            )

        sampling_settings = config.policy.model_dump(mode="json", exclude={"options"})  # options: how, not what
        timeout = config.execution.timeout  # verdicts depend on it
        fp_gen_train = fingerprint(fp_problems, sampling_settings, config.generate.n_train, timeout)
        fp_gen_eval = fingerprint(fp_problems, sampling_settings, config.generate.n_eval, timeout)
        stages.run_stage(
            "generate-train", fp_gen_train,
            lambda: generate(train_problems, config.generate.n_train, run.solutions_train, 0),
        )
        stages.run_stage(
            "generate-eval", fp_gen_eval,
            lambda: generate(eval_problems, config.generate.n_eval, run.solutions_eval, 1_000_000),
        )
        train_solutions = _load_solutions(run.solutions_train)
        eval_solutions = _load_solutions(run.solutions_eval)
        labelled = set(split["label"])
        label_solutions_ = [s for s in train_solutions if s.problem_id in labelled]
        pool = _load_solutions(run.meta_pool) if meta_pool is not None else train_solutions
        meta_set, val_set = _meta_split(config, split, pool, eval_problems)
        # the meta and validation parts as files too, for `dreamprm-code train` (e.g. under accelerate launch)
        atomic_write_jsonl(run.solutions_meta, [s.to_dict() for s in meta_set])
        atomic_write_jsonl(run.solutions_val, [s.to_dict() for s in val_set])

        # --- label ----------------------------------------------------------------------------
        fp_label = fingerprint(fp_gen_train, config.label.model_dump(mode="json", exclude={"concurrency"}))

        def label() -> None:
            from dreamprm_code.labeling import label_solutions

            label_solutions(
                label_solutions_, train_problems, policy_spec if ray_opts else policy(), executor,
                config.label.build(top_p=config.policy.top_p, seed=config.policy.seed, style=config.policy.style,
                                   ray=config.ray),
                run.labels, show_progress=show_progress,
            )

        stages.run_stage("label", fp_label, label)
    finally:
        policy_holder.clear()  # free the policy's memory before training
        executor.close()

    from dreamprm_code.labeling import load_labels

    labels = load_labels(run.labels)
    if not labels:
        raise UserError("labelling produced no labels (no training solutions in the labelled part?)",
                        path=run.labels)

    # --- train and score each variant -------------------------------------------------------------
    train_settings = config.train.model_dump(mode="json")
    train_settings.pop("variants")
    train_settings.pop("num_processes")  # how, not what
    train_settings.pop("report_to")  # nor where it reports
    fallbacks: dict[str, str] = {}
    prm_problems = train_problems + meta_problems  # statements of the labels', meta and validation solutions
    for variant in config.train.variants:
        correction, outcome_only = VARIANTS[variant]
        fp_train = fingerprint(fp_label, train_settings, variant)

        def train(variant: str = variant, correction: str = correction, outcome_only: bool = outcome_only) -> None:
            from dreamprm_code.prm import train_prm

            tc = config.train.build(output_dir=str(run.model(variant)), outcome_only=outcome_only,
                                    meta={**config.train.meta.model_dump(), "mode": correction})
            if config.train.num_processes > 1:  # the processes train; this one then finds them done
                launch_training(run, tc, config.train.num_processes, with_meta=correction != "none",
                                problems=run.problems_prm if meta_problems else None)
            try:
                train_prm(tc, labels, meta_set=meta_set if correction != "none" else None, eval_set=val_set,
                          problems=prm_problems, progress=show_progress)
            except UserError as exc:
                if exc.field != "meta" or "passing" not in exc.message:
                    raise
                # a meta set of one class cannot correct anything: train without, and say so
                console.print(f"[yellow]{variant}: {exc.message}; trained without correction[/]")
                fallbacks[variant] = f"{exc.message}; trained without correction"
                tc.meta = type(tc.meta).from_dict({**tc.meta.to_dict(), "mode": "none"})
                train_prm(tc, labels, meta_set=None, eval_set=val_set, problems=prm_problems,
                          progress=show_progress)

        stages.run_stage(f"train-{variant}", fp_train, train)

        def score(variant: str = variant) -> None:
            from dreamprm_code.prm import load_prm, score_solutions

            if ray_opts:
                from dreamprm_code.prm.score import score_to_file

                score_to_file(run.model(variant), eval_problems, eval_solutions, run.score_file(variant),
                              progress=show_progress, ray=ray_opts)
                return
            prm = load_prm(run.model(variant))
            scores = score_solutions(prm, eval_problems, eval_solutions, progress=show_progress)
            atomic_write_jsonl(run.score_file(variant), [s.to_dict() for s in scores])

        stages.run_stage(f"score-{variant}", fingerprint(fp_train, fp_gen_eval), score)

    # --- evaluate and report ----------------------------------------------------------------------
    def evaluate() -> None:
        from dreamprm_code.report.tables import rich_table
        from dreamprm_code.report.write import write_report
        from dreamprm_code.scaling.behaviour import compute_behaviours
        from dreamprm_code.scaling.evaluate import EvalOptions
        from dreamprm_code.scaling.evaluate import evaluate as evaluate_pools

        score_sets = {
            v: [StepScores.from_dict(r) for r in read_jsonl(run.score_file(v))] for v in config.train.variants
        }

        def behaviours(problems: list[Problem], solutions: list[Solution]) -> dict[str, Any]:
            return compute_behaviours(problems, solutions, cache=run.behaviours,
                                      workers=config.execution.workers or 2, show_progress=show_progress)

        report = evaluate_pools(
            eval_problems, eval_solutions, score_sets,
            EvalOptions(aggregations=config.evaluate.aggregations, seed=config.evaluate.seed,
                        majority=config.evaluate.majority, resamples=config.evaluate.bootstrap,
                        baselines=[v for v in ("orm", "prm") if v in score_sets],
                        show_progress=show_progress),
            behaviour_fn=behaviours,
        )
        report.settings["run"] = {
            "name": config.name, "run_dir": str(run.root), "labelled_problems": split["label"],
            "meta_problems": sorted({s.problem_id for s in meta_set}),
            "validation_problems": sorted({s.problem_id for s in val_set}),
            "labels": len(labels), "train_solutions": len(train_solutions),
            "correction_fallbacks": fallbacks, "meta_pool": meta_pool,
        }
        write_report(
            report, run.report, problems=eval_problems, solutions=eval_solutions, score_sets=score_sets,
            checkpoints={v: run.model(v) for v in config.train.variants if VARIANTS[v][0] != "none" and meta_set},
            title=f"dreamprm-code run {config.name}",
        )
        console.print(rich_table(report, title=f"{config.name}: pass@1 of the chosen candidate"))

    fp_eval = fingerprint(
        config.evaluate, config.train.variants,
        [fingerprint(fp_label, train_settings, v) for v in config.train.variants], fp_gen_eval,
    )
    stages.run_stage("evaluate", fp_eval, evaluate, redo_on_change=True)
    atomic_write_json(
        run.timings,
        {"stages": stages.timings, "this_invocation_seconds": time.perf_counter() - t_start,
         "ran": stages.ran, "skipped": stages.skipped},
    )
    console.print(f"[bold green]done[/]: report in {run.report / 'report.html'}")
    return RunResult(run.report, stages.ran, stages.skipped, stages.timings)
