"""A Schema Registry client (the Confluent REST API) that looks each schema id up once.

``RegistryClient`` is the ``schemas.base.SchemaSource`` of ``schemas.confluent``: it asks
``GET {url}/schemas/ids/{id}`` (Confluent Schema Registry, and Apicurio Registry's
Confluent-compatible API under ``/apis/ccompat/v7``) and keeps the answer, a schema or the
registry's "not found", for the life of the process: schemas registered under an id never
change. Plain HTTP(S) with the standard library, bounded by ``timeout_s``; the request
itself is made by an injected ``fetch`` (tests hand it a fake).

An unreachable registry, or one that answers with anything but the schema or "not found",
raises ``RegistryError`` (retriable): the record is not at fault, so it is not
dead-lettered; the service stops and restarts from its last commit.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable
from typing import ClassVar

import msgspec

from schemas.base import RegisteredSchema
from service.errors import ServiceError

Fetch = Callable[[str, float], tuple[int, bytes]]
"""``fetch(url, timeout_s) -> (status, body)``; raises ``OSError`` when nothing answers."""


class RegistryError(ServiceError):
    """The schema registry could not be reached or gave an answer weir cannot read."""

    retriable: ClassVar[bool] = True


class _SchemaById(msgspec.Struct, kw_only=True):
    schema: str
    schema_type: str = msgspec.field(name="schemaType", default="AVRO")
    """Absent in the Confluent API's answer for Avro schemas."""


def urllib_fetch(url: str, timeout_s: float) -> tuple[int, bytes]:
    """GET ``url`` with the standard library; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's setting
        url, headers={"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RegistryClient:
    """Schema lookups by id against ``url``, each id asked at most once (module docstring)."""

    __slots__ = ("_cache", "_fetch", "lookups", "timeout_s", "url")

    def __init__(self, url: str, *, timeout_s: float = 5.0, fetch: Fetch = urllib_fetch) -> None:
        if not url.startswith(("http://", "https://")):
            raise RegistryError(f"schema registry URL {url!r} is not http:// or https://")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._fetch = fetch
        self._cache: dict[int, RegisteredSchema | None] = {}
        self.lookups = 0
        """Requests made so far (one per schema id met)."""

    def schema(self, schema_id: int) -> RegisteredSchema | None:
        """The schema registered under ``schema_id``, or ``None`` when the registry has none."""
        if schema_id in self._cache:
            return self._cache[schema_id]
        url = f"{self.url}/schemas/ids/{schema_id}"
        self.lookups += 1
        try:
            status, body = self._fetch(url, self.timeout_s)
        except OSError as exc:
            raise RegistryError(f"schema registry {url} unreachable: {exc}") from exc
        found: RegisteredSchema | None
        if status == 404:
            found = None
        elif status == 200:
            try:
                answer = msgspec.json.decode(body, type=_SchemaById)
            except msgspec.DecodeError as exc:
                raise RegistryError(f"schema registry {url} answered unreadably: {exc}") from exc
            found = RegisteredSchema(answer.schema_type, answer.schema)
        else:
            text = body[:200].decode("utf-8", "replace")
            raise RegistryError(f"schema registry {url} answered HTTP {status}: {text}")
        self._cache[schema_id] = found
        return found
