"""Settings of the PRM-guided search, apart from the search so the CLI reads them without its imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from dreamprm_code.errors import UserError
from dreamprm_code.options import option
from dreamprm_code.policy.base import SamplingParams
from dreamprm_code.scaling.select import AGGREGATIONS, Aggregation


@dataclass
class SearchConfig:
    """Beam width, expansions per kept prefix, and limits."""

    beam: int = option(2, help="prefixes kept after each step")
    expand: int = option(2, help="continuations sampled per kept prefix")
    max_steps: int = option(6, help="most functions the search writes")
    aggregation: Aggregation = option("min", help="how step scores rank prefixes and programs")
    style: str = option("cof", help="prompt style: cof | plain")
    form: str = option("chat", help="chat, or completion for base models")
    seed: int = option(0, help="base seed of the samples and the tie-breaks")
    sampling: SamplingParams = field(
        default_factory=lambda: SamplingParams(temperature=0.8, max_new_tokens=512),
        metadata={"prefix": "", "help": "how each continuation is sampled (its seed derives from seed)"},
    )

    def __post_init__(self) -> None:
        if self.beam < 1 or self.expand < 1 or self.max_steps < 1:
            raise UserError("beam, expand and max_steps must be at least 1", field="beam")
        if self.aggregation not in AGGREGATIONS:
            raise UserError(f"unknown aggregation {self.aggregation!r}", field="aggregation")
