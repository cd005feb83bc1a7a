"""Per-layer progress of a pull or push: rich progress bars on a terminal, plain lines otherwise.

Plain mode prints one line per state change (`<short digest>: Downloading`, `…: Pull complete`), which
reads well in logs and, prefixed with the host, in fleet-wide runs. Bytes only move the bars.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from controller.app import HostOutput

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


def short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


class TransferView:
    """Feed it `update(digest, state, current, total)`; it decides how to show it."""

    def __init__(
        self,
        out: HostOutput,
        console: Console,
        *,
        interactive: bool,
        words: dict[str, str],
        silent: bool = False,
    ) -> None:
        self.out = out
        self.words = words
        self.silent = silent
        self._last_state: dict[str, str] = {}
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        if interactive and not silent:
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

    def update(self, digest: str, state: str, current: int, total: int) -> None:
        if self.silent:
            return
        word = self.words.get(state, state)
        if self._progress is not None:
            task = self._tasks.get(digest)
            if task is None:
                task = self._progress.add_task("", total=total or None, name=short(digest), state=word)
                self._tasks[digest] = task
            self._progress.update(task, completed=current, total=total or None, state=word)
            return
        if self._last_state.get(digest) != state:
            self._last_state[digest] = state
            self.out.line(f"{short(digest)}: {word}")
