"""The Prefect side: resolve deployments once, create flow runs, classify failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from router.errors import (
    DeploymentNotFound,
    DispatchError,
    PermanentDispatchError,
    TransientDispatchError,
)
from router.routing import TriggerRequest

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import DeploymentResponse

TRANSIENT_STATUS = frozenset({408, 425, 429})
CREDENTIAL_STATUS = frozenset({401, 403})


class _CachedDeploymentsClient:
    """A PrefectClient whose `read_deployment` answers from the dispatcher's cache.

    `run_deployment` reads the deployment before every run it creates; serving that
    read from memory halves the API calls per message.
    """

    def __init__(self, client: PrefectClient, cache: dict[UUID, DeploymentResponse]) -> None:
        self._client = client
        self._cache = cache

    async def read_deployment(self, deployment_id: UUID) -> DeploymentResponse:
        """The cached deployment, read from the API only the first time."""
        cached = self._cache.get(deployment_id)
        if cached is None:
            cached = self._cache[deployment_id] = await self._client.read_deployment(deployment_id)
        return cached

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Dispatcher:
    """Creates flow runs of deployments named 'Flow Name/deployment-name'."""

    def __init__(self, client: PrefectClient) -> None:
        self._client = client
        self._by_id: dict[UUID, DeploymentResponse] = {}
        self._id_by_name: dict[str, UUID] = {}
        self._run_client = _CachedDeploymentsClient(client, self._by_id)

    async def resolve(self, names: Iterable[str]) -> list[str]:
        """Look up each deployment by its exact name and cache it; return the missing names."""
        missing = []
        for name in dict.fromkeys(names):
            try:
                await self._resolve(name)
            except DeploymentNotFound:
                missing.append(name)
        return missing

    async def _resolve(self, name: str) -> UUID:
        from prefect.exceptions import ObjectNotFound

        try:
            deployment = await self._client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise DeploymentNotFound(name) from None
        except Exception as exc:
            raise classify(exc, name) from exc
        self._by_id[deployment.id] = deployment
        self._id_by_name[name] = deployment.id
        return deployment.id

    async def trigger(self, request: TriggerRequest) -> FlowRun:
        """Create the flow run for `request` without waiting for it; raise a DispatchError."""
        from prefect.deployments import run_deployment

        deployment_id = self._id_by_name.get(request.deployment)
        if deployment_id is None:
            deployment_id = await self._resolve(request.deployment)
        try:
            return await run_deployment(
                deployment_id,
                client=self._run_client,  # type: ignore[arg-type]
                parameters=request.parameters,
                timeout=0,
                tags=list(request.tags),
                idempotency_key=request.idempotency_key,
                job_variables=request.job_variables or None,
                # Linked as subflows, triggered runs would be cancelled with the router.
                as_subflow=False,
            )
        except Exception as exc:
            error = classify(exc, request.deployment)
            if _status(exc) == 404:
                # Deleted (or deleted and deployed again under a new id): look it up anew.
                self._id_by_name.pop(request.deployment, None)
                self._by_id.pop(deployment_id, None)
                error = TransientDispatchError(f"deployment '{request.deployment}' changed: {exc}")
            raise error from exc


def classify(exc: BaseException, deployment: str) -> DispatchError:
    """Translate a Prefect client failure into a transient or permanent DispatchError."""
    import httpx

    if isinstance(exc, DispatchError):
        return exc
    status = _status(exc)
    if status is not None:
        detail = _detail(exc)
        if status >= 500 or status in TRANSIENT_STATUS:
            return TransientDispatchError(f"Prefect API answered HTTP {status}: {detail}")
        if status in CREDENTIAL_STATUS:
            return TransientDispatchError(
                f"Prefect API refused the credentials (HTTP {status}): "
                "check PREFECT_API_KEY / PREFECT_API_AUTH_STRING"
            )
        if status == 409:
            return PermanentDispatchError(
                f"deployment '{deployment}' rejected the parameters: {detail}"
            )
        return PermanentDispatchError(
            f"Prefect API rejected the run of '{deployment}' (HTTP {status}): {detail}"
        )
    if isinstance(exc, (httpx.TransportError, OSError, asyncio.TimeoutError)):
        return TransientDispatchError(f"Prefect API unreachable: {type(exc).__name__}: {exc}")
    # Unknown failures are retried rather than dead-lettering a message that may be good.
    return TransientDispatchError(f"unexpected error from the Prefect client: {exc!r}")


def _response(exc: BaseException) -> Any:
    # Prefect's ObjectNotFound and friends wrap the httpx error as `http_exc`.
    return getattr(exc, "response", None) or getattr(
        getattr(exc, "http_exc", None), "response", None
    )


def _status(exc: BaseException) -> int | None:
    return getattr(_response(exc), "status_code", None)


def _detail(exc: BaseException) -> str:
    response = _response(exc)
    try:
        body = response.json()
    except Exception:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]
