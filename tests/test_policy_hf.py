"""The in-process transformers policy, on a tiny random Qwen2 model the tests build (and SmolLM2 when installed)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dreamprm_code.errors import UserError  # noqa: E402
from dreamprm_code.policy import FINISH_LENGTH, FINISH_STOP, Prompt, SamplingParams, load_policy  # noqa: E402
from dreamprm_code.policy.hf import HFPolicy, pick_dtype  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from tiny_models import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return HFPolicy.from_model(model, tok, name="hf:tiny", batch_size=4)


def chat(text: str, prefill: str = "", seed: int | None = None) -> Prompt:
    return Prompt([{"role": "user", "content": text}], prefill=prefill, seed=seed)


GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


def test_n_samples_per_prompt_with_token_counts(policy):
    prompts = [chat("def solve(n):"), chat("Given an array of integers, return the largest sum.")]
    out = policy.generate(prompts, 3, SamplingParams(temperature=1.0, max_new_tokens=8, seed=1))
    assert [len(cs) for cs in out] == [3, 3]
    for p, cs in zip(prompts, out, strict=True):
        expected = len(policy.tokenizer(policy.render(p), add_special_tokens=False)["input_ids"])
        for c in cs:
            assert c.prompt_tokens == expected  # padding is not counted
            assert 1 <= c.completion_tokens <= 8
            assert c.finish_reason == (FINISH_LENGTH if c.completion_tokens == 8 else FINISH_STOP)
    assert policy.last_stats["completion_tokens"] == sum(c.completion_tokens for cs in out for c in cs)


def test_seed_makes_sampling_reproducible(policy):
    s = SamplingParams(temperature=1.0, max_new_tokens=10, seed=123)
    a = policy.generate([chat("for i in range")], 4, s)
    b = policy.generate([chat("for i in range")], 4, s)
    c = policy.generate([chat("for i in range")], 4, s.with_seed(999))
    assert [x.text for x in a[0]] == [x.text for x in b[0]]
    assert [x.text for x in a[0]] != [x.text for x in c[0]]
    assert len({x.text for x in a[0]}) > 1  # the n samples differ from each other


def test_left_padded_batch_matches_single_prompts(policy):
    prompts = [chat("n"), chat("Given an array of integers, return the largest sum of the first n numbers.")]
    batched = policy.generate(prompts, 1, GREEDY)
    single = [policy.generate([p], 1, GREEDY)[0] for p in prompts]
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert [c[0].completion_tokens for c in batched] == [c[0].completion_tokens for c in single]


def test_per_prompt_seed_does_not_depend_on_batch(policy):
    s = SamplingParams(temperature=1.0, max_new_tokens=10)
    alone = policy.generate([chat("def main():", seed=7)], 2, s)
    mixed = policy.generate([chat("import sys", seed=3), chat("def main():", seed=7)], 2, s)
    assert [c.text for c in mixed[1]] == [c.text for c in alone[0]]


def test_sample_j_of_seed_s_is_sample_0_of_seed_s_plus_j(policy):
    """Each sample has its own stream: rounds of a labelling prefix continue one another."""
    s = SamplingParams(temperature=1.0, max_new_tokens=10, seed=0)
    four = policy.generate([chat("for i in range", seed=50)], 4, s)[0]
    tail = policy.generate([chat("for i in range", seed=52), chat("n", seed=7)], 2, s)[0]
    one = policy.generate([chat("for i in range", seed=51)], 1, s)[0]
    assert [c.text for c in four[2:]] == [c.text for c in tail]
    assert four[1].text == one[0].text


def test_greedy_n_returns_n_copies(policy):
    out = policy.generate([chat("def solve(n):")], 3, GREEDY)
    assert len(out[0]) == 3 and len({c.text for c in out[0]}) == 1
    assert out[0][0] is not out[0][1]


def test_stop_strings_cut_the_reply(policy):
    base = policy.generate([chat("class Solution:")], 1, SamplingParams(temperature=0.0, max_new_tokens=24))[0][0].text
    assert len(base) > 6, base
    stop = base[3:6]
    cut = policy.generate([chat("class Solution:")], 1, SamplingParams(temperature=0.0, max_new_tokens=24, stop=[stop]))
    assert cut[0][0].text == base[: base.index(stop)]
    assert cut[0][0].finish_reason == FINISH_STOP


def test_prefill_is_appended_after_the_generation_prompt(policy):
    p = chat("write solve", prefill="```python\ndef solve(")
    text = policy.render(p)
    assert text == "<|user|>write solve\n<|assistant|>```python\ndef solve("
    out = policy.generate([p], 1, GREEDY)
    assert not out[0][0].text.startswith("```python")  # only the continuation comes back


def test_plain_completion_prompt(policy):
    out = policy.generate([Prompt(text="def solve(n):\n    ")], 2, SamplingParams(temperature=0.8, max_new_tokens=5, seed=0))
    assert len(out[0]) == 2 and all(c.prompt_tokens > 0 for c in out[0])


def test_bad_arguments_are_user_errors(policy):
    with pytest.raises(UserError, match="n must be"):
        policy.generate([chat("x")], 0, GREEDY)
    with pytest.raises(UserError, match="exactly one"):
        Prompt()
    with pytest.raises(UserError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(UserError, match="unknown dtype"):
        pick_dtype("cpu", "float77")
    assert pick_dtype("cpu") == torch.float32


def test_hf_spec_with_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        load_policy(f"hf:{tmp_path / 'nope'}")


@pytest.mark.embedded
@pytest.mark.slow
def test_embedded_smollm2_generates(tmp_path):
    from dreamprm_code.embedded import DEFAULT_PRM, EMBEDDED, locate_chunks

    try:
        locate_chunks(EMBEDDED[DEFAULT_PRM])
    except UserError as exc:
        pytest.skip(str(exc))
    pol = load_policy(f"embedded:{DEFAULT_PRM}", threads=1)
    assert pol.name == f"embedded:{DEFAULT_PRM}+int8"  # embedded models are int8-quantized on CPU
    out = pol.generate(
        [chat("Count from 1 to 10, separated by commas.", prefill="1, 2, 3,")],
        2,
        SamplingParams(temperature=0.0, max_new_tokens=12, stop=[" 7"]),
    )
    assert out[0][0].text.startswith(" 4, 5")
    assert " 7" not in out[0][0].text and out[0][0].finish_reason == FINISH_STOP


def test_int8_quantization_replaces_linear_layers_and_still_generates():
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from tiny_models import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    q = HFPolicy.from_model(model, tok, name="hf:tiny-int8", quantize="int8")
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    assert not any(isinstance(m, torch.nn.Linear) for m in q.model.modules())
    assert sum(isinstance(m, QLinear) for m in q.model.modules()) == 2 * 7 + 1  # q k v o gate up down, lm_head
    out = q.generate([chat("def solve(n):")], 2, SamplingParams(temperature=0.8, max_new_tokens=6, seed=1))
    assert len(out[0]) == 2 and all(c.completion_tokens >= 1 for c in out[0])
    with pytest.raises(UserError, match="int4"):
        HFPolicy.from_model(model, tok, name="hf:tiny", quantize="int4")
