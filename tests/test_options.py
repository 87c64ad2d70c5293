"""The option mechanism: CLI options and pipeline models generated from one dataclass."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest
import typer
from typer.testing import CliRunner

from dreamprm_code.errors import UserError
from dreamprm_code.options import RenamedOptionWarning, build, choices, option, options_from, rename_old_keys
from dreamprm_code.options.models import stage_model

Loss = Literal["bce", "mse"]


@dataclass
class Inner:
    lr: float = option(0.1, help="outer learning rate")
    every: int = option(12, help="an outer step every M steps", flag="--meta-every")


@dataclass
class Settings:
    rollouts: int = option(8, short="-n", help="continuations per prefix")
    loss: Loss = option("bce", help="the step loss")
    give_up: int | None = option(None, help="give up after this many failures")
    probe: bool = option(True, help="probe passing solutions")
    stop: list[str] = option(default_factory=lambda: ["```"], help="stop strings")
    name: str = option("x", help="a name")
    meta: Inner = field(default_factory=lambda: Inner(lr=0.5))

    def __post_init__(self) -> None:
        if self.rollouts < 1:
            raise UserError(f"must be >= 1, got {self.rollouts}", field="rollouts")


def _app(**kwargs) -> tuple[typer.Typer, list[Settings]]:
    seen: list[Settings] = []
    app = typer.Typer()

    @app.command("run")
    @options_from(Settings, **kwargs)
    def run(settings: Settings, tag: str = typer.Option("t", "--tag", help="the command's own option")) -> None:
        """Record what the command was given."""
        seen.append(settings)
        typer.echo(f"tag={tag}")

    @app.command("other")
    def other() -> None:
        """A second command, so `run` is a subcommand."""

    return app, seen


def _invoke(args: list[str], **kwargs):
    app, seen = _app(**kwargs)
    result = CliRunner().invoke(app, ["run", *args])
    return result, seen


def test_defaults_equal_the_dataclass_defaults_nested_from_the_parent_factory():
    result, seen = _invoke([])
    assert result.exit_code == 0, result.output
    assert seen == [Settings()]
    assert seen[0].meta.lr == 0.5  # the parent's default instance, not Inner's own 0.1
    assert "tag=t" in result.output


def test_help_lists_every_field_with_its_help_and_flag():
    result, _ = _invoke(["--help"])
    out = " ".join(result.output.split())
    for text in ("--rollouts", "-n", "continuations per prefix", "--loss", "the step loss", "--probe", "--no-probe",
                 "--meta-lr", "outer learning rate", "--meta-every", "--give-up", "--stop", "--config", "--tag"):
        assert text in out, text
    assert "--meta-meta-every" not in out


def test_values_reach_the_dataclass_typed():
    result, seen = _invoke(["-n", "3", "--loss", "mse", "--no-probe", "--give-up", "2", "--stop", "a,b",
                            "--stop", "c", "--meta-lr", "0.25", "--meta-every", "4", "--name", "y"])
    assert result.exit_code == 0, result.output
    assert seen == [Settings(rollouts=3, loss="mse", give_up=2, probe=False, stop=["a", "b", "c"], name="y",
                             meta=Inner(lr=0.25, every=4))]


def test_a_literal_rejects_a_bad_choice_naming_the_choices():
    result, seen = _invoke(["--loss", "hinge"])
    assert result.exit_code == 2 and not seen
    assert "'--loss'" in result.output and "'hinge' is not one of 'bce', 'mse'" in result.output


def test_a_check_in_post_init_names_the_field():
    result, seen = _invoke(["-n", "0"])
    assert not seen and isinstance(result.exception, UserError)
    assert str(result.exception) == "field 'rollouts': must be >= 1, got 0"


def test_a_config_file_sets_fields_and_options_typed_on_the_command_line_win(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rollouts: 5\nloss: mse\nmeta: {every: 2}\n", encoding="utf-8")
    result, seen = _invoke(["--config", str(cfg), "--loss", "bce", "--meta-lr", "0.3"])
    assert result.exit_code == 0, result.output
    assert seen == [Settings(rollouts=5, loss="bce", meta=Inner(lr=0.3, every=2))]
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"probe": False, "stop": ["END"]}), encoding="utf-8")
    result, seen = _invoke(["--config", str(js)])
    assert seen == [Settings(probe=False, stop=["END"])]


@pytest.mark.parametrize(("text", "key", "message"), [
    ("bogus: 1\n", "bogus", "unknown option"),
    ("meta: {lr: fast}\n", "meta.lr", "valid number"),
    ("loss: hinge\n", "loss", "'bce' or 'mse'"),
    ("rollouts: 0\n", "rollouts", "must be >= 1"),
])
def test_config_file_errors_name_the_file_and_the_key(tmp_path, text, key, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text, encoding="utf-8")
    result, seen = _invoke(["--config", str(cfg)])
    assert not seen and isinstance(result.exception, UserError)
    err = result.exception
    assert err.path == str(cfg) and err.field == key and message in err.message


def test_a_deprecated_flag_still_works_and_says_what_replaced_it():
    result, seen = _invoke(["--every", "7", "--old-probe"],
                           deprecated_flags={"--every": "meta.every", "--old-probe": "probe"})
    assert result.exit_code == 0, result.output
    assert seen[0].meta.every == 7
    assert "--every is deprecated; use --meta-every" in result.output
    assert "--old-probe is deprecated; use --probe" in result.output
    help_text = _invoke(["--help"], deprecated_flags={"--every": "meta.every"})[0].output
    assert "--every " not in help_text  # hidden
    result, seen = _invoke(["--every", "7", "--meta-every", "3"], deprecated_flags={"--every": "meta.every"})
    assert seen[0].meta.every == 3  # the current flag wins


def test_exclude_leaves_a_field_at_its_default():
    result, seen = _invoke(["--help"], exclude=("meta.lr", "stop"))
    assert "--meta-lr" not in result.output and "--stop" not in result.output
    result, seen = _invoke([], exclude=("meta.lr", "stop"))
    assert seen == [Settings()]


def test_build_and_choices():
    assert choices(Loss) == ("bce", "mse")
    assert build(Settings, {"meta": {"every": 3}}).meta == Inner(lr=0.5, every=3)
    with pytest.raises(UserError) as exc:
        build(Settings, {"meta": {"every": 3, "x": 1}}, where="f.json")
    assert exc.value.field == "meta.x" and exc.value.path == "f.json"


def test_stage_model_has_the_dataclass_defaults_types_and_checks():
    from pydantic import ValidationError

    model = stage_model(Settings, name="SettingsModel", include=("rollouts", "loss", "stop"))
    assert model().model_dump() == {"rollouts": 8, "loss": "bce", "stop": ["```"]}
    assert model.model_fields["rollouts"].description == "continuations per prefix"
    assert model(rollouts=3).build(name="z") == Settings(rollouts=3, name="z")
    with pytest.raises(ValidationError):
        model(loss="hinge")
    with pytest.raises(ValidationError):
        model(colour="blue")
    with pytest.raises(ValidationError) as exc:
        model(rollouts=0)
    from dreamprm_code.options.models import validation_error

    assert validation_error(exc.value.errors()[0]) == ("rollouts", "must be >= 1, got 0")


def _dataclass_defaults(cls: type, names) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in names:
            out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return out


def test_every_pipeline_stage_model_has_its_dataclass_defaults():
    from dreamprm_code.execution import Limits
    from dreamprm_code.labeling import LabelConfig
    from dreamprm_code.pipeline.config import ExecutionStageConfig, LabelStageConfig, PolicyConfig
    from dreamprm_code.policy import SamplingParams

    for model, cls in ((LabelStageConfig, LabelConfig), (PolicyConfig, SamplingParams),
                       (ExecutionStageConfig, Limits)):
        names = model.__dataclass_names__
        assert names, model
        dumped = model().model_dump()
        assert {k: dumped[k] for k in names} == _dataclass_defaults(cls, names), model.__name__
        assert all(model.model_fields[n].description for n in names), model.__name__


def test_the_real_commands_defaults_are_the_dataclass_defaults():
    """`label`, `generate`, `execute` and `search` take their options from the dataclasses."""
    from dreamprm_code.cli import app
    from dreamprm_code.execution import Limits
    from dreamprm_code.labeling import LabelConfig
    from dreamprm_code.policy import SamplingParams
    from dreamprm_code.scaling.config import SearchConfig

    group = typer.main.get_command(app)
    for command, flags in (
        ("label", {"--rollouts": LabelConfig.rollouts, "--temperature": LabelConfig.temperature,
                   "--max-new-tokens": LabelConfig.max_new_tokens, "--concurrency": LabelConfig.concurrency,
                   "--strategy": LabelConfig.strategy}),
        ("generate", {"--max-new-tokens": SamplingParams.max_new_tokens, "--top-p": SamplingParams.top_p}),
        ("execute", {"--timeout": Limits.timeout, "--memory-mb": Limits.memory_mb}),
        ("search", {"--max-new-tokens": SearchConfig().sampling.max_new_tokens, "--beam": SearchConfig.beam,
                    "--temperature": SearchConfig().sampling.temperature}),
    ):
        params = {opt: p for p in group.commands[command].params for opt in p.opts}
        for flag, default in flags.items():
            got = params[flag].default
            assert getattr(got, "value", got) == default, (command, flag, got)
            assert params[flag].help, (command, flag)


@dataclass
class Renamed:
    """Settings whose fields had other names in an earlier release."""

    __renamed__: ClassVar[dict[str, str]] = {"n": "rollouts", "every": "meta.every"}
    rollouts: int = option(8, help="continuations per prefix")
    meta: Inner = field(default_factory=Inner)


def test_old_names_build_with_a_warning_and_the_current_name_wins():
    with pytest.warns(RenamedOptionWarning, match="f.yaml: 'n' is deprecated; use 'rollouts'"):
        assert build(Renamed, {"n": 3}, where="f.yaml").rollouts == 3
    with pytest.warns(RenamedOptionWarning, match="'every' is deprecated; use 'meta.every'"):
        assert build(Renamed, {"every": 4, "meta": {"lr": 0.2}}).meta == Inner(lr=0.2, every=4)
    with pytest.warns(RenamedOptionWarning, match="'n' is ignored"):
        assert build(Renamed, {"n": 3, "rollouts": 5}).rollouts == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rename_old_keys(Renamed, {"n": 2}, warn=False) == {"rollouts": 2}  # a saved config: quietly


def test_old_names_are_hidden_flags_that_name_their_replacement():
    app = typer.Typer()
    seen: list[Renamed] = []

    @app.command("run")
    @options_from(Renamed)
    def run(settings: Renamed) -> None:
        seen.append(settings)

    @app.command("other")
    def other() -> None:
        """A second command."""

    result = CliRunner().invoke(app, ["run", "--n", "3", "--every", "5"])
    assert result.exit_code == 0, result.output
    assert seen[0].rollouts == 3 and seen[0].meta.every == 5
    assert "warning: --n is deprecated; use --rollouts" in result.output
    assert "warning: --every is deprecated; use --meta-every" in result.output
    assert "--n " not in CliRunner().invoke(app, ["run", "--help"]).output
