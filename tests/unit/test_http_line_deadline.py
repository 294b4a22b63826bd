"""http_line without a server: RequestsLine under `responses` (the REST client's unit tests mock
requests this way, so it must behave there exactly like `_requests_post` did), and the table that
decides from a requests exception whether the request can have been sent."""
from __future__ import annotations

import gzip
import ssl

import pytest
import requests
import responses
import urllib3

from http_line import HttpLine, LineError, RequestsLine, _never_sent

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
