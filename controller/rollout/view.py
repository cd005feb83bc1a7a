"""How a rollout looks while it runs and after: a live table on a terminal (wave, host, phase, health, digest,
time), one line per change otherwise, one JSON object per event with `--format json`; the final summary.

The engine reports `Event`s; `RolloutView` is its `on_event`. `rollout status` draws the same table from the
journal (`journal_rows`), where the agent's health is not kept: there the DETAIL column says what the
journal knows.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from controller import output
from controller.rollout.engine import Event, Result
from controller.rollout.journal import HostStep, Rollout
from controller.rollout.plan import Plan

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table as RichTable

COLUMNS = ["WAVE", "HOST", "PHASE", "HEALTH", "DIGEST", "TIME", "DETAIL"]
MESSAGES = 3  # the engine's last messages kept under the live table


@dataclass
class Row:
    wave: int
    host: str
    step: str = "planned"
    health: str = ""
    digest: str = ""
    since: float = 0.0  # when the step began (epoch seconds)
    detail: str = ""

    def cells(self, now: float, canary: bool) -> list[str]:
        wave = f"{self.wave} (canary)" if canary else str(self.wave)
        return [
            wave,
            self.host,
            self.step,
            self.health,
            _short(self.digest),
            _ago(now - self.since) if self.since else "-",  # not started yet
            self.detail,
        ]


def _short(digests: str) -> str:
    """`app=sha256:0123456789ab…` → `app=0123456789ab` (each container)."""
    parts = []
    for item in digests.split(", ") if digests else []:
        name, _, digest = item.rpartition("=")
        short = digest.split(":", 1)[-1][:12]
        parts.append(f"{name}={short}" if name else short)
    return " ".join(parts)


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"


class RolloutView:
    """Feed it the engine's events (`view(event)`); `mode`: "live" | "lines" | "json"."""

    def __init__(
        self, plan: Plan, *, mode: str, console: Console | output.PlainConsole | None = None
    ) -> None:
        self.plan = plan
        self.mode = mode
        self.console = console
        self.canary = {h for w in plan.waves if w.canary for h in w.hosts}
        self.rows = {h: Row(w.number, h) for w in plan.waves for h in w.hosts}
        self.state = "planned"
        self.reason = ""  # the rollout's reason (what it waits for, why it stopped)
        self.messages: list[str] = []  # the engine's messages, shown under the live table
        self.started = time.time()
        self._live: Live | None = None

    def __enter__(self) -> RolloutView:
        if (
            self.mode == "live"
            and self.console is not None
            and not isinstance(self.console, output.PlainConsole)
        ):
            from rich.live import Live

            self._live = Live(console=self.console, refresh_per_second=4, get_renderable=self.table)
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.refresh()
            self._live.stop()
            self._live = None

    def __call__(self, event: Event) -> None:
        if self.mode == "json":
            sys.stdout.write(json.dumps(event.to_json(), default=str) + "\n")
            sys.stdout.flush()
            return
        # on a terminal the live table says the state and the messages: a line printed meanwhile would
        # land between two of its redraws
        if event.kind == "rollout":
            self.state, self.reason = event.state, event.detail
            if self._live is None:
                self._line(
                    f"rollout {event.rollout_id}: {event.state}"
                    + (f" ({event.detail})" if event.detail else "")
                )
        elif event.kind == "message":
            self.messages = [*self.messages[-(MESSAGES - 1) :], event.detail]
            if self._live is None:
                self._line(event.detail)
        elif event.kind == "host":
            self._host(event)

    def _host(self, e: Event) -> None:
        row = self.rows.get(e.host)
        if row is None:
            return
        changed = row.step != e.step or (e.phase and row.health != e.phase)
        if row.step != e.step:
            row.since = e.at
        row.step = e.step
        row.health = e.phase or row.health
        row.digest = e.digest or row.digest
        row.detail = e.detail
        if changed and self._live is None:
            health = f" [{row.health}]" if row.health else ""
            detail = f": {e.detail}" if e.detail else ""
            self._line(f"wave {row.wave} {row.host}: {row.step}{health}{detail}")

    def _line(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False)

    def table(self) -> RichTable:
        from rich.table import Table
        from rich.text import Text

        title = f"{self.state}  {_ago(time.time() - self.started)}" + (
            f"  {self.reason}" if self.reason else ""
        )
        caption = Text("\n".join(self.messages)) if self.messages else None
        t = Table(title=Text(title), title_justify="left", caption=caption, caption_justify="left", box=None)
        for c in COLUMNS:
            t.add_column(c, overflow="fold" if c == "DETAIL" else "ellipsis", no_wrap=c != "DETAIL")
        now = time.time()
        for row in self.rows.values():
            t.add_row(*row.cells(now, row.host in self.canary))
        return t


# ---- summaries and the journal's view -------------------------------------------------------------------


def summary(result: Result, rollout: Rollout, seconds: float | None = None) -> list[str]:
    """The final lines: state, counts, and each host that did not commit, with why."""
    counts = result.counts()
    parts = [f"{n} {step}" for step, n in sorted(counts.items())]
    took = f" in {_ago(seconds)}" if seconds is not None else ""
    lines = [f"rollout {result.rollout_id} ({rollout.release}): {result.state}{took} — {', '.join(parts)}"]
    if result.reason:
        lines.append(f"  {result.reason}")
    for host, step in result.steps.items():
        if str(step.step) not in ("committed", "staged") and step.detail:
            lines.append(f"  {host}: {step.step}: {step.detail}")
    return lines


def result_json(result: Result, rollout: Rollout) -> dict[str, Any]:
    return {
        "kind": "result",
        "rollout_id": result.rollout_id,
        "release": rollout.release,
        "state": str(result.state),
        "exit_code": result.exit_code,
        "reason": result.reason,
        "hosts": {h: step_json(s) for h, s in result.steps.items()},
    }


def step_json(s: HostStep) -> dict[str, Any]:
    return {"wave": s.wave, "step": str(s.step), "revision": s.revision, "detail": s.detail, "at": s.at}


def rollout_json(r: Rollout, steps: Mapping[str, HostStep] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": r.id,
        "release": r.release,
        "state": str(r.state),
        "reason": r.reason,
        "owner": r.owner,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "hosts": len(list(r.plan.hosts())),
        "waves": [list(w.hosts) for w in r.plan.waves],
        "images": dict(r.options.get("images", {})),
        "options": dict(r.options.get("flags", {})),
    }
    if steps is not None:
        data["steps"] = {h: step_json(s) for h, s in steps.items()}
    return data


def journal_rows(r: Rollout, steps: Mapping[str, HostStep], now: float | None = None) -> output.Table:
    """`rollout status`: one row per host from the journal (the live engine's health is not kept there)."""
    now = time.time() if now is None else now
    canary = {h for w in r.plan.waves if w.canary for h in w.hosts}
    rows: list[Sequence[Any]] = []
    for wave in r.plan.waves:
        for host in wave.hosts:
            s = steps.get(host)
            label = f"{wave.number} (canary)" if host in canary else str(wave.number)
            if s is None:
                rows.append([label, host, "planned", "", "", ""])
                continue
            rows.append([label, host, str(s.step), s.revision or "", _ago(now - s.at), s.detail])
    return output.Table(["WAVE", "HOST", "PHASE", "REVISION", "SINCE", "DETAIL"], rows)
