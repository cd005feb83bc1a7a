"""`dockyard audit [--since T] [--user CN] [--follow]` and `dockyard audit verify`: the agents' audit logs.

Reading needs the `audit` permission (admin, or a certificate issued with --allow audit). `verify` checks
each agent's hash chain and names the first broken entry; it fails (exit 1) when any host's chain is broken.
"""

from __future__ import annotations

from dataclasses import asdict

import click

from controller import output
from controller.api.audit import AuditApi, AuditEntry, Verification
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import ControllerError
from controller.times import parse_time


def entry_line(e: AuditEntry) -> str:
    who = e.caller + (f" ({e.role})" if e.role else "")
    what = e.rpc.rsplit("/", 1)[-1] if e.rpc.startswith("/") else e.rpc
    service = e.rpc.rsplit("/", 2)[-2].rsplit(".", 1)[-1] if e.rpc.count("/") >= 2 else ""
    call = f"{service}.{what}" if service else what
    stage = "" if e.stage in ("", "response") else f" [{e.stage}]"
    return f"{e.seq} {e.time} {who} {call} {e.target or '-'} {e.result}{stage} {e.request_id}".rstrip()


def verify_text(v: Verification) -> str:
    if v.ok:
        chain = "" if v.anchored else " (older files rotated away: checked from the first kept entry)"
        return f"ok: {v.entries} entries, seq {v.first_seq}-{v.last_seq}, {v.files} file(s){chain}"
    seq = f"entry seq {v.broken_seq}" if v.broken_seq else "an unreadable entry"
    return f"broken at {seq} ({v.broken_file} line {v.broken_line}): {v.reason}"


class ChainBroken(ControllerError):
    """An agent's audit chain does not verify."""


@click.group(name="audit", invoke_without_command=True)
@click.option("--since", default=None, help="entries from this time on (RFC 3339, unix time, or 10m/2h/1d)")
@click.option(
    "--user", default=None, metavar="CN", help="only this certificate's calls ('local': the socket)"
)
@click.option("-f", "--follow", is_flag=True, help="keep printing new entries")
@click.pass_context
def audit_group(ctx: click.Context, since: str | None, user: str | None, follow: bool) -> None:
    """Show the audit log of each agent: who called what, on what, with what result."""
    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.obj
    since_ns = parse_time(since) if since else None

    async def op(client: AgentClient, out: HostOutput) -> None:
        async for entry in AuditApi(client).read(since_ns=since_ns, user=user, follow=follow):
            if app.json:
                output.print_json({**asdict(entry), "record": entry.record})
            else:
                out.line(entry_line(entry))

    app.run(op, streaming=follow, idempotent=not follow)


@audit_group.command("verify")
@click.pass_obj
def verify(app: App) -> None:
    """Check each agent's hash chain; report the first broken entry (exit 1 if any host's is broken)."""

    async def op(client: AgentClient, out: HostOutput) -> Verification:
        result = await AuditApi(client).verify()
        if not result.ok:
            raise ChainBroken(f"audit log {verify_text(result)}", client.name)
        return result

    app.run(op, text=verify_text, to_json=asdict, idempotent=True)


COMMANDS = [audit_group]
