"""PRM-guided function-level beam search, with a scripted policy and a tiny real model."""

from __future__ import annotations

import numpy as np
import pytest

from dreamprm_code.cof import split_steps
from dreamprm_code.policy import FINISH_LENGTH, FINISH_STOP, Completion, Prompt, SamplingParams
from dreamprm_code.records import Problem
from dreamprm_code.records import TestCase as Case
from dreamprm_code.scaling.search import SearchConfig, best_of_n_at_budget, search_problem

GOOD = '''def main():
    """Read n, print the sum of 1..n."""
    n = int(input())
    print(total(n))


def total(n):
    """Closed form."""
    return n * (n + 1) // 2


main()
'''
BAD = GOOD.replace("n * (n + 1) // 2", "n * n")
OTHER = GOOD.replace("print(total(n))", "print(helper(n))").replace("def total(n)", "def helper(n)")
PROBLEM = Problem("P1", "sum", "Print 1 + 2 + ... + n.", "test", "easy", [Case("stdin", "3\n", "6\n")])


class ScriptedPolicy:
    """Continues a prefix with the rest of one of a few fixed programs, chosen by the seed.

    A stand-in for the LLM inside this unit test of the search logic; tokens are counted as
    whitespace-separated words.
    """

    name = "scripted"

    def __init__(self, programs: list[str], cut_every: int = 0) -> None:
        self.programs = programs
        self.calls: list[int] = []
        self.cut_every = cut_every

    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        out = []
        self.calls.append(len(prompts) * n)
        for p in prompts:
            prefix = (p.prefill or "").removeprefix("```python\n")
            rng = np.random.default_rng(p.seed)
            options = [g for g in self.programs if g.startswith(prefix)] or self.programs
            comps = []
            for _ in range(n):
                prog = options[int(rng.integers(len(options)))]
                rest = prog[len(prefix):] if prog.startswith(prefix) else prog
                words = len(rest.split()) + 1
                comps.append(Completion(rest + "```\n", prompt_tokens=50, completion_tokens=words,
                                        finish_reason=FINISH_STOP))
            out.append(comps)
        return out


def oracle_scorer(problems, solutions):
    """1 for steps that occur verbatim in GOOD, else 0.1."""
    return [[1.0 if s.code[st.start:st.end].strip() in GOOD else 0.1 for st in s.steps] for s in solutions]


def test_search_finds_the_good_program_and_counts_tokens():
    policy = ScriptedPolicy([BAD, GOOD, OTHER])
    res = search_problem(PROBLEM, policy, oracle_scorer, SearchConfig(beam=2, expand=3, max_steps=4, seed=1))
    assert res.code == GOOD
    assert res.score == pytest.approx(1.0)
    assert res.samples == sum(policy.calls)
    assert res.completion_tokens > 0 and res.prompt_tokens == 50 * res.samples
    assert all(c.code.endswith("main()\n") for c in res.finished)
    sol = res.to_solution("scripted")
    assert sol.tokens["completion"] == res.completion_tokens
    assert [s.name for s in sol.steps][:2] == ["main", "total"]


def test_search_is_deterministic_given_seed():
    a = search_problem(PROBLEM, ScriptedPolicy([BAD, GOOD, OTHER]), oracle_scorer, SearchConfig(seed=3))
    b = search_problem(PROBLEM, ScriptedPolicy([BAD, GOOD, OTHER]), oracle_scorer, SearchConfig(seed=3))
    assert a.to_dict() == b.to_dict()


def test_beam_keeps_k_best_prefixes():
    """With beam 1 every call continues one prefix, and the kept prefix is the best-scored one."""

    class Recording(ScriptedPolicy):
        def generate(self, prompts, n, sampling):
            self.prefixes.append([(p.prefill or "").removeprefix("```python\n") for p in prompts])
            return super().generate(prompts, n, sampling)

    policy = Recording([BAD, GOOD])
    policy.prefixes = []
    # Neither program's rest is finished here, so the search must go step by step.
    res = search_problem(PROBLEM, policy, oracle_scorer, SearchConfig(beam=1, expand=4, max_steps=3, seed=2))
    assert [len(p) for p in policy.prefixes] == [1] * len(policy.prefixes)
    good_two_steps = GOOD[: GOOD.index("// 2\n") + 5]  # main() and total(), before the trailing call
    assert split_steps(good_two_steps)[-1].name == "total"
    assert good_two_steps in [p[0] for p in policy.prefixes]
    assert res.code == GOOD


def test_unfinished_continuations_are_not_programs():
    class Truncating(ScriptedPolicy):
        def generate(self, prompts, n, sampling):
            outs = super().generate(prompts, n, sampling)
            return [[Completion(c.text[:40], 5, 5, FINISH_LENGTH) for c in cs] for cs in outs]

    res = search_problem(PROBLEM, Truncating([GOOD]), oracle_scorer, SearchConfig(max_steps=2))
    assert res.code == "" and res.finished == []


