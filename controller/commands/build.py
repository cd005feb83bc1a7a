"""`dockyard build` and `dockyard builder prune`: build an image on the agent from a Dockerfile and a context.

The context directory is sent as a tar (`.dockerignore` applied) to every target agent, which runs the
build with its own runtime; progress comes back line by line (`Step 3/9 : RUN …`, the step's output,
`CACHED`, the layer), then the image ID. Saved registry logins for the base images are sent along.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from controller import credentials, output
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import UsageError

if TYPE_CHECKING:
    from controller.api.build import LayerMade

# The parser, the context streamer and the client API are imported when a build runs: every CLI
# command loads this module, and only `build` needs them.


def _pairs(values: tuple[str, ...], flag: str, *, from_env: bool = False) -> dict[str, str]:
    """KEY=VALUE options; with `from_env` a bare KEY takes its value from this process's environment."""
    out: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid {flag} {item!r}: expected KEY=VALUE")
        if not eq:
            if not from_env:
                raise UsageError(f"invalid {flag} {item!r}: expected KEY=VALUE")
            if key not in os.environ:
                continue  # Docker's rule: an unset variable is simply not passed
            value = os.environ[key]
        out[key] = value
    return out


def _base_images(text: str, name: str, build_args: dict[str, str]) -> set[str]:
    """Image references the Dockerfile pulls from (best effort: only for picking credentials)."""
    from agent.oci import dockerfile as df
    from agent.oci import instructions as ins
    from agent.oci.errors import InvalidArgument
    from agent.oci.expand import SubstitutionError, process_word

    try:
        parsed = df.parse(text, name)
    except InvalidArgument:
        return set()
    env: dict[str, str] = {}
    for arg in parsed.global_args:
        for key, default in arg.pairs:
            value = build_args.get(key, default)
            if value is not None:
                try:
                    env[key] = process_word(value, env, parsed.escape)
                except SubstitutionError:
                    continue
    stage_names = {s.name for s in parsed.stages if s.name}
    refs: set[str] = set()
    for stage in parsed.stages:
        words = [stage.from_.image] + [
            i.from_stage for i in stage.instructions if isinstance(i, ins.Copy) and i.from_stage
        ]
        for word in words:
            try:
                ref = process_word(word, env, parsed.escape)
            except SubstitutionError:
                continue
            if ref and ref.lower() != "scratch" and ref.lower() not in stage_names and not ref.isdigit():
                refs.add(ref)
    return refs


def _registry_auth(app: App, refs: set[str]) -> dict[str, credentials.Login]:
    store = credentials.CredentialStore(app.config_dir)
    out: dict[str, credentials.Login] = {}
    for ref in refs:
        host = credentials.registry_of(ref)
        login = store.get(host)
        if login is not None:
            out[host] = login
    return out


def _layer_line(layer: LayerMade) -> str:
    if not layer.digest:
        return " ---> no changes"
    return f" ---> layer {layer.digest.split(':', 1)[-1][:12]} ({output.human_size(layer.size)})"


@click.command()
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]", help="name the image (repeatable)")
@click.option(
    "-f",
    "--file",
    "dockerfile",
    type=click.Path(path_type=Path),
    help="the Dockerfile (default CONTEXT/Dockerfile; - reads it from stdin)",
)
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY[=VALUE]", help="set a build-time ARG")
@click.option("--target", metavar="STAGE", help="build up to this stage")
@click.option("--no-cache", is_flag=True, help="run every step, ignoring the build cache")
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform to build for")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="add a label to the image")
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="ENTITLEMENT",
    help="grant the build an entitlement (repeatable); network.host lets RUN --network=host run",
)
@click.option("-q", "--quiet", is_flag=True, help="print only the image ID")
@click.argument("context", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.pass_obj
def build(
    app: App,
    tags: tuple[str, ...],
    dockerfile: Path | None,
    build_args: tuple[str, ...],
    target: str | None,
    no_cache: bool,
    platform: str | None,
    labels: tuple[str, ...],
    allow: tuple[str, ...],
    quiet: bool,
    context: Path,
) -> None:
    """Build an image from a Dockerfile and a context directory, on the agent (-H: on that agent)."""
    from controller import build_context
    from controller.api import build as api

    path = dockerfile if dockerfile is not None else context / "Dockerfile"
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except FileNotFoundError:
        raise UsageError(f"cannot find the Dockerfile {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the Dockerfile {path}: {exc}") from None
    args = _pairs(build_args, "--build-arg", from_env=True)
    rules = build_context.load_rules(context)
    options = api.BuildOptions(
        dockerfile=text,
        dockerfile_name=str(dockerfile) if dockerfile is not None else "Dockerfile",
        tags=tags,
        build_args=args,
        target=target or "",
        no_cache=no_cache,
        platform=platform or "",
        labels=_pairs(labels, "--label"),
        registry_auth=_registry_auth(app, _base_images(text, path.name, args)),
        allow=tuple(sorted(set(allow))),
    )

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        result: api.BuildResult | None = None
        async for event in api.BuildApi(client).build(options, build_context.stream(context, rules)):
            if isinstance(event, api.BuildResult):
                result = event
            elif quiet:
                continue
            elif isinstance(event, api.Step):
                out.line(f"Step {event.number}/{event.total} : {event.instruction}")
            elif isinstance(event, api.OutputLine):
                out.line(event.line)
            elif isinstance(event, api.Cached):
                out.line(" ---> CACHED")
            elif isinstance(event, api.LayerMade):
                out.line(_layer_line(event))
            elif isinstance(event, api.Message):
                out.line(("warning: " if event.warning else "") + event.text, err=event.warning)
        if result is None:
            raise UsageError("the agent ended the build without a result")
        return {
            "image_id": result.image_id,
            "manifest_digest": result.manifest_digest,
            "tags": list(result.tags),
            "layers": result.layers,
            "cached_steps": result.cached_steps,
            "run_steps": result.run_steps,
        }

    def text_of(d: dict[str, Any]) -> str:
        if quiet:
            return str(d["image_id"])
        lines = [f"Successfully built {d['image_id'].split(':', 1)[-1][:12]}"]
        lines += [f"Successfully tagged {t}" for t in d["tags"]]
        return "\n".join(lines)

    app.run(op, text=text_of)


@click.group("builder")
def builder_group() -> None:
    """Manage the build cache."""


@builder_group.command("prune")
@click.pass_obj
def builder_prune(app: App) -> None:
    """Forget the build cache (its layers go with the next image prune)."""
    from controller.api.build import BuildApi

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return {"entries_removed": await BuildApi(client).prune_cache()}

    app.run(op, text=lambda d: f"Removed {d['entries_removed']} build cache entries")
