"""The pipeline's configuration: one YAML file, validated by pydantic, errors that name the key.

A config names the problem sets (train / eval, no problem in both), the policy and how it
samples, the labelling budget, the PRM variants to train (ORM, PRM without correction, with
sample weights, with label correction) and the evaluation. Presets ship in ``presets/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dreamprm_code.cof.prompts import PackagedStyle
from dreamprm_code.errors import UserError
from dreamprm_code.execution.limits import Limits
from dreamprm_code.labeling.config import LabelConfig
from dreamprm_code.options import rename_old_keys
from dreamprm_code.options.models import FieldValueError, StageModel, stage_model, validation_error
from dreamprm_code.policy.base import SamplingParams
from dreamprm_code.prm.config import TrainConfig
from dreamprm_code.scaling.select import AGGREGATIONS, Aggregation

PRESETS = ("demo", "cpu-study", "paper")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemSet(_Strict):
    """A slice of one problem source."""

    source: str = Field(description="a `load_problems` source: humaneval, mbpp, apps, leetcode, livecodebench[:PATH], or a JSONL path")
    limit: int | None = Field(None, ge=1, description="keep at most this many problems (after filters)")
    offset: int = Field(0, ge=0, description="skip this many problems first (after filters and shuffling)")
    difficulties: list[Literal["easy", "medium", "hard"]] | None = Field(None, description="keep only these")
    ids: list[str] | None = Field(None, description="keep only these problem ids")
    shuffle_seed: int | None = Field(None, description="shuffle before offset/limit, with this seed")


class _PolicyFields(StageModel):
    """The pipeline's own policy settings; the sampling fields come from :class:`SamplingParams`."""

    spec: str = Field("embedded", description="`load_policy` spec: embedded, hf:PATH, openai:MODEL@URL, vllm:PATH")
    style: PackagedStyle = Field("cof", description="prompt style of generation and rollouts")
    seed: int = Field(0, description="base seed; every problem and rollout derives its own")
    code_prefill: bool = Field(
        True,
        description="open the ```python fence as the assistant's prefill and stop at the closing fence, so no "
        "tokens go to prose; turn off for APIs that cannot continue an assistant prefill (OpenAI's own)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="backend options for `load_policy`, e.g. {concurrency: 64, prefill_extras: false}",
    )

    def sampling(self, seed_offset: int = 0) -> SamplingParams:
        """How every candidate is sampled (the base seed moved by ``seed_offset``)."""
        return self.build(seed=self.seed + seed_offset)


PolicyConfig = stage_model(SamplingParams, name="PolicyConfig", exclude=("stop", "seed"), base=_PolicyFields,
                           doc="The policy and how it samples candidates.")


class GenerateConfig(_Strict):
    n_train: int = Field(4, ge=1, description="candidates per training problem")
    n_eval: int = Field(4, ge=1, description="candidates per evaluation problem (the N of best-of-N)")


#: The labelling settings a pipeline sets; sampling's top_p, seed and style are the policy's.
LabelStageConfig = stage_model(
    LabelConfig, name="LabelStageConfig",
    include=("rollouts", "strategy", "max_new_tokens", "temperature", "concurrency"),
    doc="How training candidates' step prefixes are labelled (see LabelConfig).",
)


class _TrainFields(StageModel):
    """The pipeline's own training settings; the trainer's come from :class:`TrainConfig`."""

    variants: list[Literal["orm", "prm", "prm-weights", "prm-labels"]] = Field(
        default_factory=lambda: ["orm", "prm", "prm-weights", "prm-labels"],
        description="orm: final step only; prm: no correction; prm-weights: sample re-weighting; "
        "prm-labels: DreamPRM-Code label correction",
    )
    meta_share: float = Field(
        0.25, ge=0, lt=1,
        description="share of training problems kept out of labelling: their solutions (with verdicts) "
        "form the meta set; 0 = no meta set (the corrections then train like prm)",
    )
    meta_fraction: float = Field(
        0.5, gt=0, le=1, description="share of meta problems the outer step uses; the rest validate every variant"
    )
    meta_solutions: str | None = Field(
        None,
        description="draw the meta set from these solutions instead of held-out training problems: our JSONL, a "
        "MapCoder pool (file or folder) or a LiveCodeBench export; candidates without a verdict are executed once "
        "(cached in the run), problems that are also training or evaluation problems are dropped, and every "
        "training problem is labelled (meta_share is not used)",
    )
    meta_problems: str | None = Field(
        None, description="the problem source those solutions belong to (statements and tests), e.g. "
        "apps-stdin:PATH; required with meta_solutions",
    )
    num_processes: int = Field(
        1, ge=1, description="training processes (one per GPU): above 1 the pipeline runs `train` under "
        "`accelerate launch --num_processes N` (DDP) and waits for it",
    )

    @model_validator(mode="after")
    def _meta_source(self) -> _TrainFields:
        if self.meta_solutions and not self.meta_problems:
            raise FieldValueError("the problem source of meta_solutions is required (e.g. apps-stdin:PATH)",
                                  "meta_problems")
        if self.meta_problems and not self.meta_solutions:
            raise FieldValueError("is only used with meta_solutions", "meta_problems")
        return self

    @property
    def held_out_share(self) -> float:
        """The share of training problems held out of labelling: none when the meta set comes from elsewhere."""
        return 0.0 if self.meta_solutions else self.meta_share


