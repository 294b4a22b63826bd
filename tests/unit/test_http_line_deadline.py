"""http_line without a server: RequestsLine under `responses` (the REST client's unit tests mock
requests this way, so it must behave there exactly like `_requests_post` did), the table that
decides from a requests exception whether the request can have been sent, and name_lookup's
Resolver on a fake getaddrinfo (no real DNS): the deadline, the last good address, one thread."""
from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
import time
from typing import Any, Iterator

import pytest
import requests
import responses
import urllib3

from harness.waiting import wait_until
from http_line import HttpLine, LineError, RequestsLine, _never_sent
from name_lookup import Resolver, numeric_addresses

URL = "http://127.0.0.1:9"


def line() -> RequestsLine:
    session = requests.Session()
    session.trust_env = False
    return RequestsLine(session, URL, 1.0)


@responses.activate
def test_answer_status_retry_after_and_body_as_sent() -> None:
    responses.post(URL + "/exchange", status=429, headers={"Retry-After": "3"}, body=b'{"x":1}')
    assert line().post("/exchange", b'{"n":1}', 2.0) == (429, "3", b'{"x":1}')
    request = responses.calls[0].request
    assert request.body == b'{"n":1}' and request.headers["Content-Length"] == "7"
    assert request.headers["Content-Type"] == "application/json"


@responses.activate
def test_compressed_answer_is_decoded() -> None:
    responses.post(URL + "/info", body=gzip.compress(b'{"BTC":"1"}'), headers={"Content-Encoding": "gzip"})
    assert line().post("/info", b"{}", 2.0) == (200, None, b'{"BTC":"1"}')


@responses.activate
def test_redirect_returned_not_followed() -> None:
    responses.post(URL + "/exchange", status=307, headers={"Location": URL + "/elsewhere"})
    assert line().post("/exchange", b"{}", 2.0)[0] == 307
    assert len(responses.calls) == 1


@pytest.mark.parametrize("error,sent", [
    (requests.ConnectTimeout(), False),
    (requests.ConnectionError(), True),  # no cause given: it may have been sent
    (requests.ReadTimeout(), True),
    (requests.exceptions.ChunkedEncodingError(), True),
])
@responses.activate
def test_requests_failure_is_a_line_error_with_its_verdict(error: Exception, sent: bool) -> None:
    responses.post(URL + "/exchange", body=error)
    with pytest.raises(LineError) as err:
        line().post("/exchange", b"{}", 2.0)
    assert err.value.sent is sent


def _max_retry(reason: Exception) -> urllib3.exceptions.MaxRetryError:
    return urllib3.exceptions.MaxRetryError(None, "/exchange", reason)  # type: ignore[arg-type]


@pytest.mark.parametrize("exc,never_sent", [
    (requests.ConnectTimeout(), True),
    (requests.ConnectionError(_max_retry(urllib3.exceptions.NewConnectionError(None, "refused"))), True),
    (requests.ConnectionError(_max_retry(urllib3.exceptions.NameResolutionError("h", None, OSError()))), True),
    (requests.exceptions.ProxyError(_max_retry(urllib3.exceptions.ProxyError(
        "Unable to connect to proxy", urllib3.exceptions.NewConnectionError(None, "refused")))), True),
    (requests.exceptions.SSLError(_max_retry(urllib3.exceptions.SSLError(ssl.SSLCertVerificationError("self-signed")))), True),
    (requests.exceptions.SSLError(_max_retry(urllib3.exceptions.SSLError(ssl.SSLError("bad record mac")))), False),
    (requests.ConnectionError(_max_retry(urllib3.exceptions.ProtocolError("Connection aborted.",
                                                                          ConnectionResetError()))), False),
    (requests.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())), False),
    (requests.exceptions.ProxyError(_max_retry(urllib3.exceptions.ProxyError("tunnel failed", OSError("503")))), False),
    (requests.ReadTimeout(), False),
    (requests.ConnectionError(), False),
])
def test_never_sent_only_before_a_connection_existed(exc: requests.RequestException, never_sent: bool) -> None:
    assert _never_sent(exc) is never_sent


