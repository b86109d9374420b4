"""Run folders: where a command writes, and the rule that no command destroys a run it was not
told to continue. Shared by every CLI that writes a run (train, finetune_qa, ...).

    run = open_run_dir(out, resume=..., overwrite=...)
    ... write metrics, plots, checkpoints under run.path ...
    run.committed()   # right after the first complete save (checkpoint.save_checkpoint)

The three cases:

* continue (``--resume X`` with no ``--out``, or ``--out`` equal to X's run folder): the run goes
  on in X's run folder; nothing is removed there (the checkpoint code only adds step folders and
  prunes the oldest; ``runlog.truncate_metrics`` drops the records after the resumed step).
* fresh, into a missing or empty folder: written there directly.
* fresh, into a folder that holds anything: refused with one line, unless ``--overwrite``. Then
  the new run is written into a hidden sibling folder ``.NAME.new.XXXX`` and the old folder is
  replaced by it only after the new run's first complete save (:meth:`RunDir.committed`): a crash
  or Ctrl-C before that leaves the old run untouched. Then the two folders are swapped in one atomic
  step (`atomic.replace_folder`: Linux ``renameat2``; elsewhere two renames, and what a kill between
  them leaves is put back by the next command that opens the folder, `atomic.recover_folder`).

While a run is open it holds the folder's advisory lock (`atomic.folder_lock`, released by
:meth:`RunDir.release` or when the process ends): a second command on the same folder, even one
that would be refused, is stopped before it cleans anything up, with the first one's PID.
"""
from __future__ import annotations

import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from minispanbert.engine.runs.atomic import folder_lock, interrupts_deferred, recover_folder, replace_folder, temp_dir
from minispanbert.engine.runs.checkpoint import CHECKPOINTS_DIR, TRAINER_STATE_FILE, latest_step, resolve_checkpoint


@dataclass
class RunDir:
    """``path``: where the run writes now; ``final``: where its files end up."""

    path: Path
    final: Path
    resumed: bool = False
    lock: ExitStack = field(default_factory=ExitStack)  # the run folder's folder_lock, held until release()

    @property
    def staged(self) -> bool:
        return self.path != self.final

    def committed(self) -> None:
        """Call after each complete save; the first one of an ``--overwrite`` run moves the new run
        into place and removes the old one."""
        if not self.staged:
            return
        with interrupts_deferred():
            self._swap()

    def _swap(self) -> None:
        replace_folder(self.path, self.final)
        self.path = self.final

    def discard(self) -> None:
        """Remove an uncommitted staging folder (the old run stays as it was)."""
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)

    def release(self) -> None:
        """Let other commands write the folder again (call when the run has ended, however)."""
        self.lock.close()


def run_folder_of(checkpoint_path) -> Path:
    """The run folder a ``--resume`` path belongs to: a step folder's ``OUT`` (OUT/checkpoints/step-N),
    else the folder itself."""
    folder = resolve_checkpoint(checkpoint_path)
    if folder.parent.name == CHECKPOINTS_DIR and not (Path(checkpoint_path) / CHECKPOINTS_DIR).is_dir():
        return folder.parent.parent
    return Path(checkpoint_path)


def describe(folder: Path) -> str:
    step = latest_step(folder)
    if step is not None:
        return f"a run saved at step {step}"
    if (folder / CHECKPOINTS_DIR).is_dir() or (folder / TRAINER_STATE_FILE).exists():
        return "a run with no complete checkpoint"
    return "files"


def open_run_dir(out, *, resume=None, overwrite: bool = False) -> RunDir:
    """Decide where a run writes (see the module docstring). ``out`` None with ``resume`` means
    "continue in the resumed run's folder"; ``out`` None without it is an error of the caller.
    Raises ValueError (one line naming the folder and the fix)."""
    lock = ExitStack()
    if resume is not None:
        source = run_folder_of(resume)
        if out is None or Path(out).resolve() == source.resolve():
            lock.enter_context(folder_lock(source))
            recover_folder(source)
            return RunDir(path=source, final=source, resumed=True, lock=lock)
    final = Path(out)
    try:
        lock.enter_context(folder_lock(final))  # before anything is cleaned up: another run may own it
        recover_folder(final)
    except OSError:
        pass  # an unreadable parent: reported below when the folder is created
    if final.exists() and not final.is_dir():
        lock.close()
        raise ValueError(f"--out {final} is a file, not a folder: choose another --out")
    busy = final.is_dir() and any(final.iterdir())
    if busy and not overwrite:
        lock.close()
        raise ValueError(
            f"--out {final} already holds {describe(final)}: continue it with --resume {final}, "
            f"choose another --out, or pass --overwrite to replace it (only once the new run has saved)"
        )
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if busy:
            return RunDir(path=temp_dir(final.parent, f"{final.name}.new"), final=final, lock=lock)
        final.mkdir(exist_ok=True)
        probe = final / ".write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        lock.close()
        raise ValueError(f"output folder {final} is not writable ({exc.strerror}): choose another --out") from None
    return RunDir(path=final, final=final, lock=lock)
