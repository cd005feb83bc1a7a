"""The controller's typed client of the agent's API: one module per service (images, networks, ...).

These modules are the only place that builds request messages and reads responses: each declares its
service's RPCs (`controller.client.rpc`, typed by the generated message classes) and a `<Service>Api(client)`
class whose methods take plain Python parameters and return plain values or frozen dataclasses. Commands
(controller/commands/) are glue over them: flags in, an `api` call, output out; they never import a
`*_pb2` module. A new client call goes in the service's module here, next to the RPC it uses.

Errors: every call raises ControllerError (controller.errors) and nothing else; the gRPC status is
translated in one place, `AgentClient.translating`. A call whose failure must end the process with a
particular exit code says so with `exits=ErrorExits(...)` when it is made.
"""

from __future__ import annotations

from typing import TypeAlias

JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None"
"""A JSON document the agent sends as bytes (an image config, a manifest), parsed."""
