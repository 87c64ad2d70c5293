"""Every heavy stage on a real two-node Ray cluster started here on this machine (a head and a
second node, one CPU each, ``ray.cluster_utils.Cluster``): same results as in-process, a sandbox
actor killed mid-run changes nothing, and a driver killed with SIGKILL resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import test_labeling_support as support
from dreamprm_code.distributed import LOOPBACK, LOOPBACK_ENV, Fleet, RayOptions, ray_session
from dreamprm_code.errors import UserError
from dreamprm_code.execution import Executor
from dreamprm_code.execution.commands import execute_solutions
from dreamprm_code.io import atomic_write_jsonl
from dreamprm_code.records import Problem, Solution, TestCase

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'dreamprm-code[ray]')")
psutil = pytest.importorskip("psutil", reason="psutil (a Ray dependency) finds the actor processes to kill")

SRC = str(Path(__file__).resolve().parents[1] / "src")
SUM = Problem("sum", "t", "s", "atcoder", "easy", [TestCase("stdin", "1 2\n", "3\n")])
GOOD = "a, b = map(int, input().split())\nprint(a + b)"


def slow(i: int, seconds: float = 0.3) -> Solution:
    """A passing program that takes ``seconds``, distinct per ``i`` (no cache hit)."""
    return Solution("sum", i, f"import time\ntime.sleep({seconds})\n{GOOD}\n# {i}")


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each, on this machine; workers import this checkout."""
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = os.pathsep.join([SRC, str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "include_dashboard": False, "node_ip_address": LOOPBACK})
    c.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    ray.init(address=c.address, log_to_driver=False)
    assert c.address.startswith(f"{LOOPBACK}:")
    assert [n["NodeManagerAddress"] for n in ray.nodes()] == [LOOPBACK, LOOPBACK]
    ray.cloudpickle.register_pickle_by_value(support)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _actor_processes(name: str) -> list:
    """This test's Ray worker processes running an actor of class ``name``."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if any(name in part for part in p.cmdline()[:1]) or p.name().startswith(f"ray::{name}"):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def test_two_nodes_host_one_actor_each_and_give_the_local_verdicts(cluster, tmp_path):
    assert sum(n["Alive"] for n in ray.nodes()) == 2
    sols = [Solution("sum", 0, GOOD), Solution("sum", 1, "print(0)"), Solution("sum", 2, "print("),
            *[slow(i, 0.05) for i in range(3, 9)]]
    local = execute_solutions([SUM], sols, tmp_path / "local.jsonl", workers=1, progress=False)
    remote = execute_solutions([SUM], sols, tmp_path / "ray.jsonl", workers=1, progress=False,
                               ray=RayOptions("auto"))
    assert [(s.id, s.verdict) for s in remote] == [(s.id, s.verdict) for s in local]
    assert [s.verdict for s in remote[:3]] == ["pass", "wrong_answer", "compile_error"]
    assert sorted(_ids(tmp_path / "ray.jsonl")) == sorted(s.id for s in sols)


def test_fleet_hands_work_to_the_free_actor(cluster):
    class Sleeper:
        def ready(self) -> bool:
            return True

        def run(self, seconds: float) -> int:
            time.sleep(seconds)
            return os.getpid()

    with ray_session("auto") as r:
        fleet = Fleet(r, Sleeper, (), actors=2)
        try:
            # one long task and six short ones: the actor that is not busy takes every short one
            order = list(fleet.call("run", [1.5] + [0.01] * 6))
        finally:
            fleet.close()
    pids = dict(order)
    assert order[-1][0] == 0, "the long task finishes last"
    assert len({pids[k] for k in range(1, 7)}) == 1 and pids[1] != pids[0]


def test_an_actor_that_cannot_load_is_one_user_error_not_endless_restarts(cluster):
    class Broken:
        def __init__(self) -> None:
            raise UserError("no such policy 'nope'", field="policy")

        def ready(self) -> bool:
            return True

    with ray_session("auto") as r:
        fleet = Fleet(r, Broken, (), actors=2)
        try:
            with pytest.raises(UserError, match="failed to start.*no such policy 'nope'"):
                list(fleet.call("ready", [1, 2]))
            assert fleet.failures == 0
        finally:
            fleet.close()


def test_sandbox_actor_killed_mid_run_loses_nothing(cluster, tmp_path):
    sols = [slow(i) for i in range(14)]
    out = tmp_path / "graded.jsonl"
    done: dict = {}

    def run() -> None:
        try:
            done["result"] = execute_solutions([SUM], sols, out, workers=1, progress=False, ray=RayOptions("auto"))
        except BaseException as exc:  # reported by the assertion below
            done["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and killed is None:
        if out.exists() and len(_ids(out)) >= 2:
            victims = _actor_processes("ExecActor")
            if victims:
                killed = victims[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(120)
    assert killed is not None, "no sandbox actor process was found to kill"
    assert "error" not in done, done.get("error")
    assert [s.verdict for s in done["result"]] == ["pass"] * len(sols)
    ids = _ids(out)
    assert sorted(ids) == sorted(s.id for s in sols) and len(ids) == len(set(ids))


def test_a_node_lost_mid_run_loses_nothing(cluster, tmp_path):
    node = cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
    cluster.wait_for_nodes()
    sols = [slow(i) for i in range(15)]
    out = tmp_path / "graded.jsonl"
    done: dict = {}

    def run() -> None:
        try:  # one sandbox actor per CPU: one of the three lives on the node removed below
            done["result"] = execute_solutions([SUM], sols, out, workers=1, progress=False, ray=RayOptions("auto"))
        except BaseException as exc:
            done["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.exists() and len(_ids(out)) >= 3):
        time.sleep(0.05)
    assert len(_ids(out)) < len(sols), "the run finished before the node could be removed"
    cluster.remove_node(node, allow_graceful=False)  # its raylet and workers are killed
    thread.join(120)
    assert not thread.is_alive(), "the run did not finish after the node was lost"
    assert "error" not in done, done.get("error")
    assert [s.verdict for s in done["result"]] == ["pass"] * len(sols)
    ids = _ids(out)
    assert sorted(ids) == sorted(s.id for s in sols) and len(ids) == len(set(ids))


def test_driver_killed_with_sigkill_resumes(cluster, tmp_path):
    problems, solutions, out = tmp_path / "problems.jsonl", tmp_path / "sols.jsonl", tmp_path / "graded.jsonl"
    sols = [slow(i) for i in range(16)]
    atomic_write_jsonl(problems, [SUM.to_dict()])
    atomic_write_jsonl(solutions, [s.to_dict() for s in sols])
    cmd = [sys.executable, "-m", "dreamprm_code", "execute", "--problems", str(problems), "--solutions",
           str(solutions), "--out", str(out), "--workers", "1", "--ray", cluster.address]
    env = {**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"]}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(_ids(out)) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    first = _ids(out)
    assert 3 <= len(first) < len(sols)
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    ids = _ids(out)
    assert ids[: len(first)] == first, "the re-run appends; what was written stays"
    assert sorted(ids) == sorted(s.id for s in sols) and len(ids) == len(set(ids))


def test_generate_on_policy_actors_writes_the_local_solutions(cluster, tmp_path):
    from dreamprm_code.generate.solutions import generate_solutions
    from dreamprm_code.policy import SamplingParams

    problems = [support.PROBLEM, *[Problem(f"sq/{k}", "t", support.PROBLEM.statement, "test", "easy",
                                           support.PROBLEM.tests, entry_point="solve") for k in (2, 3)]]
    sampling = SamplingParams(temperature=0.7, max_new_tokens=64, seed=3)

    def run(path: Path, **kw) -> list[Solution]:
        with Executor(workers=1) as ex:
            return generate_solutions(problems, support.ScriptedPolicy(), 3, sampling, out=path, executor=ex,
                                      open_fence=True, batch_size=1, show_progress=False, **kw)

    local = run(tmp_path / "local.jsonl")
    remote = run(tmp_path / "ray.jsonl", ray=RayOptions("auto", actors=2))

    def plain(sols: list[Solution]) -> list[tuple]:
        return [(s.id, s.code, s.verdict) for s in sols]

    assert plain(remote) == plain(local)
    assert {s.verdict for s in remote} == {"pass", "wrong_answer"}


def test_score_on_prm_actors_matches_in_process(cluster, tmp_path):
    import torch

    from dreamprm_code.prm import load_prm
    from dreamprm_code.prm.checkpoint import save_prm
    from dreamprm_code.prm.model import build_prm
    from dreamprm_code.prm.score import score_to_file
    from tiny_models import save_tiny_backbone

    torch.manual_seed(0)
    prm, tok = build_prm(str(save_tiny_backbone(tmp_path / "backbone", hidden_size=32, layers=1)), lora_r=0)
    prm.attach_format(tok, 256, 64)
    prm.spec = {"backbone": "tiny", "precision": "fp32", "name": "tiny"}
    ckpt = save_prm(prm, tmp_path / "prm")
    sols = [support.passing_solution(0), support.failing_solution(1), support.failing_solution(2)]
    local = tmp_path / "local.jsonl"
    score_to_file(load_prm(ckpt, device="cpu"), [support.PROBLEM], sols, local, chunk=1, progress=False)
    remote = tmp_path / "ray.jsonl"
    assert score_to_file(ckpt, [support.PROBLEM], sols, remote, chunk=1, progress=False,
                         ray=RayOptions("auto", actors=2)) == 3
    by_id = {r["solution_id"]: r["scores"] for r in map(json.loads, remote.read_text().splitlines())}
    for r in map(json.loads, local.read_text().splitlines()):
        assert by_id[r["solution_id"]] == pytest.approx(r["scores"], abs=1e-5)
    assert score_to_file(ckpt, [support.PROBLEM], sols, remote, progress=False, ray=RayOptions("auto")) == 0


def test_label_on_the_cluster_gives_the_in_process_labels(cluster, tmp_path):
    from dreamprm_code.labeling import LabelConfig, label_solutions

    sols = [support.passing_solution(0), support.failing_solution(1), support.failing_solution(2)]
    with Executor(workers=1) as ex:
        local = label_solutions(sols, [support.PROBLEM], support.ScriptedPolicy(), ex,
                                LabelConfig(rollouts=3), tmp_path / "local.jsonl", show_progress=False)
        driver_policy = support.ScriptedPolicy()
        remote = label_solutions(
            sols, [support.PROBLEM], driver_policy, ex,
            LabelConfig(rollouts=3, ray="auto", concurrency=4, ray_policy_actors=1, ray_exec_actors=1),
            tmp_path / "ray.jsonl", show_progress=False,
        )

    def plain(labels: list) -> list[tuple]:
        return [(x.key, x.rollouts, x.passed, x.mc_value) for x in labels]

    assert plain(remote) == plain(local)
    assert driver_policy.calls == [], "generation ran in the Ray actors"


def test_without_ray_the_option_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UserError, match="pip install 'dreamprm-code\\[ray\\]'"), ray_session("auto"):
        pass


def test_ray_local_binds_and_advertises_loopback_only():
    """``--ray local`` in a fresh process (without this suite's pinned env) starts a private
    instance whose node, GCS and driver all use 127.0.0.1."""
    code = ("from dreamprm_code.distributed import ray_session\n"
            "with ray_session('local') as r:\n"
            "    print(r.get_runtime_context().gcs_address, [n['NodeManagerAddress'] for n in r.nodes()])\n")
    env = {k: v for k, v in os.environ.items() if k not in LOOPBACK_ENV and k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = SRC
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0].startswith(f"{LOOPBACK}:"), out.stdout
    assert out.stdout.strip().endswith(f"['{LOOPBACK}']"), out.stdout


def test_the_pipeline_on_the_cluster_writes_the_in_process_outputs(cluster, tmp_path):
    from dreamprm_code.pipeline.config import load_config
    from dreamprm_code.pipeline.run import run_pipeline
    from test_pipeline_e2e import FakePolicyServer, write_setup
    from tiny_models import save_tiny_backbone

    backbone = save_tiny_backbone(tmp_path / "tiny", hidden_size=32, layers=1)
    server = FakePolicyServer()
    try:
        runs = {}
        for name, ray_address in (("local", None), ("ray", "auto")):
            cfg = write_setup(tmp_path, server.url, backbone, tmp_path / name, **{"train.variants": ["prm"]})
            config = load_config(str(cfg), {"ray": ray_address} if ray_address else {})
            run_pipeline(config, show_progress=False)
            runs[name] = tmp_path / name
    finally:
        server.close()

    def rows(path: Path, key: str, fields: tuple[str, ...]) -> list[tuple]:
        recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        return sorted(tuple([r[key], *(json.dumps(r.get(f), sort_keys=True) for f in fields)]) for r in recs)

    for rel, key, fields in (("solutions/train.jsonl", "id", ("code", "verdict")),
                             ("solutions/eval.jsonl", "id", ("code", "verdict")),
                             ("labels/labels.jsonl", "solution_id", ("step_index", "mc_value"))):
        assert rows(runs["ray"] / rel, key, fields) == rows(runs["local"] / rel, key, fields), rel
    local = {r["solution_id"]: r["scores"] for r in map(json.loads, (runs["local"] / "scores/prm.jsonl").read_text().splitlines())}
    remote = {r["solution_id"]: r["scores"] for r in map(json.loads, (runs["ray"] / "scores/prm.jsonl").read_text().splitlines())}
    assert remote.keys() == local.keys() and all(remote[k] == pytest.approx(local[k], abs=1e-5) for k in local)
