"""Tiny random-initialised backbones and tokenizers, so tests and benchmarks stay fast (no downloads).

A byte-level BPE tokenizer trained on a few lines of Python (like the real code models'
tokenizers, so step boundaries are realistic) and a ``Qwen2Config`` base model of about a
hundred thousand parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "def main():\n    \"\"\"Read the input, solve, print.\"\"\"\n    n = int(input())\n    print(solve(n))\n",
    "def solve(n):\n    \"\"\"Sum of the first n numbers.\"\"\"\n    return n * (n + 1) // 2\n",
    "class Solution:\n    def maxSum(self, nums: List[int]) -> int:\n        return max(nums)\n",
    "import sys\nfrom collections import defaultdict\nif __name__ == '__main__':\n    main()\n",
    "### Problem\nGiven an array of integers, return the largest sum.\n### Solution\n",
    "for i in range(len(nums)):\n    if nums[i] > best:\n        best = nums[i]\n",
]


def tiny_tokenizer(vocab_size: int = 400) -> Any:
    """A ``PreTrainedTokenizerFast`` with a byte-level BPE trained on :data:`CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_backbone(tokenizer: Any, *, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Any:
    """A random ``Qwen2Model`` (base model, no LM head) sized for unit tests."""
    import torch
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen2Model(config).eval()


def save_tiny_backbone(path: str | Path, *, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny backbone and its tokenizer to ``path`` (a directory ``build_prm`` loads)."""
    path = Path(path)
    tok = tiny_tokenizer()
    tiny_backbone(tok, hidden_size=hidden_size, layers=layers, seed=seed).save_pretrained(path)
    tok.save_pretrained(path)
    return path
