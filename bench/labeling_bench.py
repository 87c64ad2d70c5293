"""Benchmark: policy tokens and wall time per labelled prefix, ``search`` against ``full``.

On real problems with a real policy (default: the embedded Qwen2.5-Coder-0.5B on CPU):

1. the policy writes one chain-of-functions solution per problem (kept if it has >= 2 steps),
   executed in the sandbox for its verdict;
2. ``full`` labels every prefix with N rollouts (the baseline);
3. ``search`` labels the same solutions;
4. prints each figure of ``search`` next to ``full`` and the ratio, and how often the two agree
   on the first failing step (overall, on failing and on passing solutions), on each prefix's
   hard label, and the MC-value MAE;
5. with ``--replay "search_round=1;search_round=1,probe_passing=0"``, also runs ``search`` with
   other settings against a policy that serves the rollouts ``full`` logged (each prefix is one
   seeded stream, so ``search`` would draw those very rollouts): the same decisions at no model
   cost, to weigh settings against each other.

Every stage is resumable: rerun the same command after a kill and it continues (``--only full``
labels with ``full`` and stops). Figures are printed and written to ``WORKDIR/report.json``.

    python bench/labeling_bench.py --workdir /tmp/labeling-bench \\
        --problems humaneval --ids HumanEval/0,HumanEval/7,HumanEval/12 --rollouts 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dreamprm_code.cof import split_steps
from dreamprm_code.cof.prompts import build_prompt, code_from_continuation
from dreamprm_code.data import load_problems, load_solutions
from dreamprm_code.execution import Executor
from dreamprm_code.io import JsonlAppender, atomic_write_json
from dreamprm_code.labeling import LabelConfig, RunStats, first_failing_step, label_solutions
from dreamprm_code.labeling.rolloutlog import RolloutLog, rollouts_path
from dreamprm_code.labeling.summary import by_solution
from dreamprm_code.policy import Completion, SamplingParams, load_policy
from dreamprm_code.records import Solution


class LazyPolicy:
    """Loads the policy on first use, so a rerun whose labels are all done costs no model load."""

    def __init__(self, spec: str) -> None:
        self.name = spec
        self._policy = None

    def generate(self, prompts, n, sampling):
        if self._policy is None:
            print(f"loading policy {self.name} ...", flush=True)
            t0 = time.perf_counter()
            self._policy = load_policy(self.name)
            print(f"  ({time.perf_counter() - t0:.1f}s)", flush=True)
        return self._policy.generate(prompts, n, sampling)


def make_solutions(args, problems, policy, executor, path: Path) -> list[Solution]:
    """One CoF solution per problem (resumable), with its sandbox verdict."""
    log = JsonlAppender(path, key=lambda r: r["id"])
    try:
        for i, p in enumerate(problems):
            if f"{p.id}#0" in log.done:
                continue
            prompt = build_prompt(p, "cof", "chat", open_fence=True)
            prompt.seed = args.seed + i
            sampling = SamplingParams(
                temperature=0.2, max_new_tokens=args.solution_tokens, stop=["```"], seed=args.seed
            )
            t0 = time.perf_counter()
            ((comp,),) = policy.generate([prompt], 1, sampling)
            code = code_from_continuation("", comp.text)
            (res,) = executor.run_many([(p, code)])
            sol = Solution(
                p.id,
                0,
                code,
                policy=args.policy,
                sampling=sampling.to_dict(),
                prompt=prompt.to_dict(),
                raw=comp.text,
                steps=split_steps(code),
                verdict=res.verdict,
                result=res,
                tokens={"prompt": comp.prompt_tokens, "completion": comp.completion_tokens},
                meta={"wall_time": time.perf_counter() - t0},
            )
            log.append(sol.to_dict())
            print(f"  {sol.id}: {len(sol.steps)} steps, {res.verdict}, {comp.completion_tokens} tok")
        return [Solution.from_dict(r) for r in log.records]
    finally:
        log.close()


def run_strategy(name: str, args, sols, problems, policy, executor, workdir: Path) -> dict:
    """Label with one strategy; wall time is kept from the run that finished the labels."""
    stats_path = workdir / f"{name}.stats.json"
    config = LabelConfig(
        rollouts=args.rollouts,
        strategy=name,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        search_round=args.search_round,
        probe_passing=bool(args.probe_passing),
        search_give_up=args.search_give_up,
        concurrency=args.concurrency,
    )
    stats = RunStats()
    labels = label_solutions(sols, problems, policy, executor, config, workdir / f"{name}.jsonl", stats=stats)
    if stats.labels_written or not stats_path.exists():
        old = json.loads(stats_path.read_text()) if stats_path.exists() else {}
        wall = stats.wall_time + (old.get("wall_time", 0.0) if stats.labels_resumed else 0.0)
        atomic_write_json(
            stats_path, {**stats.to_dict(), "wall_time": wall, "resumed": bool(stats.labels_resumed)}
        )
    saved = json.loads(stats_path.read_text())
    return {"labels": labels, "wall_time": saved["wall_time"], "resumed": saved["resumed"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--problems", default="humaneval")
    ap.add_argument("--ids", default="", help="comma-separated problem ids (default: the first --count)")
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--policy", default="embedded")
    ap.add_argument("--rollouts", type=int, default=4)
    ap.add_argument("--search-round", type=int, default=1)
    ap.add_argument(
        "--search-give-up", type=int, default=None, help="under search, 0 after M failed rollouts"
    )
    ap.add_argument("--probe-passing", type=int, default=1, help="1: probe passing solutions under search")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--solution-tokens", type=int, default=384)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=8, help="prefixes per generate call")
    ap.add_argument(
        "--only",
        choices=("full", "search"),
        default=None,
        help="label with one strategy and stop (no report)",
    )
    ap.add_argument(
        "--replay",
        default="",
        help="';'-separated search settings (search_round=1,probe_passing=0) to replay on full's rollouts",
    )
    ap.add_argument("--pool", default=None, help="take solutions from this pool (file or folder) instead")
    ap.add_argument("--pool-ids", default="", help="comma-separated solution ids from --pool")
    args = ap.parse_args()

    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    problems = load_problems(args.problems)
    wanted = [x for x in args.ids.split(",") if x]
    chosen = [p for p in problems if p.id in wanted] if wanted else problems[: args.count]
    executor = Executor(workers=args.workers, cache_dir=workdir / "exec-cache")
    policy = LazyPolicy(args.policy)
    if args.pool:
        picked = [x for x in args.pool_ids.split(",") if x]
        pool = {s.id: s for s in load_solutions(args.pool, problems)}
        sols = [pool[i] for i in picked]
        for s in sols:
            s.steps = split_steps(s.code)
        chosen = [p for p in problems if p.id in {s.problem_id for s in sols}]
        print(f"{len(sols)} solutions from {args.pool}")
    else:
        print(f"solutions for {len(chosen)} problems:")
        sols = make_solutions(args, chosen, policy, executor, workdir / "solutions.jsonl")
    multi = [s for s in sols if s.steps and len(s.steps) >= 2]
    print(f"{len(multi)} of {len(sols)} solutions have >= 2 steps; labelling those")

    runs = {}
    for name in (args.only,) if args.only else ("full", "search"):
        print(f"\n== {name} ==", flush=True)
        runs[name] = run_strategy(name, args, multi, chosen, policy, executor, workdir)
    if args.only == "search" or (args.only == "full" and not args.replay):
        return

    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "set": [s.id for s in multi]}
    report["full"] = figures(runs["full"])
    if "search" in runs:
        report["search"] = {
            **figures(runs["search"]),
            **compare(runs["full"]["labels"], runs["search"]["labels"]),
        }
        show(
            "search (measured)",
            report["full"],
            report["search"],
            runs["full"]["labels"],
            runs["search"]["labels"],
        )
    for variant in [v for v in args.replay.split(";") if v]:
        labels = replay_search(variant, args, multi, chosen, executor, workdir)
        fig = {
            **figures({"labels": labels, "wall_time": float("nan")}),
            **compare(runs["full"]["labels"], labels),
        }
        report[f"replay {variant}"] = fig
        show(
            f"search replayed on full's rollouts ({variant})",
            report["full"],
            fig,
            runs["full"]["labels"],
            labels,
        )
    report["resumed"] = {k: v["resumed"] for k, v in runs.items()}
    atomic_write_json(workdir / "report.json", report)


def figures(run: dict) -> dict:
    labels = run["labels"]
    n = len(labels)
    return {
        "labels": n,
        "rollouts": sum(x.rollouts for x in labels),
        "tokens": sum(x.tokens for x in labels),
        "tokens_per_label": sum(x.tokens for x in labels) / n,
        "wall_s_per_label": run["wall_time"] / n,
        "wall_s": run["wall_time"],
    }


def compare(full_labels: list, other_labels: list) -> dict:
    """Agreement of ``other`` with ``full``: first failing step (overall and by verdict), hard labels, MAE."""
    fa, sa = by_solution(full_labels), by_solution(other_labels)
    ok = {s: fa[s][-1].hard_label == 1 for s in fa}
    groups = {"all": list(fa), "failing": [s for s in fa if not ok[s]], "passing": [s for s in fa if ok[s]]}
    agree = {
        g: [sum(first_failing_step(fa[s]) == first_failing_step(sa[s]) for s in ids), len(ids)]
        for g, ids in groups.items()
    }
    pairs = [(a, b) for s in fa for a, b in zip(fa[s], sa[s], strict=True)]
    return {
        "first_fail_agreement": agree["all"][0] / len(fa),
        "first_fail_agreement_by_verdict": agree,
        "hard_label_agreement": [sum(a.hard_label == b.hard_label for a, b in pairs), len(pairs)],
        "mc_mae": sum(abs(a.mc_value - b.mc_value) for a, b in pairs) / len(pairs),
    }


def show(title: str, full: dict, other: dict, full_labels: list, other_labels: list) -> None:
    fa, sa = by_solution(full_labels), by_solution(other_labels)
    print(f"\n--- {title}: {len(fa)} solutions, {full['labels']} prefixes")
    print(f"{'figure':<28}{'full (baseline)':>18}{'search':>12}{'ratio':>8}")
    for key in ("rollouts", "tokens", "tokens_per_label", "wall_s_per_label", "wall_s"):
        ratio = other[key] / full[key] if full[key] else float("nan")
        print(f"{key:<28}{full[key]:>18.2f}{other[key]:>12.2f}{ratio:>8.2f}")
    for g, (a, n) in other["first_fail_agreement_by_verdict"].items():
        print(f"first failing step agrees on {g} solutions: {a}/{n}")
    a, n = other["hard_label_agreement"]
    print(f"hard label agrees: {a}/{n} ({a / n:.0%}); mc_value MAE {other['mc_mae']:.3f}")
    for s in fa:
        print(
            f"  {s}: full first fail {first_failing_step(fa[s])}, search {first_failing_step(sa[s])}; "
            f"full mc {[round(x.mc_value, 2) for x in fa[s]]} search mc {[round(x.mc_value, 2) for x in sa[s]]} "
            f"search rollouts {[x.rollouts for x in sa[s]]}"
        )


class ReplayPolicy:
    """Serves the rollouts ``full`` drew: sample ``j`` of seed ``q`` is rollout ``q + j - s`` of the
    prefix whose stream seed is ``s`` (each prefix one seeded stream, see ``rollout_seed``).

    ``search`` run against it makes exactly the decisions it would make with the real policy if
    floating point did not depend on batch shapes, at no model cost.
    """

    def __init__(self, rollout_log: Path) -> None:
        log = RolloutLog(rollout_log)
        self.streams = {rec["seed"]: rec for key, rec in log.gen.items() if key.endswith("#0")}
        log.close()

    def generate(self, prompts, n, sampling):
        out = []
        for p in prompts:
            base = max(s for s in self.streams if s <= p.seed)
            rec, j = self.streams[base], p.seed - base
            if j + n > len(rec["texts"]):
                raise KeyError(f"seed {p.seed}: full drew {len(rec['texts'])} rollouts from {base}")
            out.append(
                [
                    Completion(
                        rec["texts"][i], rec["prompt_tokens"], rec["completion_tokens"][i], rec["finish"][i]
                    )
                    for i in range(j, j + n)
                ]
            )
        return out


def replay_search(variant: str, args, sols, problems, executor, workdir: Path) -> list:
    """``search`` with settings ``variant`` (``search_round=1,probe_passing=0``) on full's rollouts."""
    opts = dict(kv.split("=") for kv in variant.split(",") if kv)
    config = LabelConfig(
        rollouts=args.rollouts,
        strategy="search",
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        search_round=int(opts.get("search_round", 1)),
        probe_passing=opts.get("probe_passing", "1") not in ("0", "false"),
        search_give_up=int(opts["search_give_up"]) if "search_give_up" in opts else None,
        concurrency=args.concurrency,
    )
    tag = variant.replace(",", "_").replace("=", "")
    policy = ReplayPolicy(rollouts_path(workdir / "full.jsonl"))
    return label_solutions(
        sols, problems, policy, executor, config, workdir / f"replay-{tag}.jsonl", show_progress=False
    )


if __name__ == "__main__":
    main()
