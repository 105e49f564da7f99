"""The Schema Registry client: one request per schema id, every failure named."""

from __future__ import annotations

import pytest

from schemas.base import RegisteredSchema
from service.registry import RegistryClient, RegistryError

URL = "http://registry:8080/apis/ccompat/v7"


class FakeFetch:
    """Answers each URL from a table and records the URLs asked."""

    def __init__(self, answers: dict[str, tuple[int, bytes]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, float]] = []

    def __call__(self, url: str, timeout_s: float) -> tuple[int, bytes]:
        self.asked.append((url, timeout_s))
        answer = self.answers.get(url)
        if answer is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return answer


def test_schema_is_fetched_once_and_kept() -> None:
    """The first lookup of an id asks the registry; later ones are answered from memory."""
    fetch = FakeFetch({f"{URL}/schemas/ids/3": (200, b'{"schema":"\\"string\\""}')})
    client = RegistryClient(URL + "/", timeout_s=2.5, fetch=fetch)
    for _ in range(5):
        assert client.schema(3) == RegisteredSchema("AVRO", '"string"')
    assert fetch.asked == [(f"{URL}/schemas/ids/3", 2.5)] and client.lookups == 1


def test_schema_type_is_read_when_given() -> None:
    """A JSON Schema answer carries its ``schemaType``."""
    fetch = FakeFetch({f"{URL}/schemas/ids/1": (200, b'{"schema":"{}","schemaType":"JSON"}')})
    assert RegistryClient(URL, fetch=fetch).schema(1) == RegisteredSchema("JSON", "{}")


def test_unknown_id_is_none_and_kept() -> None:
    """A 404 means the registry has no such id: ``None``, and it is not asked again."""
    body = b'{"error_code":40403,"message":"Schema not found"}'
    fetch = FakeFetch({f"{URL}/schemas/ids/9": (404, body)})
    client = RegistryClient(URL, fetch=fetch)
    assert client.schema(9) is None and client.schema(9) is None
    assert len(fetch.asked) == 1


def test_unreachable_registry_is_a_retriable_error() -> None:
    """A registry that does not answer raises RegistryError naming the URL; nothing is kept."""
    fetch = FakeFetch({})
    client = RegistryClient(URL, fetch=fetch)
    with pytest.raises(RegistryError) as info:
        client.schema(1)
    assert str(info.value) == (
        f"schema registry {URL}/schemas/ids/1 unreachable: [Errno 111] Connection refused"
    )
    assert RegistryError.retriable
    with pytest.raises(RegistryError):
        client.schema(1)
    assert len(fetch.asked) == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((500, b"boom"), "answered HTTP 500: boom"),
        ((200, b"<html>"), "answered unreadably: JSON is malformed: invalid character (byte 0)"),
        ((200, b'{"id":1}'), "answered unreadably: Object missing required field `schema`"),
    ],
)
def test_unreadable_answers_are_errors(answer: tuple[int, bytes], message: str) -> None:
    """An error status or a body that is not the schema raises RegistryError with it."""
    client = RegistryClient(URL, fetch=FakeFetch({f"{URL}/schemas/ids/2": answer}))
    with pytest.raises(RegistryError) as info:
        client.schema(2)
    assert str(info.value) == f"schema registry {URL}/schemas/ids/2 {message}"


def test_url_must_be_http() -> None:
    """A registry URL of another scheme is refused at construction."""
    with pytest.raises(RegistryError) as info:
        RegistryClient("file:///etc/passwd")
    assert str(info.value) == "schema registry URL 'file:///etc/passwd' is not http:// or https://"
