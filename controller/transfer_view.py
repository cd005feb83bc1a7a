"""Per-blob progress of a pull, push or image send: rich progress bars on a terminal, plain lines otherwise.

Plain mode prints one line per state change (`<short digest>: Downloading`, `…: Pull complete`), which
reads well in logs and, prefixed with the host, in fleet-wide runs. Bytes only move the bars. A pull or
push has one view per host (its `HostOutput` adds the prefix); an image send drives several hosts through
one view and names the host in each `update`.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from controller.app import HostOutput
from controller.output import PlainConsole

PULL_WORDS = {
    "waiting": "Waiting",
    "downloading": "Downloading",
    "extracting": "Extracting",
    "exists": "Already exists",
    "done": "Pull complete",
}
PUSH_WORDS = {
    "waiting": "Waiting",
    "uploading": "Pushing",
    "exists": "Layer already exists",
    "mounted": "Mounted from another repository",
    "done": "Pushed",
}
SEND_WORDS = {
    "exists": "Already exists",
    "sending": "Sending",
    "sent": "Sent",
    "retrying": "Retrying",
    "failed": "Failed",
}


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class TransferView:
    """Feed it `update(digest, state, current, total)`; it decides how to show it."""

    def __init__(
        self,
        out: HostOutput,
        console: Console | PlainConsole,
        *,
        interactive: bool,
        words: dict[str, str],
        silent: bool = False,
    ) -> None:
        self.out = out
        self.words = words
        self.silent = silent
        self._last_state: dict[tuple[str | None, str], str] = {}
        self._progress: Progress | None = None
        self._tasks: dict[tuple[str | None, str], TaskID] = {}
        if interactive and not silent and not isinstance(console, PlainConsole):
            self._progress = Progress(
                TextColumn("{task.fields[name]}"),
                BarColumn(bar_width=30),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[state]}"),
                console=console,
                transient=False,
            )

    def __enter__(self) -> TransferView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def message(self, text: str) -> None:
        if self.silent:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.out.line(text)

    def update(self, digest: str, state: str, current: int, total: int, *, host: str | None = None) -> None:
        """`host`: which host this blob goes to when one view shows several (bar label and line prefix)."""
        if self.silent:
            return
        word = self.words.get(state, state)
        key = (host, digest)
        if self._progress is not None:
            task = self._tasks.get(key)
            if task is None:
                label = f"{host} {short(digest)}" if host else short(digest)
                task = self._progress.add_task("", total=total or None, name=label, state=word)
                self._tasks[key] = task
            self._progress.update(task, completed=current, total=total or None, state=word)
            return
        if self._last_state.get(key) != state:
            self._last_state[key] = state
            out = HostOutput(host) if host else self.out
            out.line(f"{short(digest)}: {word}")
