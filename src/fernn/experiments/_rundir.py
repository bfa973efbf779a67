"""One run directory, one writer; nothing lost on resume.

- :class:`RunLock`: ``<run>/.fernn.lock`` holds the owner's pid, host and start time,
  created with ``O_EXCL``. A second writer is refused with a message naming the owner; a
  lock left by a process that no longer runs (same host) is stale and taken over.
- :class:`ResumableCSVLogger`: Lightning's CSV logger deletes ``metrics.csv`` when it
  starts; ours keeps the rows logged before the checkpoint the run resumes from (the
  rows of the interrupted epoch are logged again by its replay) and appends.
- :class:`TrainClock`: the training time of every segment of a run, kept in the
  checkpoints, so ``train_seconds`` is the run's total, resumed or not.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from .._atomic import atomic_open

__all__ = ["RunLock", "RunDirectoryBusy", "ResumableCSVLogger", "TrainClock", "is_main_process"]

LOCK_NAME = ".fernn.lock"


class RunDirectoryBusy(RuntimeError):
    """Another process writes into this run directory."""


def is_main_process() -> bool:
    """Whether this process is rank 0 of its job (or not distributed): the environment of
    torchrun, SLURM and Lightning's own launcher says, before any process group exists."""
    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(name)
        if value not in (None, "", "0"):
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(run_dir): ...`` — exclusive ownership of ``run_dir`` by this process."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: treated as held, named as such

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:
                    continue  # released meanwhile: try again
                if (owner.get("host") == me["host"] and isinstance(owner.get("pid"), int)
                        and not _alive(owner["pid"])):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                since = owner.get("started")
                when = (time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since))
                        if isinstance(since, (int, float)) else "")
                who = (f"process {owner.get('pid')} on {owner.get('host')}{when}" if owner
                       else "a process whose lock file cannot be read")
                raise RunDirectoryBusy(
                    f"{self.path.parent} is in use by {who} (lock {self.path}); wait for it to "
                    "finish, or train into another --out. If no such process runs, remove the "
                    "lock file.") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return
        raise RunDirectoryBusy(f"could not take the lock {self.path}: it keeps changing hands")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` keeps its rows of steps
    before ``keep_before`` (``None``: a fresh run, the file starts empty) and is appended to."""

    def __init__(self, log_dir: str, keep_before: int | None):
        self._keep_before = keep_before
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._keep_before is None:
            path.unlink()
            return
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [row for row in reader if row.get("step", "").isdigit()
                    and int(row["step"]) < self._keep_before]
        with atomic_open(path, "w") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that continues the log of a resumed run (see :class:`_KeepingWriter`)."""

    def __init__(self, *args, keep_before: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._keep_before = keep_before

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._keep_before)
        return self._experiment


class TrainClock(Callback):
    """Seconds spent in ``fit``, over every segment of a resumed run (saved in the
    checkpoint's callback state)."""

    def __init__(self):
        self.before = 0.0
        self._started: float | None = None

    def on_fit_start(self, trainer, pl_module):
        self._started = time.perf_counter()

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.before + running

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
