"""``execute`` of the APPS pool on Ray: 1 node vs 2 local nodes, and Ray's dispatch overhead.

    python bench/ray_execute.py [--limit 30] [--timeout 6] [--out FILE.json]

The APPS MapCoder pool (``shared/data/pools/apps-mapcoder`` against ``apps-150``, graded on the
tests its labels were made on, as ``bench/execution_pools.py`` does), every k-th candidate so a
subset spans every pool file. In the same run, on the same candidates, with the same limits:

  local 1  - the in-process Executor, 1 sandbox worker (no Ray);
  ray 1    - Ray with one node of 1 CPU: one sandbox actor of 1 worker (the dispatch overhead);
  local 2  - the in-process Executor, 2 workers (what 2 nodes should approach);
  ray 2    - the same cluster with a second local node of 1 CPU: two sandbox actors;

and Ray's own cost per task (empty batches through the same actor path), which the wall times
of a loaded machine hide.

The nodes are ``ray.cluster_utils.Cluster`` raylets on this machine; each Ray row includes
starting its actors (their sandbox workers), not starting the cluster. Verdicts are compared
with ``local 1``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from dreamprm_code.data import load_solutions
from dreamprm_code.distributed import (
    LOOPBACK,
    ExecActor,
    Fleet,
    RayOptions,
    execute_on_ray,
    pin_ray_to_loopback,
)
from dreamprm_code.execution import Executor, Limits
from dreamprm_code.io import atomic_write_json
from execution_agreement import pool_sets

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def apps_items(data: Path, limit: int) -> list[tuple]:
    problems, folder = pool_sets(data)["apps"]
    by_id = {p.id: p for p in problems}
    items = []
    for path in sorted(folder.glob("*.jsonl")):
        items += [(by_id[s.problem_id], s.code) for s in load_solutions(path, problems=problems)
                  if s.problem_id in by_id]
    if limit and limit < len(items):
        items = items[:: len(items) // limit][:limit]
    return items


def local(items: list[tuple], limits: Limits, workers: int) -> tuple[float, list[str]]:
    with Executor(limits, workers=workers) as ex:
        t = time.monotonic()
        res = ex.run_many(items, progress=False)
        return time.monotonic() - t, [r.verdict for r in res]


def on_ray(items: list[tuple], limits: Limits) -> tuple[float, list[str]]:
    verdicts: list[str] = [""] * len(items)

    def keep(i: int, res) -> None:
        verdicts[i] = res.verdict

    t = time.monotonic()
    execute_on_ray(RayOptions("auto"), items, keep, limits=limits, workers=1, progress=False)
    return time.monotonic() - t, verdicts


def dispatch_ms(limits: Limits, tasks: int = 300) -> float:
    """Ray's own cost per task: empty batches through the same Fleet and sandbox actor."""
    import ray

    fleet = Fleet(ray, ExecActor, (limits, 1, "auto"), actors=1)
    try:
        list(fleet.call("run_batch", [[]]))  # the actor is up
        t = time.monotonic()
        for _ in fleet.call("run_batch", [[] for _ in range(tasks)]):
            pass
        return 1000 * (time.monotonic() - t) / tasks
    finally:
        fleet.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=30, help="candidates (every k-th of the pool); 0 = all")
    ap.add_argument("--timeout", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    pin_ray_to_loopback()  # before Ray is imported: it reads the switch at import
    import ray
    from ray.cluster_utils import Cluster

    items = apps_items(args.data, args.limit)
    limits = Limits(timeout=args.timeout)
    load = os.getloadavg()
    print(f"{len(items)} APPS candidates, {sum(len(p.tests) for p, _ in items)} tests, {args.timeout:g} s per test, "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([*sys.path[:1], here, os.environ.get("PYTHONPATH", "")])
    rows: list[tuple[str, float, list[str]]] = []

    def add(name: str, wall: float, verdicts: list[str]) -> None:
        rows.append((name, wall, verdicts))
        print(f"  {name}: {wall:.1f} s", flush=True)

    wall, base = local(items, limits, 1)
    add("local 1 (Executor, 1 worker)", wall, base)
    t = time.monotonic()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK})
    ray.init(address=cluster.address, log_to_driver=False)
    start_s = time.monotonic() - t
    try:
        add("ray 1 node (1 actor x 1 worker)", *on_ray(items, limits))
        per_task = dispatch_ms(limits)
        print(f"  Ray dispatch: {per_task:.2f} ms per task (empty batch, one actor)", flush=True)
        add("local 2 (Executor, 2 workers)", *local(items, limits, 2))
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        add("ray 2 nodes (2 actors x 1 worker)", *on_ray(items, limits))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"cluster start (head): {start_s:.1f} s; Ray dispatch {per_task:.2f} ms per task; "
          f"batches of up to 8 candidates, {1000 * rows[0][1] / len(items):.0f} ms per candidate locally")
    print(f"{'run':36s} {'wall s':>7s} {'cand/s':>7s} {'vs local 1':>10s} {'verdicts = local 1':>19s}")
    out = []
    for name, wall, verdicts in rows:
        same = sum(a == b for a, b in zip(verdicts, base, strict=True))
        print(f"{name:36s} {wall:7.1f} {len(items) / wall:7.2f} {rows[0][1] / wall:9.2f}x {same:>12d}/{len(items)}")
        out.append({"run": name, "wall_s": wall, "cand_per_s": len(items) / wall, "same_verdicts": same})
    after = os.getloadavg()
    print(f"load after: {after[0]:.1f} {after[1]:.1f} {after[2]:.1f}")
    if args.out:
        atomic_write_json(args.out, {"candidates": len(items), "timeout": args.timeout, "load_before": load,
                                     "load_after": after, "cluster_start_s": start_s, "dispatch_ms_per_task": per_task, "rows": out})


if __name__ == "__main__":
    main()
