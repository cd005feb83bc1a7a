"""`dockyard rollout …`: health-gated rollouts of a release file to the selected hosts (controller/rollout/).

    dockyard -H @edge rollout apply -f web.toml [--canary N|P%] [--batch N|P%|exp] [--budget KEY=N …]
        [--max-fail N|P%] [--on-failure pause|rollback] [--min-healthy 10s] [--deadline 2m] [--delay 0s]
        [--stage-only] [--start-first] [--detach] [--download-window W] [--apply-window W] [--tz ZONE]
        [--lock-timeout D] [--force] [--dry-run] [--watch-grace D]
    dockyard rollout status [ID] | ls | resume ID | pause ID | abort ID
    dockyard -H @edge rollout undo NAME

The journal (SQLite in the config dir, or PostgreSQL: $DOCKYARD_JOURNAL / `journal = "…"` in config.toml)
keeps each rollout's hosts and addresses, so `status/resume/pause/abort` need no -H. Exit codes of apply and
resume: 0 every host verified (or the failures within --max-fail), 1 failed or rolled back, 3 paused.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from controller import output, units
from controller.api.releases import ReleasesApi, ReleaseState
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.commands.release import state_json, state_table
from controller.errors import ControllerError, UsageError
from controller.rollout import compose_release
from controller.rollout import engine as eng
from controller.rollout import plan as plan_mod
from controller.rollout import secrets as secrets_mod
from controller.rollout import spec as spec_mod
from controller.rollout import values as values_mod
from controller.rollout import view as view_mod
from controller.rollout import windows as windows_mod
from controller.rollout.journal import (
    Journal,
    PostgresJournal,
    Rollout,
    RolloutState,
    SqliteJournal,
    open_journal,
)

HOSTS_KEY = "dockyard.hosts"  # where controller.cli leaves the inventory hosts -H chose (with labels)
LOG_DIR = "rollouts"


def _journal(app: App) -> Journal:
    return open_journal(cfg_dir=app.config_dir)


def _seconds(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return units.parse_duration(value, flag) / 1e9
    except units.InvalidValue as exc:
        raise UsageError(str(exc)) from None


def _selected(ctx: click.Context, app: App) -> list[eng.HostInfo]:
    """The selected hosts with their inventory labels, values (vars) and groups."""
    chosen = {h.name: h for h in ctx.meta.get(HOSTS_KEY) or []}
    out = []
    for t in app.targets:
        h = chosen.get(t.name)
        if h is None:
            out.append(eng.HostInfo(t.name, t))
        else:
            out.append(eng.HostInfo(t.name, t, dict(h.labels), dict(h.values), tuple(h.groups)))
    return out


def _secret_store(app: App, journal: Journal) -> secrets_mod.SecretStore | None:
    if isinstance(journal, SqliteJournal | PostgresJournal):
        return secrets_mod.SecretStore(journal, app.config_dir)
    return None


def _mode(app: App) -> str:
    if app.json:
        return "json"
    from rich.console import Console

    return "live" if isinstance(app.console, Console) and app.console.is_terminal else "lines"


def _drive(app: App, journal: Journal, rollout: Rollout, *, resume: bool, force: bool = False) -> int:
    """Run (or resume) the engine in this process with the live view; the exit code."""
    fleet = eng.AgentFleet({h.name: h.target for h in eng.hosts_of(rollout)}, app.config_dir)
    mode = _mode(app)
    started = time.monotonic()
    view = view_mod.RolloutView(rollout.plan, mode=mode, console=app.console)

    async def go() -> eng.Result:
        try:
            with view:
                engine = eng.Engine(journal, fleet, on_event=view, secrets=_secret_store(app, journal))
                return await engine.run(rollout.id, resume=resume, heartbeat_window=0 if force else None)
        finally:
            await fleet.close()

    try:
        result = asyncio.run(go())
    except KeyboardInterrupt:
        # what was begun is journaled; a paused rollout resumes at once (no heartbeat to wait out)
        asyncio.run(
            journal.set_state(
                rollout.id,
                RolloutState.PAUSED,
                "interrupted (Ctrl-C)",
                expect=[RolloutState.STAGING, RolloutState.RUNNING, RolloutState.PLANNED],
            )
        )
        again = f"dockyard rollout resume {rollout.id}"
        print(f"interrupted: rollout {rollout.id} paused; continue with `{again}`", file=sys.stderr)
        return eng.EXIT_PAUSED
    if mode == "json":
        print(json_line(view_mod.result_json(result, rollout)))
    else:
        for line in view_mod.summary(result, rollout, time.monotonic() - started):
            app.console.print(line, markup=False)
    return result.exit_code


def json_line(data: Any) -> str:
    import json

    return json.dumps(data, default=str)


def _detach(app: App, rollout_id: str, *, force: bool = False) -> None:
    """`rollout resume ID` in a background process of its own session; output to a log in the config dir."""
    logs = app.config_dir / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{rollout_id}.log"
    argv = [sys.executable, "-m", "controller", "--config-dir", str(app.config_dir)]
    if app.json:
        argv += ["--format", "json"]
    argv += ["rollout", "resume", rollout_id, *(["--force"] if force else [])]
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if app.json:
        print(json_line({"rollout_id": rollout_id, "log": str(log_path)}))
    else:
        print(rollout_id)
        print(f"running in the background; `dockyard rollout status {rollout_id}`, log: {log_path}",
              file=sys.stderr)  # fmt: skip


def _exit(code: int) -> None:
    if code:
        raise SystemExit(code)


@click.group()
def rollout() -> None:
    """Roll a release out to the selected hosts: stage everywhere, canary, waves, health-gated."""


@rollout.command("apply")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(path_type=Path),
    help="release file (TOML, or a compose file)",
)
@click.option(
    "--canary", default="1", show_default=True, metavar="N|P%", help="hosts in the first wave (0 = none)"
)
@click.option("--batch", default="25%", show_default=True, metavar="N|P%|exp", help="hosts per wave after it")
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    metavar="KEY=N",
    help="at most N hosts per value of label KEY per wave",
)
@click.option(
    "--max-fail", "max_fail", default="0", show_default=True, metavar="N|P%", help="failed hosts tolerated"
)
@click.option("--on-failure", type=click.Choice(["pause", "rollback"]), default="pause", show_default=True)
@click.option("--min-healthy", metavar="DURATION", help="continuous health needed (agent default 10s)")
@click.option("--deadline", metavar="DURATION", help="time to become healthy (agent default 2m)")
@click.option("--delay", default="0s", show_default=True, metavar="DURATION", help="pause between waves")
@click.option("--stage-only", is_flag=True, help="stop after staging (switch later with `rollout resume`)")
@click.option("--start-first", is_flag=True, help="start the new containers before stopping the old")
@click.option("-d", "--detach", is_flag=True, help="run in the background and print the rollout id")
@click.option(
    "--download-window", default="", metavar="WINDOW", help='stage only then, e.g. "Mon-Fri 01:00-05:00"'
)
@click.option("--apply-window", default="", metavar="WINDOW", help='switch only then, e.g. "Sat 02:00-04:00"')
@click.option("--tz", default="", metavar="ZONE", help="the windows' time zone (default: local)")
@click.option("--lock-timeout", metavar="DURATION", help="how long a host held by its update lock waits")
@click.option("--force", is_flag=True, help="then switch it anyway (at once without --lock-timeout; admin)")
@click.option("--dry-run", is_flag=True, help="print each host's rendered spec and the waves; change nothing")
@click.option(
    "--watch-grace",
    metavar="DURATION",
    help="how long after --deadline a host that went silent (link cut) is waited for before it counts as"
    " failed; its agent decides alone meanwhile (default: half the deadline, at most 30s)",
)
@click.pass_context
def apply(
    ctx: click.Context,
    path: Path,
    canary: str,
    batch: str,
    budgets: tuple[str, ...],
    max_fail: str,
    on_failure: str,
    min_healthy: str | None,
    deadline: str | None,
    delay: str,
    stage_only: bool,
    start_first: bool,
    detach: bool,
    download_window: str,
    apply_window: str,
    tz: str,
    lock_timeout: str | None,
    force: bool,
    dry_run: bool,
    watch_grace: str | None,
) -> None:
    """Roll the release in FILE out to the selected hosts (-H, --selector)."""
    app: App = ctx.obj
    options = eng.Options(
        canary=canary,
        batch=batch,
        budgets=plan_mod.parse_budgets(budgets),
        max_fail=max_fail,
        on_failure=on_failure,
        min_healthy=_seconds(min_healthy, "--min-healthy"),
        deadline=_seconds(deadline, "--deadline"),
        delay=_seconds(delay, "--delay") or 0.0,
        stage_only=stage_only,
        start_first=start_first,
        download_window=download_window,
        apply_window=apply_window,
        tz=windows_mod.check_tz(tz),
        lock_timeout=_seconds(lock_timeout, "--lock-timeout"),
        force=force,
        watch_grace=_seconds(watch_grace, "--watch-grace"),
    )
    options.plan_options()  # every count checked before anything happens
    for kind, text in (("--download-window", download_window), ("--apply-window", apply_window)):
        if text:
            windows_mod.parse(text, options.tz, flag=kind)
    if (
        options.min_healthy is not None
        and options.deadline is not None
        and options.min_healthy > options.deadline
    ):
        raise UsageError(f"--min-healthy {min_healthy} is longer than --deadline {deadline}")
    release = compose_release.load(path)  # a compose file or the TOML form
    hosts = _selected(ctx, app)
    journal = _journal(app)
    secrets = _secret_store(app, journal)
    if dry_run:
        asyncio.run(_dry_run(app, release, hosts, options, secrets))
        return
    fleet = eng.AgentFleet({h.name: h.target for h in hosts}, app.config_dir)

    async def create() -> Rollout:
        try:
            return await eng.create(journal, fleet, release, hosts, options, secrets=secrets)
        finally:
            await fleet.close()

    created = asyncio.run(create())
    if detach:
        _detach(app, created.id)
        return
    _exit(_drive(app, journal, created, resume=False))


async def _dry_run(
    app: App,
    release: spec_mod.Release,
    hosts: list[eng.HostInfo],
    options: eng.Options,
    secrets: secrets_mod.SecretStore | None,
) -> None:
    """What `apply` would do: the waves, each host's windows and rendered spec (secrets by name and
    version only; images as written: tags are pinned when the rollout is created)."""
    if not hosts:
        raise ControllerError("no hosts selected: say which with -H or --selector")
    plan = plan_mod.make_plan([plan_mod.PlanHost(h.name, h.labels) for h in hosts], options.plan_options())
    eng.plan_windows(options, hosts)
    identity = {ref: "" for ref in release.images()}
    specs = await eng.host_specs(release, hosts, identity, secrets, pin=False)
    windows = {
        h.name: {k: w.text for k in ("download", "apply") if (w := options.window(k, h.values)) is not None}
        for h in hosts
    }
    if app.json:
        data = {
            "release": release.name,
            "max_fail": plan.max_fail,
            "waves": [{"wave": w.number, "canary": w.canary, "hosts": list(w.hosts)} for w in plan.waves],
            "hosts": [
                {"host": h.name, "windows": windows[h.name], "spec": values_mod.spec_json(specs[h.name])}
                for h in hosts
            ],
        }
        output.print_json(data)
        return
    for wave in plan.waves:
        print(f"{'canary' if wave.canary else f'wave {wave.number}'}: {', '.join(wave.hosts)}")
    print(f"max-fail: {plan.max_fail}")
    for h in hosts:
        print()
        when = ", ".join(f"{k} window {v!r}" for k, v in windows[h.name].items()) or "any time"
        print(f"{h.name} ({when}): spec {specs[h.name].spec_digest}")
        for line in values_mod.spec_lines(specs[h.name]):
            print("  " + line)


@rollout.command("resume")
@click.argument("rollout_id", metavar="ID")
@click.option("-d", "--detach", is_flag=True, help="run in the background")
@click.option("--force", is_flag=True, help="even if another controller drove it within the lease time")
@click.pass_obj
def resume(app: App, rollout_id: str, detach: bool, force: bool) -> None:
    """Continue a paused or interrupted rollout exactly where it stands (also from another controller)."""
    journal = _journal(app)
    found = asyncio.run(journal.get(rollout_id))
    if found.state in eng.FINAL_STATES:
        raise ControllerError(f"rollout {found.id} is {found.state}: there is nothing to resume")
    if detach:
        _detach(app, found.id, force=force)
        return
    _exit(_drive(app, journal, found, resume=True, force=force))


async def _newest(journal: Journal, rollout_id: str | None) -> Rollout:
    if rollout_id:
        return await journal.get(rollout_id)
    found = await journal.list(1)
    if not found:
        raise ControllerError(f"no rollouts in the journal {journal.location}")
    return found[0]


@rollout.command("status")
@click.argument("rollout_id", metavar="[ID]", required=False)
@click.pass_obj
def status(app: App, rollout_id: str | None) -> None:
    """One rollout's hosts and steps (the newest without ID); live while it runs on a terminal."""
    journal = _journal(app)

    async def snapshot() -> tuple[Rollout, dict[str, Any]]:
        r = await _newest(journal, rollout_id)
        return r, dict(await journal.last_steps(r.id))

    r, steps = asyncio.run(snapshot())
    if app.json:
        output.print_json(view_mod.rollout_json(r, steps))
        return
    from rich.console import Console

    if r.state in eng.ACTIVE_STATES and isinstance(app.console, Console) and app.console.is_terminal:
        r, steps = _follow(app.console, journal, r)
    _print_status(app, r, steps)


