"""What do the CoF templates change? The same policy, the same problems, `cof` vs `plain` prompts.

For each style this generates one greedy solution per problem (chat form with an opened code
fence, so the reply is code up to the closing fence), runs it against the problem's tests in the
sandbox, and reports the CoF share (``is_cof``), the mean number of steps and of function steps,
pass@1 and the completion tokens, each `cof` figure next to its `plain` baseline from the same run
and the ratio.

Usage: python experiments/cof_template_effect.py [--problems humaneval] [--limit 8] [--policy embedded]
"""

from __future__ import annotations

import argparse
import statistics
import time

from dreamprm_code.cof import build_prompt, code_from_continuation, split_info
from dreamprm_code.data import load_problems
from dreamprm_code.execution import Executor
from dreamprm_code.policy import SamplingParams, load_policy
from dreamprm_code.progress import make_progress


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="humaneval")
    ap.add_argument("--limit", type=int, default=8, help="problems, spread evenly over the set")
    ap.add_argument("--policy", default="embedded")
    ap.add_argument("--max-new-tokens", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    problems = load_problems(args.problems)
    stride = max(1, len(problems) // args.limit)
    problems = problems[::stride][: args.limit]
    policy = load_policy(args.policy, batch_size=args.batch_size, threads=args.threads)
    sampling = SamplingParams(temperature=0.0, max_new_tokens=args.max_new_tokens, stop=["```"])
    executor = Executor(workers=2)
    stats: dict[str, dict[str, float]] = {}
    with make_progress() as progress:
        task = progress.add_task("generate", total=2 * len(problems), info="", unit="prob")
        for style in ("plain", "cof"):
            codes, tokens, seconds = [], [], 0.0
            for p in problems:
                prompt = build_prompt(p, style=style, form="chat", open_fence=True)
                t = time.perf_counter()
                ((c,),) = policy.generate([prompt], 1, sampling)
                seconds += time.perf_counter() - t
                codes.append(code_from_continuation("", c.text))
                tokens.append(c.completion_tokens)
                progress.update(task, advance=1, info=f"{style} {p.id}")
            results = executor.run_many(list(zip(problems, codes, strict=True)))
            infos = [split_info(code) for code in codes]
            stats[style] = {
                "CoF share": sum(i.mode == "functions" for i in infos) / len(infos),
                "steps per solution": statistics.mean(len(i.steps) for i in infos),
                "function steps per solution": statistics.mean(
                    sum(s.kind in ("function", "method") for s in i.steps) for i in infos
                ),
                "pass@1": sum(r.verdict == "pass" for r in results) / len(results),
                "completion tokens": statistics.mean(tokens),
                "tokens/s": sum(tokens) / seconds if seconds else 0.0,
            }
    print(
        f"{len(problems)} problems from {args.problems}, policy {args.policy}, greedy, "
        f"max_new_tokens {args.max_new_tokens}"
    )
    print("| figure | cof | plain (baseline) | ratio |")
    print("|---|---|---|---|")
    for name in stats["cof"]:
        a, b = stats["cof"][name], stats["plain"][name]
        ratio = f"{a / b:.2f}" if b else "n/a"
        print(f"| {name} | {a:.2f} | {b:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
