"""Pure routing: a message in, trigger requests out, or a reason to reject it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from router.errors import MessageRejected
from router.sources.base import RouteTarget

ROUTER_TAG = "event-router"


@dataclass(frozen=True)
class ParsedMessage:
    """The router's view of a message body."""

    message_type: str
    payload: dict[str, Any]
    message_id: str | None


@dataclass(frozen=True)
class TriggerRequest:
    """One flow run to create for one message."""

    deployment: str
    parameters: dict[str, Any]
    idempotency_key: str
    message_type: str
    tags: tuple[str, ...] = ()
    job_variables: dict[str, Any] = field(default_factory=dict)


def parse_message(body: bytes | str, message_type_hint: str | None = None) -> ParsedMessage:
    """Parse `{"message_type": ..., "payload": {...}, "id": ...}` or raise MessageRejected.

    `message_type_hint` (from a header, say) is used when the body has no message_type.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise MessageRejected(f"not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MessageRejected(f"not JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise MessageRejected(f"not acceptable JSON: {exc}") from None
    except RecursionError:
        raise MessageRejected("not acceptable JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise MessageRejected(f"not a JSON object but a {_json_kind(data)}")
    message_type = data.get("message_type", message_type_hint)
    if message_type is None:
        raise MessageRejected("no message_type")
    if not isinstance(message_type, str) or not message_type:
        raise MessageRejected(f"message_type must be a non-empty string, got {message_type!r}")
    payload = data.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise MessageRejected(
            f"payload must be a JSON object, got a {_json_kind(payload)}", message_type
        )
    message_id = data.get("id")
    if message_id is not None:
        if isinstance(message_id, bool) or not isinstance(message_id, (str, int)):
            raise MessageRejected(
                f"id must be a string, got a {_json_kind(message_id)}", message_type
            )
        message_id = str(message_id)
    return ParsedMessage(message_type, payload, message_id)


def idempotency_key(source: str, identity: str, deployment: str) -> str:
    """The key that makes a redelivered message return its existing flow run.

    Prefect scopes idempotency keys per flow, not per deployment, so the deployment
    is part of the key: one message routed to two deployments of a flow makes two runs.
    """
    return f"{ROUTER_TAG}|{source}|{identity}|{deployment}"


def route(
    parsed: ParsedMessage, source: str, native_id: str, routes: dict[str, RouteTarget]
) -> list[TriggerRequest]:
    """The flow runs to create for a parsed message from `source`, or MessageRejected."""
    target = routes.get(parsed.message_type)
    if target is None:
        known = ", ".join(sorted(routes)) or "none"
        raise MessageRejected(
            f"no route for message_type '{parsed.message_type}' (routes: {known})",
            parsed.message_type,
        )
    identity = f"id:{parsed.message_id}" if parsed.message_id is not None else native_id
    tags = (ROUTER_TAG, f"source:{source}", f"message-type:{parsed.message_type}", *target.tags)
    return [
        TriggerRequest(
            deployment=target.deployment,
            parameters=parsed.payload,
            idempotency_key=idempotency_key(source, identity, target.deployment),
            message_type=parsed.message_type,
            tags=tuple(dict.fromkeys(tags)),
            job_variables=dict(target.job_variables),
        )
    ]


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