def _header(r: Rollout) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
    reason = f" — {r.reason}" if r.reason else ""
    return f"rollout {r.id} ({r.release}) by {r.owner} at {when}: {r.state}{reason}"


def _print_status(app: App, r: Rollout, steps: dict[str, Any]) -> None:
    app.console.print(_header(r), markup=False)
    output.print_table(view_mod.journal_rows(r, steps), app.console)


def _follow(console: Any, journal: Journal, r: Rollout) -> tuple[Rollout, dict[str, Any]]:
    """Redraw from the journal every second until the rollout stops running (Ctrl-C leaves the view)."""
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    def render(r: Rollout, steps: dict[str, Any]) -> Group:
        rows = view_mod.journal_rows(r, steps)
        t = Table(box=None, header_style="bold")
        for c in rows.columns:
            t.add_column(c, overflow="fold")
        for row in rows.rows:
            t.add_row(*(Text(str(v)) for v in row))
        return Group(Text(_header(r)), t)

    async def loop(live: Live) -> tuple[Rollout, dict[str, Any]]:
        current = r
        while True:
            steps = dict(await journal.last_steps(current.id))
            live.update(render(current, steps))
            if current.state not in eng.ACTIVE_STATES:
                return current, steps
            await asyncio.sleep(1.0)
            current = await journal.get(current.id)

    with Live(console=console, refresh_per_second=4, transient=True) as live:
        try:
            return asyncio.run(loop(live))
        except KeyboardInterrupt:
            pass
    now = asyncio.run(journal.get(r.id))
    return now, dict(asyncio.run(journal.last_steps(r.id)))