@pytest.mark.parametrize("transport", [lambda: HttpLine(URL, 1.0), line])
def test_a_deadline_must_be_positive(transport) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="deadline_s"):
        transport().post("/exchange", b"{}", 0)


def test_line_error_sent_defaults_to_may_have_been_sent() -> None:
    assert LineError("x").sent is True and LineError("x", sent=False).sent is False


# ---- name_lookup.Resolver ----

ANSWER = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443))]


class ScriptedDns:
    """getaddrinfo's stand-in answering from `outcomes` in turn (an address list, an exception to
    raise, or "hang": block until `release`, set at teardown at the latest)."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1
        if outcome == "hang":
            self.release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def made() -> Iterator[list[tuple[Resolver, ScriptedDns]]]:
    """Resolvers a test makes, closed (their fake lookups released) at teardown."""
    resolvers: list[tuple[Resolver, ScriptedDns]] = []
    yield resolvers
    for resolver, dns in resolvers:
        dns.release.set()
        resolver.close()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name == "name-lookup"], 5)


def resolver_on(made: list[tuple[Resolver, ScriptedDns]], *outcomes: Any) -> tuple[Resolver, ScriptedDns]:
    dns = ScriptedDns(*outcomes)
    made.append((Resolver(lookup=dns), dns))
    return made[-1]


def test_a_hung_lookup_with_nothing_known_times_out_at_the_deadline(made: list) -> None:
    resolver, _ = resolver_on(made, "hang")
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="name lookup of api.example not answered in time"):
        resolver.addresses("api.example", 443, time.monotonic() + 0.3)
    assert 0.28 <= time.monotonic() - start < 0.3 + 0.2


def test_a_failed_lookup_with_nothing_known_raises_its_error(made: list) -> None:
    resolver, _ = resolver_on(made, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    with pytest.raises(socket.gaierror, match="Name or service not known"):
        resolver.addresses("api.example", 443, time.monotonic() + 1.0)


@pytest.mark.parametrize("later", ["hang", socket.gaierror(socket.EAI_AGAIN, "Temporary failure")],
                         ids=["slow", "failed"])
def test_the_last_good_address_is_used_and_said_once_a_minute(made: list, later: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    resolver, dns = resolver_on(made, ANSWER, later)
    resolver.fresh_wait_s = 0.05
    assert resolver.addresses("api.example", 443, time.monotonic() + 1.0) == ANSWER
    caplog.set_level(logging.WARNING, logger="rest")
    for _ in range(3):
        start = time.monotonic()
        assert resolver.addresses("api.example", 443, time.monotonic() + 5.0) == ANSWER
        assert time.monotonic() - start < 0.05 + 0.2  # not the whole deadline: the connect needs it
    why = "slow" if later == "hang" else "failed"
    assert [r.getMessage() for r in caplog.records] == [
        f"name lookup of api.example {why}: connecting to its last known address"]


def test_callers_of_a_name_under_lookup_wait_on_that_one_lookup(made: list) -> None:
    resolver, dns = resolver_on(made, "hang")
    for _ in range(20):
        with pytest.raises(TimeoutError):
            resolver.addresses("api.example", 443, time.monotonic() + 0.01)
    assert dns.calls == 1
    assert len([t for t in threading.enumerate() if t.name == "name-lookup"]) == 1


def test_close_does_not_wait_for_a_hung_lookup(made: list) -> None:
    resolver, dns = resolver_on(made, "hang")
    with pytest.raises(TimeoutError):
        resolver.addresses("api.example", 443, time.monotonic() + 0.01)
    start = time.monotonic()
    resolver.close()
    assert time.monotonic() - start < 0.1
    dns.release.set()  # the lookup returns: its thread ends (checked by the fixture)


@pytest.mark.parametrize("host,family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_ip_literals_are_answered_without_a_lookup_or_a_thread(made: list, host: str, family: int) -> None:
    resolver, dns = resolver_on(made, AssertionError("an IP literal reached the resolver"))
    (found,) = {entry[0] for entry in resolver.addresses(host, 8080, time.monotonic() + 1.0)}
    assert found == family and dns.calls == 0
    assert [t for t in threading.enumerate() if t.name == "name-lookup"] == []
    assert numeric_addresses("exchange.test", 443) is None  # a name: never resolved here
