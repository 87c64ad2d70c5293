"""One definition per option: a stage's dataclass is the only place an option is declared.

Each field of a stage's settings dataclass carries its default, its type (allowed values as a
``Literal``) and its help text (``field(metadata={"help": ...})``, or :func:`option`). From it:

- :func:`options_from` generates the typer options of a command (one ``--flag`` per field,
  ``--x/--no-x`` for a bool, a choice list for a ``Literal``, a repeatable option for a
  ``list[X]`` (or ``list[X] | str``), nested dataclasses flattened with
  a prefix: field ``meta: CorrectionConfig`` gives ``--meta-lr`` for ``meta.lr``), an optional
  ``--config FILE`` (JSON or YAML of the same fields; options typed on the command line win)
  and hidden deprecated flags that still work and say what replaced them;
- :func:`stage_model` generates the pipeline's pydantic model of a stage from the same fields
  (the same defaults and allowed values), and validates a config by building the dataclass, so
  a ``UserError`` from its ``__post_init__`` names the YAML key (``label.rollouts``);
- :func:`build` turns a mapping (a config file, the CLI's values) into the dataclass, checking
  each value's type and naming the field path of any error.

Field metadata read here: ``help``; ``flag`` (the full click declaration, e.g. ``--meta-every``
to keep an older name or ``--stop-at-first-failure/--all-tests`` for a bool); ``short``
(``-n``); ``prefix`` on a nested dataclass field (the flag prefix, ``""`` for none);
``cli=False`` to leave a field off the command line.

Renamed options: a dataclass may map names of earlier releases to their field paths,
``__renamed__: ClassVar[dict[str, str]] = {"lr": "learning_rate", "correction": "meta.mode"}``.
:func:`build` (so every config file, the pipeline's YAML and saved checkpoint configs) accepts
the old keys with a :class:`RenamedOptionWarning` naming the new one, and :func:`options_from`
keeps each old name as a hidden flag (``--lr``) that prints one line naming its replacement.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, get_origin

from dreamprm_code.errors import UserError

if TYPE_CHECKING:
    import typer

T = TypeVar("T")
_CONFIG_PARAM = "config_file"
_CTX_PARAM = "options_context"


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    short: str | None = None,
    default_factory: Any = dataclasses.MISSING,
    **metadata: Any,
) -> Any:
    """A dataclass field with its help text (and optionally its CLI flag): ``x: int = option(3, help=...)``."""
    meta = {"help": help, **metadata}
    if flag is not None:
        meta["flag"] = flag
    if short is not None:
        meta["short"] = short
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class RenamedOptionWarning(DeprecationWarning):
    """An option was given by its name of an earlier release; the message names the current one.

    The command line shows it as one ``warning:`` line on stderr (``cli.main``).
    """


def renamed(cls: type) -> dict[str, str]:
    """``cls``'s old option names -> their current field paths (``__renamed__``)."""
    return dict(getattr(cls, "__renamed__", {}))