@rollout.command("ls")
@click.option("-n", "--last", "limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.pass_obj
def ls(app: App, limit: int) -> None:
    """Rollouts, newest first: id, release, revisions, hosts, state, who, when."""
    journal = _journal(app)

    async def rows() -> list[tuple[Rollout, list[int]]]:
        out = []
        for r in await journal.list(limit):
            revisions = sorted({s.revision for s in (await journal.last_steps(r.id)).values() if s.revision})
            out.append((r, revisions))
        return out

    found = asyncio.run(rows())
    if app.json:
        output.print_json([{**view_mod.rollout_json(r), "revisions": revs} for r, revs in found])
        return
    table = output.Table(
        ["ID", "RELEASE", "REVISION", "HOSTS", "STATE", "OWNER", "CREATED"],
        [
            [
                r.id,
                r.release,
                ",".join(map(str, revs)),
                len(list(r.plan.hosts())),
                str(r.state),
                r.owner,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at)),
            ]
            for r, revs in found
        ],
    )
    output.print_table(table, app.console)


@rollout.command("pause")
@click.argument("rollout_id", metavar="ID")
@click.pass_obj
def pause(app: App, rollout_id: str) -> None:
    """Ask a rollout to stop before its next wave (the wave in progress finishes)."""
    journal = _journal(app)
    ok = asyncio.run(
        journal.set_state(
            rollout_id, RolloutState.PAUSED, f"paused by {eng.default_owner()}", expect=eng.ACTIVE_STATES
        )
    )
    if not ok:
        now = asyncio.run(journal.get(rollout_id))
        raise ControllerError(
            f"rollout {rollout_id} is {now.state}: only a planned or running rollout can pause"
        )
    print(
        f"rollout {rollout_id} paused (it stops before its next wave);"
        f" continue with `rollout resume {rollout_id}`"
    )


