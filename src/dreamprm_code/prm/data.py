"""Turning step labels and solutions into padded batches that one forward pass scores.

A :class:`StepBatch` holds B sequences (right-padded) and S scored steps spread over them;
``step_batch_index``/``step_token_index`` say where each step's last token sits. Labels are
rebuilt into candidates (one sequence per candidate, or a few views when too long: see
``format``), so training sees exactly the inputs that scoring later sees.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from dreamprm_code.cof import solution_steps
from dreamprm_code.errors import UserError
from dreamprm_code.prm.format import PromptFormat
from dreamprm_code.records import Problem, Solution, Step, StepLabel


@dataclass
class Example:
    """One sequence with the steps it scores (before padding)."""

    input_ids: list[int]
    step_token_index: list[int]
    step_index: list[int]
    targets: list[float]
    label_ids: list[int]
    is_final: list[bool]
    solution_id: str
    problem_id: str


@dataclass
class StepBatch:
    """A right-padded batch: ``[B, T]`` tokens and ``[S]`` steps to score in one pass.

    ``targets`` are soft labels in [0, 1] (NaN when unknown, as in scoring); ``label_ids``
    index the trainer's label table (-1: not a learnable label, e.g. a meta-set verdict);
    ``solution_ids``/``problem_ids`` name the B sequences; ``step_index`` is each step's index
    within its solution.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    step_batch_index: torch.Tensor
    step_token_index: torch.Tensor
    targets: torch.Tensor
    label_ids: torch.Tensor
    is_final: torch.Tensor
    step_index: torch.Tensor
    solution_ids: list[str] = field(default_factory=list)
    problem_ids: list[str] = field(default_factory=list)

    @property
    def labels(self) -> torch.Tensor:
        """``targets`` under the name ``dreamprm_code.meta`` reads."""
        return self.targets

    @property
    def num_steps(self) -> int:
        return int(self.step_batch_index.numel())

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) tokens, for tokens/s figures."""
        return int(self.attention_mask.sum().item())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StepBatch:
        """Move the tensors (``accelerate`` calls this to place batches)."""
        moved = {
            name: getattr(self, name).to(device, non_blocking=non_blocking)
            for name in (
                "input_ids",
                "attention_mask",
                "step_batch_index",
                "step_token_index",
                "targets",
                "label_ids",
                "is_final",
                "step_index",
            )
        }
        return StepBatch(**moved, solution_ids=list(self.solution_ids), problem_ids=list(self.problem_ids))

    def steps_where(self, mask: torch.Tensor) -> StepBatch:
        """The same sequences with only the steps selected by ``mask`` (e.g. final steps)."""
        return StepBatch(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            step_batch_index=self.step_batch_index[mask],
            step_token_index=self.step_token_index[mask],
            targets=self.targets[mask],
            label_ids=self.label_ids[mask],
            is_final=self.is_final[mask],
            step_index=self.step_index[mask],
            solution_ids=list(self.solution_ids),
            problem_ids=list(self.problem_ids),
        )


def collate(examples: Sequence[Example], pad_id: int) -> StepBatch:
    """Right-pad ``examples`` into one :class:`StepBatch`."""
    if not examples:
        raise ValueError("cannot collate an empty batch")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    sbi, sti, tgt, lab, fin, sid = [], [], [], [], [], []
    for b, e in enumerate(examples):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[b, : len(e.input_ids)] = 1
        sbi += [b] * len(e.step_token_index)
        sti += e.step_token_index
        tgt += e.targets
        lab += e.label_ids
        fin += e.is_final
        sid += e.step_index
    return StepBatch(
        input_ids=ids,
        attention_mask=mask,
        step_batch_index=torch.tensor(sbi, dtype=torch.long),
        step_token_index=torch.tensor(sti, dtype=torch.long),
        targets=torch.tensor(tgt, dtype=torch.float32),
        label_ids=torch.tensor(lab, dtype=torch.long),
        is_final=torch.tensor(fin, dtype=torch.bool),
        step_index=torch.tensor(sid, dtype=torch.long),
        solution_ids=[e.solution_id for e in examples],
        problem_ids=[e.problem_id for e in examples],
    )


def candidates_from_labels(labels: Sequence[StepLabel]) -> dict[str, tuple[str, list[Step], dict[int, int]]]:
    """Rebuild each labelled solution's code and steps from its prefixes.

    Returns ``solution_id -> (code, steps, {step_index: position of the label in labels})``.
    Prefixes must be monotone (prefix k is a prefix of prefix k+1, docs/architecture.md#steps-come-from-the-syntax-tree). The code is the
    longest labelled prefix: later text cannot change a causal model's earlier scores. Step
    boundaries are the labelled prefixes' ends, so an unlabelled step merges into the next.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, lab in enumerate(labels):
        groups[lab.solution_id].append(i)
    out: dict[str, tuple[str, list[Step], dict[int, int]]] = {}
    for sid, idx in groups.items():
        idx.sort(key=lambda i: labels[i].step_index)
        by_step: dict[int, int] = {}
        steps: list[Step] = []
        prev = ""
        for i in idx:
            lab = labels[i]
            if lab.step_index in by_step:
                raise UserError(f"duplicate label for step {lab.step_index} of solution {sid}", field="step_index")
            if not lab.prefix.startswith(prev) or (steps and len(lab.prefix) == len(prev)):
                raise UserError(
                    f"prefixes of solution {sid} are not monotone at step {lab.step_index}", field="prefix"
                )
            by_step[lab.step_index] = i
            steps.append(Step(name=f"step{lab.step_index}", kind="prefix", start=len(prev), end=len(lab.prefix)))
            prev = lab.prefix
        code = prev
        out[sid] = (code, steps, by_step)
    return out


def examples_from_labels(
    labels: Sequence[StepLabel],
    fmt: PromptFormat,
    problems: Mapping[str, Problem] | None = None,
    *,
    outcome_only: bool = False,
    label_offset: int = 0,
) -> list[Example]:
    """Training examples: targets are the MC values, ``label_ids`` index ``labels``.

    ``outcome_only`` keeps only final-step labels (the ORM baseline, same backbone).
    """
    problems = problems or {}
    out: list[Example] = []
    for sid, (code, steps, by_step) in candidates_from_labels(labels).items():
        pos_of = list(by_step.items())
        first = labels[pos_of[0][1]]
        final_steps = {k for k, i in pos_of if labels[i].step_index == labels[i].num_steps - 1}
        if outcome_only and not final_steps:
            continue
        problem = problems.get(first.problem_id)
        for view in fmt.encode_solution(problem, code, steps):
            ex = Example([], [], [], [], [], [], sid, first.problem_id)
            ex.input_ids = view.input_ids
            for local, tok in zip(view.step_index, view.step_token_index, strict=True):
                step_no, li = pos_of[local]
                lab = labels[li]
                is_final = lab.step_index == lab.num_steps - 1
                if outcome_only and not is_final:
                    continue
                if not (0.0 <= lab.mc_value <= 1.0) or math.isnan(lab.mc_value):
                    raise UserError(f"mc_value {lab.mc_value} of {lab.key} is not in [0, 1]", field="mc_value")
                ex.step_token_index.append(tok)
                ex.step_index.append(step_no)
                ex.targets.append(float(lab.mc_value))
                ex.label_ids.append(label_offset + li)
                ex.is_final.append(is_final)
            if ex.step_token_index:
                out.append(ex)
    return out


def verdict_target(solution: Solution) -> float:
    if solution.verdict is None:
        raise UserError(f"solution {solution.id} has no verdict", field="verdict")
    return 1.0 if solution.passed else 0.0


def examples_from_solutions(
    solutions: Sequence[Solution],
    fmt: PromptFormat,
    problems: Mapping[str, Problem] | None = None,
    *,
    final_only: bool = False,
    with_verdicts: bool = False,
) -> list[Example]:
    """Examples for scoring (targets NaN) or for the meta set (final step, target = verdict)."""
    problems = problems or {}
    out: list[Example] = []
    for sol in solutions:
        steps = solution_steps(sol)
        n = len(steps)
        target = verdict_target(sol) if with_verdicts else math.nan
        try:
            views = fmt.encode_solution(problems.get(sol.problem_id), sol.code, steps)
        except UserError as exc:
            raise UserError(f"solution {sol.id}: {exc.message}", field=exc.field) from None
        for view in views:
            ex = Example(view.input_ids, [], [], [], [], [], sol.id, sol.problem_id)
            for k, tok in zip(view.step_index, view.step_token_index, strict=True):
                if final_only and k != n - 1:
                    continue
                ex.step_token_index.append(tok)
                ex.step_index.append(k)
                ex.targets.append(target if k == n - 1 else math.nan)
                ex.label_ids.append(-1)
                ex.is_final.append(k == n - 1)
            if final_only:
                # only the final view matters; the tokens after its final step are padding-free
                if ex.step_token_index:
                    ex.input_ids = ex.input_ids[: ex.step_token_index[-1] + 1]
                    out.append(ex)
            elif ex.step_token_index:
                out.append(ex)
    return out


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding), the same for the same seed and epoch.

    Indices are shuffled, cut into pools of 50 batches, sorted by length within a pool, cut into
    batches, and the batches shuffled again.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[int]] = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def token_batches(
    lengths: Sequence[int], batch_tokens: int, max_batch: int = 256, max_padding: float = 0.1
) -> list[list[int]]:
    """Batches sorted by length whose padded size (rows x longest) stays within ``batch_tokens``
    and whose padding stays under ``max_padding`` of the real tokens (padding is wasted work)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        rows = len(cur) + 1
        if cur and (
            width * rows > batch_tokens or rows > max_batch or width * rows > (1 + max_padding) * (real + lengths[i])
        ):
            batches.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += lengths[i]
    if cur:
        batches.append(cur)
    return batches


def cycle_batches(examples: Sequence[Example], batch_size: int, pad_id: int, seed: int) -> Iterator[StepBatch]:
    """An endless stream of shuffled batches (the meta set, read every M training steps)."""
    if not examples:
        raise UserError("the meta set yields no examples", field="meta")
    epoch = 0
    lengths = [len(e.input_ids) for e in examples]
    while True:
        for b in epoch_batches(lengths, batch_size, seed + 7919, epoch):
            yield collate([examples[i] for i in b], pad_id)
        epoch += 1
