"""Where training metrics go besides ``train_log.jsonl`` (``TrainConfig.report_to``): accelerate's experiment trackers.

:func:`tracker_settings` gives the ``Accelerator`` its trackers (``log_with``) and their directory,
``OUTPUT_DIR/runs`` (tensorboard writes ``runs/dreamprm-code/``, aim its repository there, dvclive
``runs/dvclive/``, wandb its local files under ``OUTPUT_DIR/wandb``); mlflow, comet_ml and clearml
follow their own settings (``MLFLOW_TRACKING_URI`` ...), as in ``transformers``. :func:`open_train_log`
starts them on the main process and returns the run's log, whose every record (loss, lr,
meta_loss, validation figures ...) also goes to them: the numbers only, at the record's ``step``.
A resumed run logs on into the same directory; tensorboard drops what a killed run had logged
after the state it resumes from (``purge_step``), so a step is never shown twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dreamprm_code.errors import UserError
from dreamprm_code.io import JsonlAppender
from dreamprm_code.prm.config import TRACKER_PACKAGES, TrainConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

PROJECT = "dreamprm-code"
RUNS_DIR = "runs"


def report_targets(config: TrainConfig) -> list[str]:
    """The trackers to start: ``all`` is every installed one, ``none`` none; a tracker named
    whose package is not installed is refused, naming the package to install."""
    from accelerate.tracking import get_available_trackers

    installed = {str(t) for t in get_available_trackers()}
    names = [t for t in dict.fromkeys(config.trackers) if t != "none"]
    if names == ["all"]:
        return [t for t in TRACKER_PACKAGES if t in installed]
    for name in names:
        if name not in installed:
            raise UserError(f"{name!r} needs the {TRACKER_PACKAGES[name]!r} package: "
                            f"pip install {TRACKER_PACKAGES[name]} (or leave {name!r} out)", field="report_to")
    return names


def tracker_settings(config: TrainConfig, out: Path) -> dict[str, Any]:
    """The ``Accelerator`` keyword arguments of ``config.report_to``'s trackers (none: ``{}``)."""
    targets = report_targets(config)
    if not targets:
        return {}
    from accelerate.utils import ProjectConfiguration

    return {"log_with": targets,
            "project_config": ProjectConfiguration(project_dir=str(out), logging_dir=str(out / RUNS_DIR))}


class TrackedLog(JsonlAppender):
    """``train_log.jsonl`` whose records also go to the accelerator's trackers (main process only)."""

    def __init__(self, path: str | Path, accelerator: Accelerator | None = None) -> None:
        super().__init__(path)
        self.accelerator = accelerator if accelerator is not None and accelerator.is_main_process else None

    def append(self, record: dict) -> None:
        super().append(record)
        if self.accelerator is not None and self.accelerator.trackers:
            numbers = {k: v for k, v in record.items()
                       if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"}
            self.accelerator.log(numbers, step=record.get("step"))

    def close(self) -> None:
        """Close the file and finish the trackers (their ``finish``: ``end_training`` would also
        tear down the process group, which a multi-process caller may still use)."""
        super().close()
        if self.accelerator is not None:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator.trackers = []


def open_train_log(out: Path, config: TrainConfig, accelerator: Accelerator, start_step: int) -> TrackedLog:
    """The run's log (``train_log.rankR.jsonl`` off the main process), with the trackers of
    ``accelerator`` (made with :func:`tracker_settings`) started: a run resumed at
    ``start_step`` logs on into the same tracker directory."""
    rank = accelerator.process_index
    if accelerator.log_with:
        out_dir = out / RUNS_DIR
        init_kwargs = {"tensorboard": {"purge_step": start_step + 1} if start_step else {},
                       "wandb": {"dir": str(out), "name": out.name},
                       "dvclive": {"dir": str(out_dir / "dvclive"), "resume": start_step > 0}}
        accelerator.init_trackers(PROJECT, config=_flat(config.to_dict()), init_kwargs=init_kwargs)
    return TrackedLog(out / ("train_log.jsonl" if rank == 0 else f"train_log.rank{rank}.jsonl"), accelerator)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config as trackers' hyperparameters take it: nested keys dotted, lists as text."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
    return flat
