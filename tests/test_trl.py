"""TRL interop: our PRM as a GRPO reward (real trl, tiny models, CPU) and TRL's stepwise labels."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from dreamprm_code.errors import UserError
from dreamprm_code.labeling.trl_format import labels_to_trl, read_trl, trl_to_labels, write_trl
from dreamprm_code.prm.model import build_prm
from dreamprm_code.prm.reward import PRMReward
from dreamprm_code.records import Problem, StepLabel
from tiny_models import save_tiny_backbone, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOOD = "```python\ndef solve(n):\n    return n * (n + 1) // 2\n\n\nprint(solve(int(input())))\n```"


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    model, tok = build_prm(str(save_tiny_backbone(tmp_path_factory.mktemp("tiny"))), lora_r=0)
    model.attach_format(tok, 256)
    return model


def test_reward_scores_code_and_matches_score_solutions(prm):
    from dreamprm_code.prm.score import score_solutions
    from dreamprm_code.records import Solution

    reward = PRMReward(prm, aggregate="min")
    assert reward.__name__ == "dreamprm_min"
    got = reward(prompts=["Sum 1..n.", "Sum 1..n."], completions=[GOOD, "   "])
    code = GOOD.split("\n", 1)[1].rsplit("\n```", 1)[0]
    problem = Problem(id="q", title="", statement="Sum 1..n.", platform="", difficulty="medium", tests=[])
    want = min(score_solutions(prm, [problem], [Solution("q", 0, code)])[0].scores)
    assert got[0] == pytest.approx(want, abs=1e-6)
    assert got[1] == 0.0
    chat = reward(prompts=[[{"role": "user", "content": "Sum 1..n."}]],
                  completions=[[{"role": "assistant", "content": GOOD}]])
    assert chat[0] == pytest.approx(want, abs=1e-6)


def test_reward_uses_problem_id_column(prm):
    problem = Problem(id="p9", title="", statement="A different statement.", platform="", difficulty="easy", tests=[])
    by_id = PRMReward(prm, problems=[problem])(prompts=["x"], completions=[GOOD], problem_id=["p9"])
    direct = PRMReward(prm)(prompts=["A different statement."], completions=[GOOD])
    assert by_id == pytest.approx(direct, abs=1e-6)


def test_grpo_step_runs_with_our_reward(prm, tmp_path):
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    ))
    calls = []
    reward = PRMReward(prm)

    def counting(prompts, completions, **kw):
        calls.append(len(completions))
        return reward(prompts, completions, **kw)

    counting.__name__ = reward.__name__
    data = Dataset.from_list([{"prompt": "def solve(n):\n"}, {"prompt": "for i in range(n):\n"}] * 2)
    args = GRPOConfig(
        output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2, max_completion_length=12,
        max_steps=1, learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
        bf16=False, dataloader_num_workers=0,
    )
    before = [p.detach().clone() for p in policy.parameters()]
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward, counting], args=args, train_dataset=data,
                          processing_class=tok)
    trainer.train()
    assert trainer.state.global_step == 1 and calls == [4]
    logged = [r for r in trainer.state.log_history if f"rewards/{reward.__name__}/mean" in r]
    assert logged and 0.0 <= logged[0][f"rewards/{reward.__name__}/mean"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))


class _Service(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Service.seen.append((self.headers.get("Authorization"), body))
        rewards = [len(q) / 1000 for q in body["query"]] if self.path == "/reward" else []
        data = json.dumps({"rewards": rewards}).encode()
        self.send_response(200 if self.path != "/broken" else 500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_reward_over_http_uses_openrlhf_contract(service):
    _Service.seen.clear()
    reward = PRMReward(url=service + "/reward", token="s3cret")
    got = reward(prompts=["P1", "P2"], completions=["abc", "de"], completion_ids=[[1], [2]])
    assert got == [0.005, 0.004]
    auth, body = _Service.seen[0]
    assert auth == "Bearer s3cret" and body == {"query": ["P1abc", "P2de"], "prompts": ["P1", "P2"]}
    with pytest.raises(UserError, match="answered 500"):
        PRMReward(url=service + "/broken")(prompts=["a"], completions=["b"])
    with pytest.raises(UserError, match="0 rewards for 1"):
        PRMReward(url=service + "/short")(prompts=["a"], completions=["b"])
    with pytest.raises(UserError, match="not both"):
        PRMReward()


def _labels():
    code = "import sys\n\ndef f(x):\n    return x\n\nprint(f(1))\n"
    cuts = [11, 38, len(code)]
    out = [StepLabel("p1#0", "p1", k, 3, code[:c], 4, p, p / 4, int(p > 0)) for k, (c, p) in enumerate(zip(cuts, (4, 1, 0), strict=True))]
    out.append(StepLabel("p1#1", "p1", 0, 2, "x = 1\n", 2, 2, 1.0, 1))  # its step 1 was never labelled
    return out


def test_export_matches_trl_layout_and_round_trips(tmp_path):
    problems = {"p1": Problem(id="p1", title="", statement="Print one.", platform="x", difficulty="easy", tests=[])}
    rows, cut = labels_to_trl(_labels(), problems)
    assert cut == 1 and len(rows) == 2
    row = rows[0]
    assert row["prompt"] == "Print one." and row["labels"] == [True, True, False]
    assert "".join(row["completions"]) == _labels()[2].prefix and row["completions"][0] == "import sys\n"
    for out in (tmp_path / "labels.jsonl", tmp_path / "ds"):
        write_trl(rows, out)
        back = read_trl(out)
        assert back == rows
        labels, probs = trl_to_labels(back)
        assert [lab.to_dict() for lab in labels] == [
            {**lab.to_dict(), "rollouts": 0, "passed": 0} for lab in _labels()
        ]
        assert [p.statement for p in probs] == ["Print one."]


def test_import_math_shepherd_style_rows():
    rows = [{"prompt": "What is 2+2?", "completions": ["Step 1: 2+2=4.", "The answer is 4."], "labels": [True, False]}]
    labels, probs = trl_to_labels(rows)
    assert [lab.prefix for lab in labels] == ["Step 1: 2+2=4.", "Step 1: 2+2=4.\nThe answer is 4."]
    assert [lab.mc_value for lab in labels] == [1.0, 0.0] and labels[0].problem_id == probs[0].id
    with pytest.raises(UserError, match=r"<rows>:1: field 'labels': must be a list of 2"):
        trl_to_labels([{"prompt": "q", "completions": ["a", "b"], "labels": [True]}])


def test_cli_export_import(tmp_path):
    from typer.testing import CliRunner

    from dreamprm_code.cli import app

    src = tmp_path / "ours.jsonl"
    src.write_text("".join(json.dumps(lab.to_dict()) + "\n" for lab in _labels()))
    runner = CliRunner()
    res = runner.invoke(app, ["labels", "export-trl", "--labels", str(src), "--out", str(tmp_path / "trl")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["labels", "import-trl", str(tmp_path / "trl"), "--out", str(tmp_path / "back.jsonl"),
                              "--problems-out", str(tmp_path / "problems.jsonl")])
    assert res.exit_code == 0, res.output
    back = [json.loads(x) for x in (tmp_path / "back.jsonl").read_text().splitlines()]
    assert [(b["solution_id"], b["prefix"], b["mc_value"]) for b in back] == [
        (lab.solution_id, lab.prefix, lab.mc_value) for lab in _labels()
    ]
    from dreamprm_code.data import load_problems

    assert [p.id for p in load_problems(str(tmp_path / "problems.jsonl"))] == ["p1"]
    res = runner.invoke(app, ["labels", "import-trl", str(src), "--out", str(tmp_path / "x.jsonl"),
                              "--problems-out", str(tmp_path / "y.jsonl")])
    assert isinstance(res.exception, UserError) and "no column 'completions'" in str(res.exception)
