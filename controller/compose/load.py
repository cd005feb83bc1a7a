"""Loading a compose project: which files, which environment, which name; then each file read, interpolated
and checked on its own (so an error names the file it is in), merged in order, and resolved.

Files: `-f` in the order given (`-` is stdin), else `compose.yaml`, `compose.yml`, `docker-compose.yaml`
or `docker-compose.yml` in the current directory or the nearest parent that has one, plus its
`compose.override.yaml` (or `docker-compose.override.yml`…) when present, as docker compose does.
The project directory is the first file's directory. Environment for `${VAR}`: this process's
environment over the project directory's `.env` (or `--env-file`). Project name: `-p`, then
`COMPOSE_PROJECT_NAME`, then the file's `name:`, then the project directory's name — normalized as docker
compose does (lower case; letters, digits, `_` and `-`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.compose import dotenv, interpolate, merge, resolve, schema, yamlfile
from controller.compose.model import ComposeError, Project
from controller.errors import UsageError

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
OVERRIDE_FILES = (
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
)
_NAME_OK = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Options:
    files: tuple[str, ...] = ()  # -f, in order; "-" is stdin
    project_name: str | None = None  # -p
    project_dir: Path | None = None  # --project-directory
    env_files: tuple[str, ...] = ()  # --env-file (default: .env in the project directory)
    profiles: tuple[str, ...] = ()  # --profile (besides COMPOSE_PROFILES)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)


def find_files(cwd: Path) -> list[Path]:
    """The default file of `cwd` or its nearest parent that has one, then that directory's override."""
    for directory in (cwd, *cwd.parents):
        for name in DEFAULT_FILES:
            if (directory / name).is_file():
                found = [directory / name]
                for override in OVERRIDE_FILES:
                    if (directory / override).is_file():
                        found.append(directory / override)
                        break
                return found
    raise UsageError(
        f"no compose file found in {cwd} or its parents (looked for {', '.join(DEFAULT_FILES)}); use -f FILE"
    )


def normalize_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "", name.lower())


def _read(path: str, cwd: Path) -> tuple[str, str, Path]:
    """(text, the name errors use, the file's path)."""
    if path == "-":
        return sys.stdin.read(), "-", cwd / "-"
    file = Path(path)
    file = file if file.is_absolute() else cwd / file
    try:
        return file.read_text(), path, file
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None


def _environment(options: Options, project_dir: Path) -> dict[str, str]:
    env_files = [Path(f) if Path(f).is_absolute() else options.cwd / f for f in options.env_files]
    if not options.env_files and (project_dir / ".env").is_file():
        env_files = [project_dir / ".env"]
    values: dict[str, str] = {}
    for file in env_files:
        try:
            text = file.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read env file {file}: {exc.strerror or exc}") from None
        try:
            values.update(dotenv.parse(text, {**options.environ, **values}))
        except dotenv.DotenvError as exc:
            raise UsageError(f"{file}:{exc.line}: {exc.problem}") from None
    return {**values, **options.environ}  # this process's environment wins over .env


def read_document(text: str, source: str, env: Mapping[str, str]) -> dict[str, Any]:
    """One file: YAML → interpolated → schema-checked → subset-checked."""
    try:
        data = yamlfile.parse(text)
    except yamlfile.YamlError as exc:
        where = f"{source}:{exc.line}" if exc.line else source
        raise ComposeError(where, "", f"invalid YAML: {exc.problem}") from None
    if data is None:
        raise ComposeError(source, "", "empty file")
    if not isinstance(data, dict):
        raise ComposeError(source, "", "the top level must be a mapping")
    try:
        data = interpolate.interpolate(data, env)
    except interpolate.InterpolationError as exc:
        raise ComposeError(source, exc.path, exc.problem) from None
    schema.validate(data, source)
    schema.check_subset(data, source)
    checked: dict[str, Any] = data
    return checked


def load(options: Options) -> Project:
    """The project the options name; ComposeError/UsageError for the first problem."""
    files = list(options.files) or [os.path.relpath(p, options.cwd) for p in find_files(options.cwd)]
    texts = [_read(f, options.cwd) for f in files]
    first = texts[0][2]
    project_dir = options.project_dir or first.parent
    project_dir = project_dir if project_dir.is_absolute() else (options.cwd / project_dir)
    env = _environment(options, project_dir)
    documents = [read_document(text, source, env) for text, source, _ in texts]
    for (_, source, _), doc in zip(texts, documents, strict=True):
        if "version" in doc:
            print(f"warning: {source}: version is obsolete and ignored", file=sys.stderr)
    merged = merge.merge(documents)
    name = options.project_name or env.get("COMPOSE_PROJECT_NAME") or merged.get("name")
    if name:
        name = str(name)
        if not _NAME_OK.match(name):
            raise UsageError(
                f"invalid project name {name!r}: lower-case letters, digits, '_' and '-', "
                "starting with a letter or digit"
            )
    else:
        name = normalize_name(project_dir.resolve().name)
        if not name or not _NAME_OK.match(name):
            raise UsageError(f"cannot make a project name of the directory {project_dir}; use -p NAME")
    profiles = {*options.profiles, *(p for p in env.get("COMPOSE_PROFILES", "").split(",") if p)}
    ctx = resolve.Context(
        project=name,
        working_dir=project_dir.resolve(),
        source=texts[0][1],
        env=env,
        files=tuple(t[2].resolve() if t[1] != "-" else t[2] for t in texts),
        profiles=frozenset(profiles),
    )
    return resolve.resolve(merged, ctx)
