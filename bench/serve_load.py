"""Load test of the PRM scoring service on 127.0.0.1: requests/s and p50/p99 latency.

The baseline, measured in the same run, is the same service with batching off (``max_batch=1``):
the ratio is what the request queue buys. The PRM is a tiny random one (``--tiny``, default) or
a real checkpoint (``--prm DIR``). Bounded: ``--requests`` in all, ``--max-seconds`` per phase.

    python bench/serve_load.py --requests 400 --concurrency 32
    python bench/serve_load.py --prm runs/demo/prm --requests 100 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

from dreamprm_code.scaling.serve import ServerThread, make_app, prm_scorer

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


def tiny_prm():
    from dreamprm_code.prm.model import wrap_backbone
    from tiny_models import tiny_backbone, tiny_tokenizer

    tok = tiny_tokenizer()
    prm, _ = wrap_backbone(tiny_backbone(tok, hidden_size=64, layers=2), tok, lora_r=0)
    prm.attach_format(tok, 1024)
    return prm


async def _load(url: str, requests: int, concurrency: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    deadline = time.perf_counter() + max_seconds
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as c:

        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                if time.perf_counter() > deadline:
                    return
                body = {"statement": f"Problem {i}: print the largest sum of two numbers.", "code": CODE + "#" * (i % 7)}
                t0 = time.perf_counter()
                r = await c.post("/score", json=body)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        await c.post("/score", json={"statement": "warm-up", "code": CODE})
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        wall = time.perf_counter() - t0
        stats = (await c.get("/stats")).json()
    lat = sorted(latencies)
    return {
        "done": len(lat),
        "errors": errors,
        "rps": len(lat) / wall,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "mean_batch": stats["mean_batch"],
    }


def run_phase(scorer, *, max_batch: int, wait_ms: float, requests: int, concurrency: int, max_seconds: float) -> dict:
    app = make_app(scorer, max_batch=max_batch, max_wait_ms=wait_ms)
    with ServerThread(app) as srv:
        return asyncio.run(_load(srv.url, requests, concurrency, max_seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm", help="PRM checkpoint directory (default: a tiny random PRM)")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="time bound per phase")
    args = ap.parse_args()
    if args.prm:
        from dreamprm_code.prm import load_prm

        prm, what = load_prm(args.prm), f"PRM {args.prm}"
    else:
        prm, what = tiny_prm(), "tiny random PRM (Qwen2 config, hidden 64, 2 layers)"
    scorer = prm_scorer(prm)
    common = {"requests": args.requests, "concurrency": args.concurrency, "max_seconds": args.max_seconds}
    base = run_phase(scorer, max_batch=1, wait_ms=0.0, **common)
    batched = run_phase(scorer, max_batch=args.max_batch, wait_ms=args.wait_ms, **common)
    print(f"# serve_load: {what}; {args.requests} requests, concurrency {args.concurrency}")
    print(f"{'figure':<14}{'batched':>12}{'baseline (max_batch=1)':>26}{'ratio':>9}")
    for key in ("rps", "p50_ms", "p99_ms", "mean_batch"):
        b, u = batched[key], base[key]
        ratio = b / u if u else float("nan")
        print(f"{key:<14}{b:>12.2f}{u:>26.2f}{ratio:>8.2f}x")
    print(f"{'completed':<14}{batched['done']:>12}{base['done']:>26}")
    print(f"{'errors':<14}{batched['errors']:>12}{base['errors']:>26}")


if __name__ == "__main__":
    main()
