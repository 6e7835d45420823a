"""The router's error tree: one root, a branch per concern."""

from __future__ import annotations


class RouterError(Exception):
    """Root of every error the router raises on purpose."""


class ConfigError(RouterError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SourceError(RouterError):
    """A source could not connect, receive or settle."""


class MessageRejected(RouterError):
    """A message can never be triggered (not JSON, no route...): reject it."""

    def __init__(self, reason: str, message_type: str | None = None) -> None:
        self.reason = reason
        self.message_type = message_type
        super().__init__(reason)


class DispatchError(RouterError):
    """Creating a flow run failed."""


class TransientDispatchError(DispatchError):
    """Creating a flow run failed but may work later (API down, 5xx, 429)."""


class PermanentDispatchError(DispatchError):
    """Creating a flow run can never work for this request (parameters rejected)."""


class DeploymentNotFound(PermanentDispatchError):
    """A route names a deployment the Prefect API does not know."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"deployment '{name}' not found: run `prefect deploy` first")