#: The trainer's settings a pipeline sets; each variant sets the correction mode and outcome_only.
TrainStageConfig = stage_model(
    TrainConfig, name="TrainStageConfig",
    include=("backbone", "num_train_epochs", "per_device_train_batch_size", "learning_rate", "lora_r", "max_length",
             "meta", "precision", "seed", "report_to"),
    exclude=("meta.mode",), base=_TrainFields,
    doc="The PRM variants to train and how (see TrainConfig; `meta` holds CorrectionConfig's fields).",
)


class EvaluateStageConfig(_Strict):
    aggregations: list[Aggregation] = Field(default_factory=lambda: list(AGGREGATIONS))
    bootstrap: int = Field(2000, ge=100)
    seed: int = 0
    majority: bool = True


class _ExecutionFields(StageModel):
    workers: int | None = Field(None, ge=1, description="parallel sandboxed programs (default: CPU count)")


ExecutionStageConfig = stage_model(Limits, name="ExecutionStageConfig", include=("timeout",), base=_ExecutionFields,
                                   doc="How candidates and rollouts are run against the tests.")


class PipelineConfig(_Strict):
    """The whole run: generate -> label -> train (+ correction) -> score -> evaluate."""

    name: str
    run_dir: str = Field("runs/{name}", description="where everything is written; {name} is substituted")
    train_problems: list[ProblemSet]
    eval_problems: list[ProblemSet]
    policy: PolicyConfig = PolicyConfig()
    generate: GenerateConfig = GenerateConfig()
    label: LabelStageConfig = LabelStageConfig()
    train: TrainStageConfig = TrainStageConfig()
    evaluate: EvaluateStageConfig = EvaluateStageConfig()
    execution: ExecutionStageConfig = ExecutionStageConfig()
    ray: str | None = Field(
        None, description="run generate, label and score on Ray: auto, HOST:PORT, ray://HOST:PORT or local"
    )

    @model_validator(mode="after")
    def _non_empty(self) -> PipelineConfig:
        if not self.train_problems or not self.eval_problems:
            raise ValueError("train_problems and eval_problems must each name at least one problem set")
        return self

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir.format(name=self.name))


def _format_validation_error(exc: ValidationError, where: str) -> UserError:
    key, message = validation_error(exc.errors()[0])
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return UserError(f"{message}{more}", path=where, field=key)


def load_config(name_or_path: str, overrides: dict | None = None) -> PipelineConfig:
    """A preset name (``demo``, ``cpu-study``, ``paper``) or a YAML path -> validated config."""
    path = Path(name_or_path)
    if path.exists():
        text, where = path.read_text(encoding="utf-8"), str(path)
    elif name_or_path in PRESETS:
        res = resources.files("dreamprm_code.pipeline") / "presets" / f"{name_or_path}.yaml"
        text, where = res.read_text(encoding="utf-8"), f"preset:{name_or_path}"
    else:
        raise UserError(f"no such config file or preset (presets: {', '.join(PRESETS)})", path=name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise UserError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=where,
                        line=None if line is None else line + 1) from None
    if not isinstance(data, dict):
        raise UserError("expected a mapping at the top level", path=where)
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    for name, field in PipelineConfig.model_fields.items():
        model = field.annotation
        if isinstance(data.get(name), dict) and isinstance(model, type) and issubclass(model, StageModel):
            # keys of earlier releases, warned about by their YAML path (train.epochs)
            data[name] = rename_old_keys(model.__dataclass__, data[name], where=where, path=(name,),
                                         only=model.__dataclass_names__)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise _format_validation_error(exc, where) from None
