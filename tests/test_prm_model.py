"""PRM input format, batches and the model: one pass must equal prefix-by-prefix (decision 3)."""

from __future__ import annotations

import math

import pytest
import torch

from dreamprm_code.errors import UserError
from dreamprm_code.prm.data import Example, collate, examples_from_labels, examples_from_solutions
from dreamprm_code.prm.format import PromptFormat, step_texts
from dreamprm_code.prm.model import wrap_backbone
from dreamprm_code.prm.score import (
    aggregate,
    score_examples,
    score_prefixes_separately,
    score_solutions,
)
from dreamprm_code.records import Problem, Solution, Step, StepLabel
from tiny_models import tiny_backbone, tiny_tokenizer

CODE = (
    "import sys\n\n"
    "def main():\n"
    '    """Read n, print the sum."""\n'
    "    n = int(input())\n"
    "    print(solve(n))\n\n\n"
    "def solve(n):\n"
    '    """Closed form."""\n'
    "    return n * (n + 1) // 2\n\n\n"
    "if __name__ == '__main__':\n"
    "    main()\n"
)


def _steps(code: str) -> list[Step]:
    a = code.index("def solve")
    b = code.index("if __name__")
    return [Step("main", "function", 0, a), Step("solve", "function", a, b), Step("tail", "block", b, len(code))]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def prm(tok):
    torch.manual_seed(0)
    model, _ = wrap_backbone(tiny_backbone(tok), tok, lora_r=4, head_hidden=8)
    # LoRA's B matrices start at zero; make them non-zero so the adapters take part.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)
    model.attach_format(tok, 512)
    return model.eval()


def _problem(statement: str = "Given n, print 1 + 2 + ... + n.") -> Problem:
    return Problem(id="p1", title="t", statement=statement, platform="x", difficulty="easy", tests=[])


def test_step_tokens_are_identical_in_every_prefix(tok):
    fmt = PromptFormat(tok, 512)
    texts = step_texts(CODE, _steps(CODE))
    full = fmt.encode("stmt", "", texts)[0]
    for k in range(1, len(texts) + 1):
        part = fmt.encode("stmt", "", texts[:k])[0]
        assert part.input_ids == full.input_ids[: len(part.input_ids)]
        assert part.step_token_index == full.step_token_index[:k]
        assert part.step_token_index[-1] == len(part.input_ids) - 1


def test_one_pass_equals_prefix_by_prefix_tiny(prm):
    problem = _problem()
    sols = [
        Solution("p1", 0, CODE, steps=_steps(CODE)),
        Solution("p1", 1, CODE + "print(0)\n", steps=_steps(CODE + "print(0)\n")),
    ]
    one = score_solutions(prm, [problem], sols, batch_tokens=4096)
    sep = score_prefixes_separately(prm, [problem], sols, batch_tokens=4096)
    for s, ref in zip(one, sep, strict=True):
        assert len(s.scores) == 3
        assert s.scores == pytest.approx(ref, abs=1e-5)
    # the two candidates differ only in the last step: same first two scores, different last
    assert one[0].scores[:2] == pytest.approx(one[1].scores[:2], abs=1e-6)
    assert one[0].scores[2] != pytest.approx(one[1].scores[2], abs=1e-7)


def test_padding_does_not_change_scores(prm, tok):
    fmt = prm.prompt_format
    sol = Solution("p1", 0, CODE, steps=_steps(CODE))
    short = Solution("p1", 1, "def main():\n    pass\n", steps=None)
    ex = examples_from_solutions([sol], fmt, {})
    alone = score_examples(prm, ex)[0]
    both = score_examples(prm, ex + examples_from_solutions([short], fmt, {}), batch_tokens=10**6)[0]
    assert alone == pytest.approx(both, abs=1e-5)


def test_no_vocabulary_sized_tensor(prm, tok):
    vocab = len(tok)
    assert vocab not in (64, 128, 8, 32)  # the tiny model's other widths
    seen: list[tuple[int, ...]] = []

    def hook(_mod, _inp, out):
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if isinstance(o, torch.Tensor):
                seen.append(tuple(o.shape))
            elif hasattr(o, "last_hidden_state"):
                seen.append(tuple(o.last_hidden_state.shape))

    handles = [m.register_forward_hook(hook) for m in prm.modules()]
    try:
        score_solutions(prm, [_problem()], [Solution("p1", 0, CODE, steps=_steps(CODE))])
    finally:
        for h in handles:
            h.remove()
    assert seen, "hooks saw nothing"
    assert all(vocab not in shape[1:] for shape in seen), [s for s in seen if vocab in s[1:]]