@rollout.command("abort")
@click.argument("rollout_id", metavar="ID")
@click.pass_obj
def abort(app: App, rollout_id: str) -> None:
    """Stop a rollout for good (before its next wave) and give its hold on the release back. Hosts keep
    what they run; `rollout undo` takes them back to their last known good revision."""
    journal = _journal(app)
    owner = eng.default_owner()

    async def go() -> Rollout:
        ok = await journal.set_state(
            rollout_id,
            RolloutState.ABORTED,
            f"aborted by {owner}",
            expect=[*eng.ACTIVE_STATES, RolloutState.PAUSED],
        )
        r = await journal.get(rollout_id)
        if not ok:
            raise ControllerError(f"rollout {rollout_id} is {r.state}: it has already ended")
        hosts = eng.hosts_of(r)
        fleet = eng.AgentFleet({h.name: h.target for h in hosts}, app.config_dir)
        try:
            await eng.release_leases(r, fleet, owner, [h.name for h in hosts])
        finally:
            await fleet.close()
        return r

    asyncio.run(go())
    print(f"rollout {rollout_id} aborted")


@rollout.command("undo")
@click.argument("name")
@click.pass_obj
def undo(app: App, name: str) -> None:
    """Every selected host back to its last-known-good revision of release NAME."""
    reason = f"rollout undo by {eng.default_owner()}"

    async def op(client: AgentClient, out: HostOutput) -> ReleaseState:
        return await ReleasesApi(client).rollback(name, "last_known_good", reason=reason, timeout=None)

    app.run(op, table=lambda s: state_table([s]), to_json=state_json)