def test_best_of_n_spends_the_same_budget():
    policy = ScriptedPolicy([BAD, GOOD])
    res = best_of_n_at_budget(PROBLEM, policy, oracle_scorer, SearchConfig(seed=0), completion_budget=60)
    assert res.completion_tokens >= 60
    assert res.completion_tokens - 60 < max(len(GOOD.split()), len(BAD.split())) + 2
    assert res.code in (GOOD, BAD)


@pytest.mark.slow
def test_search_runs_with_a_tiny_real_model_and_prm(tmp_path):
    """End to end with real `transformers` models (random weights): the mechanics, not quality."""
    from dreamprm_code.policy.hf import HFPolicy
    from dreamprm_code.prm.model import wrap_backbone
    from dreamprm_code.prm.score import prm_scorer
    from tiny_models import tiny_backbone, tiny_tokenizer

    tok = tiny_tokenizer()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "policy")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(tmp_path / "policy")
    policy = HFPolicy(str(tmp_path / "policy"))
    prm, _ = wrap_backbone(tiny_backbone(tok), tok, lora_r=0)
    prm.attach_format(tok, 512)
    config = SearchConfig(beam=2, expand=2, max_steps=2, sampling=SamplingParams(max_new_tokens=24))
    res = search_problem(PROBLEM, policy, prm_scorer(prm), config)
    assert res.samples >= config.expand  # the first call alone draws `expand` samples
    assert res.completion_tokens > 0 and res.completion_tokens <= res.samples * 24
    assert res.policy_calls >= 1


def test_run_search_appends_and_resumes(tmp_path):
    from dreamprm_code.io import read_jsonl
    from dreamprm_code.scaling.search import run_search

    probs = [PROBLEM, Problem("P2", "sum", "again", "test", "hard", [Case("stdin", "3\n", "6\n")])]
    policy = ScriptedPolicy([BAD, GOOD])
    rows = run_search(probs[:1], policy, oracle_scorer, SearchConfig(), tmp_path, compare=True, execute=False,
                      show_progress=False)
    assert [r["method"] for r in rows] == ["search", "best-of-n"]
    assert rows[0]["solved"] is None and rows[0]["problems"] == 1
    calls = len(policy.calls)
    # A second run with one more problem searches only the new one.
    rows = run_search(probs, policy, oracle_scorer, SearchConfig(), tmp_path, compare=True, execute=False,
                      show_progress=False)
    assert rows[0]["problems"] == 2
    recs = read_jsonl(tmp_path / "search.jsonl")
    assert [r["problem_id"] for r in recs] == ["P1", "P2"]
    assert recs[0]["solution"]["tokens"]["completion"] == recs[0]["completion_tokens"]
    bon = read_jsonl(tmp_path / "bon.jsonl")
    assert all(b["completion_tokens"] >= s["completion_tokens"] for b, s in zip(bon, recs, strict=True))
    assert len(policy.calls) > calls


@pytest.mark.slow
def test_search_cli_with_tiny_hf_policy_and_saved_prm(tmp_path):
    """`dreamprm-code search` end to end: a saved tiny PRM checkpoint and a tiny `hf:` policy."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from typer.testing import CliRunner

    from dreamprm_code.cli import app
    from dreamprm_code.io import atomic_write_jsonl, read_jsonl
    from dreamprm_code.prm import save_prm
    from dreamprm_code.prm.model import wrap_backbone
    from tiny_models import tiny_backbone, tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    prm, _ = wrap_backbone(tiny_backbone(tok), tok, lora_r=0)
    prm.attach_format(tok, 512)
    save_prm(prm, tmp_path / "prm")
    atomic_write_jsonl(tmp_path / "problems.jsonl", [PROBLEM.to_dict()])
    args = ["search", "--problems", str(tmp_path / "problems.jsonl"), "--policy", f"hf:{tmp_path / 'policy'}",
            "--prm", str(tmp_path / "prm"), "--beam", "2", "--expand", "2", "--max-steps", "2",
            "--max-new-tokens", "16", "--out", str(tmp_path / "out"), "--compare", "--no-execute"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best-of-n" in result.output
    recs = read_jsonl(tmp_path / "out" / "search.jsonl")
    assert len(recs) == 1 and recs[0]["completion_tokens"] > 0
    bon = read_jsonl(tmp_path / "out" / "bon.jsonl")
    assert bon[0]["completion_tokens"] >= recs[0]["completion_tokens"]


def test_out_of_steps_prefers_finished_programs():
    """After max_steps, unfinished prefixes are candidates only when nothing finished."""
    res = search_problem(PROBLEM, ScriptedPolicy([GOOD]), oracle_scorer, SearchConfig(max_steps=1, expand=2))
    assert res.code == GOOD  # the finished reply, not the kept one-function prefix (which also scores 1.0)
    assert {c.origin for c in res.finished} == {"finished"}
