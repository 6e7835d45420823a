"""Offline Azure AD stand-ins: a self-signed TLS certificate and a fake managed-identity endpoint.

Azurite's `--oauth basic` mode only accepts bearer tokens over HTTPS and checks a token's claims
without verifying its signature, so an unsigned JWT from a local App Service-style managed
identity endpoint is enough to drive `DefaultAzureCredential` end to end without Azure AD.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

STORAGE_AUDIENCE = "https://storage.azure.com"
APP_SERVICE_API_VERSION = "2019-08-01"

# Variables that would make DefaultAzureCredential pick another credential than App Service
# managed identity (or make it reach for the network) before our endpoint is asked.
INTERFERING_ENV_VARS: tuple[str, ...] = (
    # EnvironmentCredential (client secret, certificate, username/password)
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_AUTHORITY_HOST",
    "AZURE_REGIONAL_AUTHORITY_NAME",
    # WorkloadIdentityCredential
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_KUBERNETES_TOKEN_PROXY",
    "AZURE_KUBERNETES_SNI_NAME",
    "AZURE_KUBERNETES_CA_FILE",
    "AZURE_KUBERNETES_CA_DATA",
    # Could exclude managed identity from the chain, or require a specific credential
    "AZURE_TOKEN_CREDENTIALS",
    # Other managed identity flavours: Service Fabric wins over App Service when this is set
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
)


@dataclass(frozen=True)
class CertificatePair:
    """Paths of a PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


def make_self_signed_cert(folder: Path, days: int = 2) -> CertificatePair:
    """Write a self-signed server certificate for 127.0.0.1 and localhost into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pair = CertificatePair(cert=folder / "cert.pem", key=folder / "key.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pair.key.chmod(0o600)
    return pair


def _b64url(data: bytes) -> str:
    """Base64url without padding, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_jwt(claims: Mapping[str, object]) -> str:
    """An `alg: none` JWT (`header.payload.`) carrying `claims`."""
    header = {"typ": "JWT", "alg": "none"}
    parts = (json.dumps(part, separators=(",", ":")).encode() for part in (header, claims))
    return ".".join(_b64url(part) for part in parts) + "."


def storage_token_claims(
    audience: str = STORAGE_AUDIENCE,
    tenant_id: str = "",
    lifetime: int = 3600,
    now: float | None = None,
) -> dict[str, object]:
    """Claims Azurite's basic OAuth check accepts: AAD issuer, storage audience, iat/nbf/exp."""
    issued = int(now if now is not None else time.time())
    tenant = tenant_id or str(uuid.uuid4())
    return {
        "aud": audience,
        "iss": f"https://sts.windows.net/{tenant}/",
        "iat": issued - 60,
        "nbf": issued - 60,
        "exp": issued + lifetime,
        "tid": tenant,
        "oid": str(uuid.uuid4()),
        "sub": "fake-managed-identity",
        "appid": str(uuid.uuid4()),
        "ver": "1.0",
    }


@dataclass(frozen=True)
class TokenRequest:
    """One request the fake endpoint received."""

    path: str
    resource: str | None
    api_version: str | None
    header_ok: bool
    status: int


class FakeManagedIdentityEndpoint:
    """An App Service managed-identity endpoint (`IDENTITY_ENDPOINT`) on a loopback port.

    azure-identity sends `GET <IDENTITY_ENDPOINT>?api-version=2019-08-01&resource=<aud>` with
    header `X-IDENTITY-HEADER: <IDENTITY_HEADER>` and expects JSON with `access_token`,
    `expires_on` (epoch seconds), `resource` and `token_type`.
    """

    def __init__(self, *, tenant_id: str | None = None, lifetime: int = 3600) -> None:
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self.secret = secrets.token_urlsafe(16)
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The value for `IDENTITY_ENDPOINT`."""
        if self._server is None:
            raise RuntimeError("the fake managed-identity endpoint is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/msi/token"

    @property
    def requests(self) -> list[TokenRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        """How many requests arrived, whatever their outcome."""
        with self._lock:
            return len(self._requests)

    @property
    def tokens_issued(self) -> int:
        """How many requests got a token."""
        with self._lock:
            return sum(1 for request in self._requests if request.status == 200)

    def _record(self, request: TokenRequest) -> None:
        """Remember one request."""
        with self._lock:
            self._requests.append(request)

    def _answer(self, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, object]]:
        """The status and JSON body for a GET of `path`."""
        parsed = urlsplit(path)
        query = parse_qs(parsed.query)
        resource = query.get("resource", [None])[0]
        api_version = query.get("api-version", [None])[0]
        header_ok = secrets.compare_digest(headers.get("X-IDENTITY-HEADER", ""), self.secret)
        if parsed.path != "/msi/token":
            status, body = 404, {"error": "not_found", "error_description": parsed.path}
        elif not header_ok:
            status, body = 401, {"error": "unauthorized", "error_description": "bad header"}
        elif api_version != APP_SERVICE_API_VERSION or not resource:
            status, body = 400, {"error": "invalid_request", "error_description": parsed.query}
        else:
            claims = storage_token_claims(resource, self.tenant_id, self.lifetime)
            status, body = (
                200,
                {
                    "access_token": unsigned_jwt(claims),
                    "expires_on": str(claims["exp"]),
                    "resource": resource,
                    "token_type": "Bearer",
                    "client_id": claims["appid"],
                },
            )
        self._record(TokenRequest(parsed.path, resource, api_version, header_ok, status))
        return status, body

    def start(self) -> FakeManagedIdentityEndpoint:
        """Serve on a free 127.0.0.1 port from a daemon thread."""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body = endpoint._answer(self.path, self.headers)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Stay quiet: requests are recorded instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-managed-identity", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeManagedIdentityEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def credential_env(endpoint: FakeManagedIdentityEndpoint, cert: Path) -> dict[str, str]:
    """Variables that make DefaultAzureCredential use `endpoint` and TLS clients trust `cert`."""
    no_proxy = ",".join(
        part
        for part in [
            os.environ.get("NO_PROXY") or os.environ.get("no_proxy"),
            "127.0.0.1,localhost",
        ]
        if part
    )
    return {
        "IDENTITY_ENDPOINT": endpoint.url,
        "IDENTITY_HEADER": endpoint.secret,
        "SSL_CERT_FILE": str(cert),
        "REQUESTS_CA_BUNDLE": str(cert),
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
    }


def subprocess_env(
    base: Mapping[str, str], endpoint: FakeManagedIdentityEndpoint, cert: Path
) -> dict[str, str]:
    """`base` without credential variables that would interfere, plus `credential_env`."""
    env = {name: value for name, value in base.items() if name not in INTERFERING_ENV_VARS}
    env.update(credential_env(endpoint, cert))
    return env
