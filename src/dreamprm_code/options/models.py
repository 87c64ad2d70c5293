"""The pipeline's pydantic stage models, generated from the stage dataclasses (see the package docstring)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from dreamprm_code.errors import UserError
from dreamprm_code.options import build, rename_old_keys


class FieldValueError(ValueError):
    """A dataclass's own check failed while pydantic validated a stage; ``field`` is its field path."""

    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class StageModel(BaseModel):
    """Base of the generated stage models: strict keys, and the dataclass's own checks on validation."""

    model_config = ConfigDict(extra="forbid")
    __dataclass__: ClassVar[type]
    __dataclass_names__: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        """Keys of earlier releases (the dataclass's ``__renamed__``) under their current names, with a warning."""
        if not isinstance(data, Mapping) or not hasattr(cls, "__dataclass__"):
            return data
        return rename_old_keys(cls.__dataclass__, data, only=cls.__dataclass_names__)

    @model_validator(mode="after")
    def _dataclass_checks(self) -> StageModel:
        try:
            self.build()
        except UserError as exc:
            raise FieldValueError(exc.message, exc.field) from None
        return self

    def build(self, **changes: Any) -> Any:
        """The stage's dataclass from this model's values (``changes`` set the fields it leaves out)."""
        values = {name: getattr(self, name) for name in self.__dataclass_names__}
        values = {k: v.build() if isinstance(v, StageModel) else v for k, v in values.items()}
        return build(self.__dataclass__, {**values, **changes})


def stage_model(
    cls: type,
    *,
    name: str,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    base: type[StageModel] = StageModel,
    doc: str | None = None,
) -> type[StageModel]:
    """A pydantic model of (some of) ``cls``'s fields, with the dataclass's defaults, types and help.

    ``base`` may add fields of the pipeline's own (they are not passed to the dataclass). A nested
    dataclass field becomes a nested model of all its fields (a YAML mapping), less those that
    ``exclude`` names by path (``meta.mode``).
    """
    hints = typing.get_type_hints(cls)
    chosen = [f for f in dataclasses.fields(cls)
              if f.init and (include is None or f.name in include) and f.name not in exclude]
    if include is not None:
        absent = set(include) - {f.name for f in chosen}
        if absent:
            raise ValueError(f"{cls.__name__} has no field {sorted(absent)[0]!r}")
    fields: dict[str, Any] = {}
    for f in chosen:
        description = f.metadata.get("help")
        if dataclasses.is_dataclass(hints[f.name]):
            inner = [e.split(".", 1)[1] for e in exclude if e.startswith(f.name + ".")]
            nested = stage_model(hints[f.name], name=f"{name}_{f.name}", exclude=inner)
            fields[f.name] = (nested, Field(default_factory=nested, description=description))
            continue
        if f.default_factory is not dataclasses.MISSING:
            spec = Field(default_factory=f.default_factory, description=description)
        elif f.default is not dataclasses.MISSING:
            spec = Field(f.default, description=description)
        else:
            spec = Field(description=description)
        fields[f.name] = (hints[f.name], spec)
    model = create_model(name, __base__=base, __module__=cls.__module__, __doc__=doc or cls.__doc__, **fields)
    model.__dataclass__ = cls
    model.__dataclass_names__ = tuple(f.name for f in chosen)
    return model


def validation_error(err: Mapping[str, Any]) -> tuple[str, str]:
    """The dotted key and message of one pydantic error; a dataclass check's own field is appended."""
    loc = [str(p) for p in err["loc"]]
    message = err["msg"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldValueError):
        message = str(cause)
        if cause.field:
            loc.append(cause.field)
    return ".".join(loc) or "(top level)", message
