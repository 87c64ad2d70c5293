"""Load test of the PRM reward service on 127.0.0.1: requests/s, candidates/s, p50/p99 latency.

Three phases on the same server code and PRM, each scoring ``--candidates`` programs:

* ``single``: one candidate per request, server batching off (``max_batch=1``): the baseline;
* ``queued``: one candidate per request, concurrent requests batched by the server's queue;
* ``batched``: ``--per-request`` candidates per request (how an RL trainer sends a step's rollouts).

The PRM is a tiny random one (default) or a real checkpoint (``--prm DIR``). Bounded:
``--candidates`` per phase and ``--max-seconds`` per phase (requests not started by then are skipped).

    python bench/serve_bench.py --candidates 256 --concurrency 16 --per-request 16
    python bench/serve_bench.py --prm runs/demo/prm --candidates 128
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

from dreamprm_code.prm.score import prm_scorer
from dreamprm_code.serve.service import ServerThread, make_app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models lives with the tests

CODE = '''def main():
    """Read the numbers and print the largest pair sum."""
    n = int(input())
    nums = list(map(int, input().split()))
    print(best_pair(nums))


def best_pair(nums):
    """Sort and add the two largest values."""
    nums = sorted(nums)
    return nums[-1] + nums[-2]


main()
'''
STATEMENT = "Print the largest sum of two numbers."


def tiny_prm():
    from dreamprm_code.prm.model import wrap_backbone
    from tiny_models import tiny_backbone, tiny_tokenizer

    tok = tiny_tokenizer()
    prm, _ = wrap_backbone(tiny_backbone(tok, hidden_size=64, layers=2), tok, lora_r=0)
    prm.attach_format(tok, 1024)
    return prm


async def _load(url: str, candidates: int, per_request: int, concurrency: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors = scored = 0
    sem = asyncio.Semaphore(concurrency)
    deadline = time.perf_counter() + max_seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:

        async def one(i: int) -> None:
            nonlocal errors, scored
            async with sem:
                if time.perf_counter() > deadline:
                    return
                cands = [{"code": CODE + "#" * ((i * per_request + k) % 7)} for k in range(per_request)]
                t0 = time.perf_counter()
                r = await c.post("/score", json={"problem": STATEMENT, "candidates": cands})
                latencies.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    scored += len(r.json()["results"])
                else:
                    errors += 1

        await c.post("/score", json={"problem": "warm-up", "candidates": [{"code": CODE}]})
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(candidates // per_request)))
        wall = time.perf_counter() - t0
        stats = (await c.get("/stats")).json()
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "candidates": scored,
        "errors": errors,
        "rps": len(lat) / wall,
        "cps": scored / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "mean_batch": stats["mean_batch"],
    }


def run_phase(scorer, *, max_batch: int, wait_ms: float, per_request: int, concurrency: int, **common) -> dict:
    app = make_app(scorer, max_batch=max_batch, max_wait_ms=wait_ms, max_candidates=max(256, per_request))
    with ServerThread(app) as srv:
        return asyncio.run(_load(srv.url, per_request=per_request, concurrency=concurrency, **common))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm", help="PRM checkpoint directory (default: a tiny random PRM)")
    ap.add_argument("--candidates", type=int, default=256, help="programs scored per phase")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight (single, queued)")
    ap.add_argument("--per-request", type=int, default=16, help="candidates per request (batched)")
    ap.add_argument("--batched-concurrency", type=int, default=2, help="requests in flight (batched)")
    ap.add_argument("--max-batch", type=int, default=16, help="the server's largest scoring call")
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time bound per phase")
    args = ap.parse_args()
    if args.prm:
        from dreamprm_code.prm import load_prm

        prm, what = load_prm(args.prm), f"PRM {args.prm}"
    else:
        prm, what = tiny_prm(), "tiny random PRM (Qwen2 config, hidden 64, 2 layers)"
    scorer = prm_scorer(prm)
    common = {"candidates": args.candidates, "max_seconds": args.max_seconds}
    phases = {
        "single (baseline)": run_phase(scorer, max_batch=1, wait_ms=0.0, per_request=1,
                                       concurrency=args.concurrency, **common),
        "queued": run_phase(scorer, max_batch=args.max_batch, wait_ms=args.wait_ms, per_request=1,
                            concurrency=args.concurrency, **common),
        f"batched ({args.per_request}/req)": run_phase(
            scorer, max_batch=args.max_batch, wait_ms=args.wait_ms, per_request=args.per_request,
            concurrency=args.batched_concurrency, **common),
    }
    print(f"# serve_bench: {what}; {args.candidates} candidates per phase, max {args.max_seconds:g} s per phase")
    cols = ("requests", "candidates", "errors", "rps", "cps", "p50_ms", "p99_ms", "mean_batch")
    print(f"{'phase':<22}" + "".join(f"{c:>12}" for c in cols))
    for name, r in phases.items():
        print(f"{name:<22}" + "".join(f"{r[c]:>12.2f}" if isinstance(r[c], float) else f"{r[c]:>12}" for c in cols))
    base = phases["single (baseline)"]["cps"]
    for name, r in phases.items():
        if base:
            print(f"candidates/s vs baseline, {name}: {r['cps'] / base:.2f}x")


if __name__ == "__main__":
    main()