def test_backbone_with_lm_head_is_refused(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(UserError, match="base model"):
        wrap_backbone(lm, tok, lora_r=0)


def test_long_statement_is_cut_in_the_middle_and_code_kept(tok):
    fmt = PromptFormat(tok, 128)
    texts = ["def main():\n    return 1\n", "\n\ndef solve():\n    return 2\n"]
    statement = "first words " + "filler " * 200 + "last words"
    (view,) = fmt.encode(statement, "", texts)
    assert len(view.input_ids) <= 128
    text = tok.decode(view.input_ids)
    assert text.startswith("### Problem\nfirst")
    assert "[...]" in text and "last words" in text
    assert text.endswith("### Solution\n" + "".join(texts))
    # the header does not depend on the code: prefix 1 is the start of the whole input
    (part,) = fmt.encode(statement, "", texts[:1])
    assert part.input_ids == view.input_ids[: len(part.input_ids)]


def test_code_longer_than_max_length_is_scored_in_views(tok, prm):
    fmt = PromptFormat(tok, 64)
    texts = [f"def f{i}():\n    return {i} + {i} * {i}\n\n" for i in range(12)]
    views = fmt.encode("statement", "", texts)
    assert len(views) > 1
    covered = [k for v in views for k in v.step_index]
    assert covered == list(range(12))  # every step scored exactly once, in order
    for v in views:
        assert len(v.input_ids) <= 64
        assert v.step_token_index[-1] == len(v.input_ids) - 1
        assert tok.decode(v.input_ids).startswith("### Problem\n")
    assert views[0].code_start == 0 and all(v.code_start > 0 for v in views[1:])
    # a view ending at step j holds that step's whole text just before its end
    for v in views:
        last = v.step_index[-1]
        assert tok.decode(v.input_ids).endswith(texts[last])


def test_collate_right_pads_and_indexes(tok):
    a = Example([5, 6, 7], [1, 2], [0, 1], [0.5, 1.0], [0, 1], [False, True], "s#0", "p")
    b = Example([8], [0], [0], [0.0], [2], [True], "s#1", "p")
    batch = collate([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.step_batch_index.tolist() == [0, 0, 1]
    assert batch.step_token_index.tolist() == [1, 2, 0]
    assert batch.labels.tolist() == [0.5, 1.0, 0.0]
    assert batch.is_final.tolist() == [False, True, True]
    assert batch.num_tokens == 4
    moved = batch.to("cpu")
    assert moved.solution_ids == ["s#0", "s#1"]


def _labels(code: str, steps: list[Step], sid: str = "p1#0", values=(0.25, 0.5, 1.0)) -> list[StepLabel]:
    return [
        StepLabel(sid, "p1", k, len(steps), code[: s.end], 4, int(v * 4), v, int(v > 0))
        for k, (s, v) in enumerate(zip(steps, values, strict=True))
    ]


def test_labels_rebuild_the_same_inputs_as_scoring(prm):
    steps = _steps(CODE)
    labels = _labels(CODE, steps)
    problems = {"p1": _problem()}
    (train_ex,) = examples_from_labels(list(reversed(labels)), prm.prompt_format, problems)
    (score_ex,) = examples_from_solutions([Solution("p1", 0, CODE, steps=steps)], prm.prompt_format, problems)
    assert train_ex.input_ids == score_ex.input_ids
    assert train_ex.step_token_index == score_ex.step_token_index
    assert train_ex.targets == [0.25, 0.5, 1.0]
    assert train_ex.label_ids == [2, 1, 0]  # positions in the (reversed) label list
    assert train_ex.is_final == [False, False, True]
    (orm,) = examples_from_labels(labels, prm.prompt_format, problems, outcome_only=True)
    assert orm.targets == [1.0] and orm.is_final == [True]


def test_non_monotone_prefixes_are_a_user_error(prm):
    labels = _labels(CODE, _steps(CODE))
    labels[1].prefix = "something else"
    with pytest.raises(UserError, match="monotone"):
        examples_from_labels(labels, prm.prompt_format)


@pytest.mark.parametrize(
    ("how", "expected"),
    [("min", 0.2), ("mean", 0.5), ("last", 0.8), ("product", 0.2 * 0.5 * 0.8),
     ("logodds", math.log(0.25) + 0.0 + math.log(4))],
)
def test_aggregate(how, expected):
    assert aggregate([0.2, 0.5, 0.8], how) == pytest.approx(expected)


def test_aggregate_unknown():
    with pytest.raises(UserError, match="unknown aggregate"):
        aggregate([0.5], "max")


@pytest.mark.slow
@pytest.mark.embedded
def test_one_pass_equals_prefix_by_prefix_smollm2():
    try:
        from dreamprm_code.embedded import resolve_model

        path = resolve_model("embedded:smollm2-135m-instruct")
    except Exception as exc:  # the package or the GGUF is not installed here
        pytest.skip(f"embedded SmolLM2-135M not available: {exc}")
    from dreamprm_code.prm.model import build_prm

    torch.manual_seed(0)
    model, tok = build_prm(str(path), lora_r=8)
    model.attach_format(tok, 1024)
    model.eval()
    sols = [Solution("p1", 0, CODE, steps=_steps(CODE))]
    one = score_solutions(model, [_problem()], sols)
    sep = score_prefixes_separately(model, [_problem()], sols)
    assert one[0].scores == pytest.approx(sep[0], abs=2e-4)


def test_one_pass_equals_prefix_by_prefix_on_real_candidates(shared_data, prm):
    from dreamprm_code.cof import split_steps
    from dreamprm_code.data import load_problems, load_solutions

    problems = load_problems(f"apps:{shared_data / 'apps-150' / 'problems.jsonl'}")
    pool = shared_data / "pools" / "apps-mapcoder" / "GPT4-Turbo-MapCoder-3-5-APPS-Python3-0-1.jsonl"
    sols = [s for s in load_solutions(pool, problems)[:40] if len(split_steps(s.code)) >= 2][:12]
    assert len(sols) >= 8
    fmt = prm.prompt_format
    try:
        prm.attach_format(fmt.tokenizer, 2048)
        pmap = {p.id: p for p in problems}
        fits = [s for s in sols if all(v.code_start == 0 for v in prm.prompt_format.encode_solution(
            pmap[s.problem_id], s.code, split_steps(s.code)))]
        assert len(fits) >= 6
        one = score_solutions(prm, problems, fits, batch_tokens=8192)
        sep = score_prefixes_separately(prm, problems, fits, batch_tokens=8192)
    finally:
        prm.prompt_format = fmt
    for s, ref, sol in zip(one, sep, fits, strict=True):
        assert len(s.scores) == len(split_steps(sol.code))
        assert s.scores == pytest.approx(ref, abs=1e-5), sol.id


def test_token_batches_bound_tokens_and_padding():
    from dreamprm_code.prm.data import token_batches

    lengths = [100, 95, 90, 50, 48, 10, 300, 99]
    batches = token_batches(lengths, batch_tokens=400, max_padding=0.1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert width * len(b) <= 400 or len(b) == 1
        assert width * len(b) <= 1.1 * sum(lengths[i] for i in b) or len(b) == 1
    assert [6] in batches  # the 300-token sequence alone
    assert sorted([0, 7, 1, 2]) in [sorted(b) for b in batches]  # 100, 99, 95, 90: 400 padded, 384 real


def test_shared_header_cache_gives_the_full_pass_scores(prm, tok, monkeypatch):
    """A problem's candidates run after one pass over their common header (its key/value cache
    copied into each batch); their scores equal a full pass per candidate, duplicates included."""
    problem = Problem(id="p9", title="t", statement="Read n and print the sum of the first n integers. " * 3,
                      platform="x", difficulty="easy", tests=[])
    variants = [CODE, CODE.replace("n * (n + 1) // 2", "sum(range(n + 1))"), "def main():\n    print(1)\n", CODE]
    sols = [Solution("p9", k, code, steps=_steps(code) if code.startswith("import") else None)
            for k, code in enumerate(variants)]
    examples = examples_from_solutions(sols, prm.prompt_format, {"p9": problem})
    full = score_examples(prm, examples, share_prefix=False)
    calls = []
    real = type(prm).prefix_cache
    monkeypatch.setattr(type(prm), "prefix_cache", lambda self, ids: calls.append(len(ids)) or real(self, ids))
    shared = score_examples(prm, examples, batch_tokens=64)  # several batches reuse one header cache
    assert calls and calls[0] >= 16, "the header was not shared"
    assert len(calls) == 1
    for a, b in zip(full, shared, strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert shared[0] == shared[3]  # the duplicate candidate, run once


def test_an_empty_candidate_gets_no_scores_and_ranks_last(prm):
    """A pool can hold empty candidates (a model that replied with no code): scoring keeps going,
    gives them no step scores, and ``aggregate`` makes them NaN, which evaluate ranks last."""
    sols = [Solution("p1", 0, CODE, steps=_steps(CODE)), Solution("p1", 1, "   \n")]
    out = score_solutions(prm, {}, sols)
    assert len(out[0].scores) == 3 and out[1].scores == [] and out[1].meta["empty_code"]
    assert math.isnan(aggregate(out[1].scores, "min"))