def rename_old_keys(
    cls: type,
    data: Mapping[str, Any],
    *,
    where: str | Path | None = None,
    path: Sequence[str] = (),
    warn: bool = True,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``data`` with the keys of earlier releases moved to their current names (``cls.__renamed__``).

    Each old key found warns (unless ``warn`` is false: reading a saved checkpoint config, whose
    keys the user cannot change); when the current name is given too, it wins and the old one is
    dropped. ``only`` restricts the renames to those whose target's first part is in it.
    """
    out = dict(data)
    for old, new in renamed(cls).items():
        parts = new.split(".")
        if old not in out or (only is not None and parts[0] not in only):
            continue
        value = out.pop(old)
        old_name, new_name = _dotted([*path, old]), _dotted([*path, *parts])
        prefix = f"{where}: " if where is not None else ""
        if _has(out, parts):
            if warn:
                warnings.warn(RenamedOptionWarning(
                    f"{prefix}{old_name!r} is an old name of {new_name!r}, which is given too; {old_name!r} is ignored"
                ), stacklevel=3)
            continue
        if warn:
            warnings.warn(RenamedOptionWarning(f"{prefix}{old_name!r} is deprecated; use {new_name!r}"), stacklevel=3)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if dataclasses.is_dataclass(child) and not isinstance(child, type):
                child = dataclasses.asdict(child)
            node[part] = dict(child) if isinstance(child, Mapping) else {}
            node = node[part]
        node[parts[-1]] = value
    return out


def choices(literal: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` type, as a tuple (for messages and membership tests)."""
    return tuple(get_args(literal))


# --- types ----------------------------------------------------------------------------------------


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(tp, False)``."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _list_or_str(tp: Any) -> Any:
    """``list[X] | str`` -> ``list[X]``: on the command line such a field is a list option (one word, one item)."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = set(get_args(tp))
        lists = [a for a in args if get_origin(a) is list]
        if len(lists) == 1 and args - set(lists) == {str}:
            return lists[0]
    return tp


def _literal_values(tp: Any) -> tuple[str, ...] | None:
    return tuple(str(v) for v in get_args(tp)) if get_origin(tp) is Literal else None


def _field_default(f: dataclasses.Field, parent_default: Any = None) -> Any:
    """A field's default: from the parent's default instance if there is one, else its own."""
    if parent_default is not None:
        return getattr(parent_default, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


# --- building a dataclass from a mapping ---------------------------------------------------------


def _dotted(path: Sequence[str]) -> str:
    return ".".join(path)


def build(cls: type[T], data: Mapping[str, Any], *, where: str | Path | None = None,
          path: Sequence[str] = (), base: Any = None) -> T:
    """``cls(**data)`` with nested mappings built too, each value checked against its field's type.

    Unknown keys, values of the wrong type and a ``UserError`` raised by ``__post_init__`` all
    become a ``UserError`` naming ``where`` (a file) and the field path (``meta.lr``). ``base`` is a
    default instance whose values fill what ``data`` leaves out (a nested field's own default).
    """
    from pydantic import TypeAdapter, ValidationError

    data = rename_old_keys(cls, data, where=where, path=path)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in _init_fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise UserError(f"unknown option (known: {', '.join(known)})", path=where,
                        field=_dotted([*path, str(unknown[0])]))
    kwargs: dict[str, Any] = {}
    if base is not None:
        kwargs = {name: getattr(base, name) for name in known}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            nested_base = _field_default(known[name])
            value = build(tp, value, where=where, path=[*path, name],
                          base=None if nested_base is dataclasses.MISSING else nested_base)
        elif not (dataclasses.is_dataclass(tp) and isinstance(value, tp)):
            try:
                value = TypeAdapter(tp).validate_python(value)
            except ValidationError as exc:
                raise UserError(exc.errors()[0]["msg"], path=where, field=_dotted([*path, name])) from None
        kwargs[name] = value
    missing = [n for n, f in known.items() if n not in kwargs and _field_default(f) is dataclasses.MISSING]
    if missing:
        raise UserError("required, not given", path=where, field=_dotted([*path, missing[0]]))
    try:
        return cls(**kwargs)
    except UserError as exc:
        field = _dotted([*path, exc.field]) if exc.field else (_dotted(path) or None)
        raise UserError(exc.message, path=where if where is not None else exc.path, line=exc.line,
                        field=field) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML mapping of option values (YAML reads JSON too)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read config: {exc.strerror or exc}", path=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"not valid JSON or YAML: {getattr(exc, 'problem', exc)}", path=path,
                        line=None if mark is None else mark.line + 1) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError("expected a mapping of option names to values", path=path)
    return data


# --- CLI options ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CliOption:
    """One generated command-line option: the dataclass field it sets and how typer declares it."""

    path: tuple[str, ...]
    param: str
    decls: tuple[str, ...]
    annotation: Any
    default: Any
    help: str
    choices: tuple[str, ...] | None
    is_list: bool

    def annotation_enum(self) -> type[enum.Enum]:
        """The choices as the Enum typer turns into a choice list (typer reads no ``Literal``)."""
        return _choice_enum(self.choices or ())

    @property
    def flag(self) -> str:
        return self.decls[0].split("/")[0]

    def typer_option(self, *, hidden: bool = False, default: Any = None, decls: tuple[str, ...] | None = None) -> Any:
        import typer

        kwargs: dict[str, Any] = {"help": self.help, "hidden": hidden}
        if self.choices is not None and self.is_list:
            kwargs["help"] = f"{self.help} [choices: {', '.join(self.choices)}; repeat or comma-separate]"
        required = self.default is dataclasses.MISSING
        value = default if (hidden or required) else self.default
        if self.choices is not None and not self.is_list and value is not None:
            value = self.annotation_enum()(value)
        return typer.Option(value, *(decls or self.decls), **kwargs)


def cli_options(cls: type, *, exclude: Sequence[str] = (), _path: tuple[str, ...] = (), _prefix: str = "",
                _base: Any = None) -> list[CliOption]:
    """The command-line options of a dataclass's fields (nested dataclasses flattened), minus ``exclude``.

    ``exclude`` holds field paths (``seed``, ``meta.lr``); excluding a nested field excludes its fields.
    """
    hints = typing.get_type_hints(cls)
    out: list[CliOption] = []
    for f in _init_fields(cls):
        path = (*_path, f.name)
        dotted = _dotted(path)
        if dotted in exclude or f.metadata.get("cli") is False:
            continue
        tp = hints[f.name]
        default = _field_default(f, _base)
        if dataclasses.is_dataclass(tp):
            prefix = f.metadata.get("prefix", f.name.replace("_", "-") + "-")
            out += cli_options(tp, exclude=exclude, _path=path, _prefix=_prefix + prefix,
                               _base=None if default is dataclasses.MISSING else default)
            continue
        inner, optional = _strip_optional(tp)
        inner = _list_or_str(inner)
        is_list = get_origin(inner) is list
        item = get_args(inner)[0] if is_list else inner
        lit = _literal_values(item)
        if is_list:
            annotation: Any = list[str] if lit is not None else inner
        elif lit is not None:
            annotation = _choice_enum(lit) | None if optional else _choice_enum(lit)
        else:
            annotation = tp
        name = f.metadata.get("flag") or "--" + (_prefix + f.name).replace("_", "-")
        if inner is bool and not optional and "/" not in name:
            name = f"{name}/--no-{name[2:]}"
        decls = (name, f.metadata["short"]) if "short" in f.metadata else (name,)
        if default is not dataclasses.MISSING and is_list:
            default = [default] if isinstance(default, str) else list(default)
        out.append(CliOption(path=path, param="__".join(path), decls=decls, annotation=annotation,
                             default=default, help=f.metadata.get("help", ""), choices=lit, is_list=is_list))
    return out


_ENUMS: dict[tuple[str, ...], type[enum.Enum]] = {}


def _choice_enum(values: tuple[str, ...]) -> type[enum.Enum]:
    if values not in _ENUMS:
        _ENUMS[values] = enum.Enum("Choice", {v: v for v in values}, type=str)  # type: ignore[misc]
    return _ENUMS[values]


def _split_list(opt: CliOption, values: Sequence[Any]) -> list[Any]:
    """Repeated and comma-separated values of a list option, checked against its choices."""
    items: list[Any] = []
    for v in values:
        items += [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else [v]
    if opt.choices is not None:
        import typer

        bad = [x for x in items if x not in opt.choices]
        if bad:
            raise typer.BadParameter(f"{bad[0]!r} is not one of {', '.join(map(repr, opt.choices))}",
                                     param_hint=f"'{opt.flag}'")
    return items


def _set(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _has(data: Mapping[str, Any], path: Sequence[str]) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _typed_on_command_line(ctx: typer.Context | None, param: str) -> bool:
    """Whether a value came from the command line (or the environment), not the option's default."""
    if ctx is None:
        return True
    source = ctx.get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def options_from(
    cls: type,
    *,
    exclude: Sequence[str] = (),
    param: str | None = None,
    config_flag: str | None = "--config",
    deprecated_flags: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command one option per field of ``cls``; the command receives the built dataclass.

    The decorated function declares a parameter annotated ``cls`` (or named by ``param``); its
    other parameters stay as they are. ``deprecated_flags`` maps an old flag to a field path
    (``{"--meta-every": "meta.every"}``): the old flag still sets the field, hidden from
    ``--help``, and prints one line naming the new flag. The old names of ``cls.__renamed__``
    are such flags too (``--lr`` for ``lr``), unless a current option already has that flag.
    """
    options = cli_options(cls, exclude=exclude)
    by_path = {o.path: o for o in options}
    taken = {d.split("/")[0] for o in options for d in o.decls}
    old_flags = {f"--{old.replace('_', '-')}": new for old, new in renamed(cls).items()
                 if f"--{old.replace('_', '-')}" not in taken and tuple(new.split(".")) in by_path}
    deprecated: list[tuple[str, CliOption, str]] = []
    for i, (old, target) in enumerate({**old_flags, **(deprecated_flags or {})}.items()):
        opt = by_path.get(tuple(target.split(".")))
        if opt is None:
            raise ValueError(f"deprecated flag {old} names no option field {target!r}")
        deprecated.append((f"deprecated__{i}", opt, old))

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        import typer

        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
        target = param or next((n for n, t in hints.items() if t is cls), None)
        if target is None or target not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no parameter for {cls.__name__}")
        kept = [p.replace(annotation=hints.get(p.name, p.annotation), kind=inspect.Parameter.KEYWORD_ONLY)
                for p in sig.parameters.values() if p.name != target]
        generated = [
            inspect.Parameter(o.param, inspect.Parameter.KEYWORD_ONLY, annotation=o.annotation,
                              default=o.typer_option())
            for o in options
        ]
        for name, opt, old in deprecated:
            decl = old if opt.annotation is not bool or "/" in old else f"{old}/--no-{old[2:]}"
            annotation = opt.annotation if opt.is_list else opt.annotation | None
            generated.append(inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                default=opt.typer_option(hidden=True, default=None, decls=(decl,)),
            ))
        if config_flag is not None:
            generated.append(inspect.Parameter(
                _CONFIG_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                default=typer.Option(None, config_flag, help=f"JSON or YAML of {cls.__name__} fields "
                                     "(options typed on the command line win)"),
            ))

        def command(**kwargs: Any) -> Any:
            ctx = kwargs.pop(_CTX_PARAM, None)
            config_file = kwargs.pop(_CONFIG_PARAM, None)
            data = read_config_file(config_file) if config_file is not None else {}
            data = rename_old_keys(cls, data, where=config_file)  # before the options' defaults fill it
            values = {o.param: kwargs.pop(o.param) for o in options}
            for name, opt, old in deprecated:
                value = kwargs.pop(name)
                if _typed_on_command_line(ctx, name) and ctx is not None:
                    typer.echo(f"warning: {old} is deprecated; use {opt.flag}", err=True)
                    if not _typed_on_command_line(ctx, opt.param):
                        values[opt.param] = value
                        ctx.set_parameter_source(opt.param, ctx.get_parameter_source(name))
            for o in options:
                value = values[o.param]
                if isinstance(value, enum.Enum):
                    value = value.value
                if o.is_list and value is not None:
                    value = _split_list(o, value)
                if _typed_on_command_line(ctx, o.param) or not _has(data, o.path):
                    if value is None and o.default is dataclasses.MISSING:
                        raise UserError(f"missing option {o.flag}", path=config_file)
                    _set(data, o.path, value)
            return fn(**kwargs, **{target: build(cls, data, where=config_file)})

        command.__name__ = fn.__name__
        command.__qualname__ = fn.__qualname__
        command.__doc__ = fn.__doc__
        command.__module__ = fn.__module__
        context = inspect.Parameter(_CTX_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        params = [context, *kept, *generated]
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def __getattr__(name: str) -> Any:
    """The pydantic side (``stage_model`` ...) loads on first use, so a dataclass module stays light."""
    if name in ("StageModel", "stage_model", "FieldValueError", "validation_error"):
        from dreamprm_code.options import models

        return getattr(models, name)
    raise AttributeError(name)

