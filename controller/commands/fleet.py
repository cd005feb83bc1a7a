"""`dockyard hosts` (live status of the inventory) and `dockyard bootstrap` (SSH → managed agent)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from controller import fanout, inventory, output
from controller.api.system import Info, SystemApi
from controller.app import App
from controller.client import AgentClient
from controller.errors import UsageError
from controller.inventory import Host

HOSTS_KEY = "dockyard.hosts"


def chosen_hosts(ctx: click.Context, app: App, *, default_all: bool) -> list[Host]:
    """Hosts picked by -H/--selector (inventory objects, with SSH settings), or the whole inventory."""
    hosts: list[Host] | None = ctx.meta.get(HOSTS_KEY)
    if hosts is not None:
        return hosts
    if not default_all:
        raise UsageError("say which hosts: -H NAME=ADDRESS, -H ADDRESS, inventory names, @group or all")
    path = inventory_path(ctx, app)
    found = list(inventory.load(path).hosts.values())
    if not found:
        raise UsageError(f"the inventory {path} has no hosts (add some with `dockyard bootstrap`)")
    return found


def inventory_path(ctx: click.Context, app: App) -> Path:
    given = ctx.find_root().params.get("inventory_file")
    return Path(given) if given else app.config_dir / inventory.INVENTORY_FILE


@click.command()
@click.pass_context
def hosts(ctx: click.Context) -> None:
    """List hosts with live status (reachable, agent version, arch, containers), checked concurrently."""
    app: App = ctx.obj
    chosen = chosen_hosts(ctx, app, default_all=True)

    async def info(client: AgentClient) -> Info:
        return await SystemApi(client).info(timeout=app.timeout)

    async def check() -> list[fanout.Outcome[Info]]:
        pool = fanout.Pool(app.config_dir)
        try:
            targets = [inventory.to_target(h) for h in chosen]
            return await fanout.run(
                targets, info, pool=pool, parallel=app.parallel, deadline_s=app.timeout, idempotent=True
            )
        finally:
            await pool.close()

    outcomes = asyncio.run(check())
    rows: dict[str, dict[str, Any]] = {}
    for host, o in zip(chosen, outcomes, strict=True):
        r = o.value
        rows[host.name] = {
            "address": inventory.to_target(host).grpc_target,
            "status": "up" if o.ok else "down",
            "error": o.error.message if o.error else None,
            "agent_version": r.agent_version if r else None,
            "arch": r.arch if r else host.labels.get("arch"),
            "containers_running": r.containers_running if r else None,
            "labels": dict(host.labels),
        }
    if app.json:
        output.print_json(rows)
        return
    table = output.Table(
        ["NAME", "ADDRESS", "STATUS", "VERSION", "ARCH", "CONTAINERS", "LABELS"],
        [
            [
                name,
                d["address"],
                d["status"] if d["status"] == "up" else f"down: {d['error']}",
                d["agent_version"] or "",
                d["arch"] or "",
                "" if d["containers_running"] is None else d["containers_running"],
                ",".join(f"{k}={v}" for k, v in sorted(d["labels"].items())),
            ]
            for name, d in rows.items()
        ],
    )
    output.print_table(table, app.console)
    up = sum(1 for d in rows.values() if d["status"] == "up")
    app.err_console.print(f"{up} up, {len(rows) - up} down", markup=False)


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid label {item!r}: expected key=value")
        labels[key] = value
    return labels


@click.command()
@click.option("--ssh-user", help="SSH user (default: the inventory's, else root)")
@click.option(
    "--ssh-port", type=click.IntRange(1, 65535), help="SSH port (default: the inventory's, else 22)"
)
@click.option("--ssh-key", type=click.Path(path_type=Path, exists=True, dir_okay=False), help="private key")
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="record host keys not yet in the controller's known_hosts (a changed key is always refused)",
)
@click.option(
    "--upgrade", is_flag=True, help="replace an installed agent by this build (containers keep running)"
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="label to record (repeatable)")
@click.option(
    "--wheelhouse",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="directory of prebuilt wheels (default: build once from this controller, cached)",
)
@click.option(
    "--deadline", type=click.FloatRange(min=1), default=600, show_default=True, help="seconds per host"
)
@click.pass_context
def bootstrap(
    ctx: click.Context,
    ssh_user: str | None,
    ssh_port: int | None,
    ssh_key: Path | None,
    accept_new_host_keys: bool,
    upgrade: bool,
    labels: tuple[str, ...],
    wheelhouse: Path | None,
    deadline: float,
) -> None:
    """Turn hosts reachable over SSH into managed agents (idempotent; many hosts in parallel).

    Hosts come from -H: `NAME=ADDRESS` for a new host, or inventory names, @group, all.
    """
    from controller import ssh  # asyncssh is imported only by the commands that use SSH
    from controller.bootstrap.apply import Bootstrapper, Options, Report

    app: App = ctx.obj
    chosen = chosen_hosts(ctx, app, default_all=False)
    unix = [h.name for h in chosen if h.address.startswith("unix:")]
    if unix:
        raise UsageError(f"cannot bootstrap over a unix socket: {', '.join(unix)}")
    options = Options(
        config_dir=app.config_dir,
        inventory_path=inventory_path(ctx, app),
        known_hosts=ssh.KnownHosts(app.config_dir / "known_hosts"),
        accept_new_host_keys=accept_new_host_keys,
        upgrade=upgrade,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        ssh_key=ssh_key,
        wheelhouse=wheelhouse,
        labels=_labels(labels),
    )
    bootstrapper = Bootstrapper(options)

    async def run_all() -> list[fanout.Outcome[Report]]:
        jobs = [(h.name, lambda h=h: bootstrapper.run(h)) for h in chosen]
        return await fanout.each(jobs, parallel=app.parallel, deadline_s=deadline)

    outcomes = asyncio.run(run_all())
    if app.json:
        output.print_json(
            {
                o.host: (
                    {
                        "changes": list(o.value.changes),
                        "notes": list(o.value.notes),
                        "seconds": o.value.seconds,
                    }
                    if o.value is not None
                    else {"error": o.error.message if o.error else "unknown"}
                )
                for o in outcomes
            }
        )
    else:
        for o in outcomes:
            if o.value is not None:
                app.console.print(f"{o.host} | {o.value.summary} ({o.value.seconds:.1f}s)", markup=False)
                for note in o.value.notes:
                    app.console.print(f"{o.host} | note: {note}", markup=False)
    summary = fanout.summarize(outcomes, fanout.parse_max_fail(app.max_fail))
    app.err_console.print(summary.line, markup=False)
    for error in summary.failures:
        app.err_console.print(f"error: {error}", markup=False)
    if not summary.success:
        sys.exit(1)
