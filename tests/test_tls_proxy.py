"""TLS verification, proxies and request hygiene, each against real servers on 127.0.0.1.

The servers here are small and bounded: OS-chosen ports, daemon threads, a socket timeout on
every operation and a cap on the connections each accepts. The certificates come from the
`openssl` command line (a throwaway CA and server certificates in a temporary directory).
"""

import asyncio
import base64
import logging
import pathlib
import shutil
import ssl
import traceback
from collections import namedtuple

import pytest

import loopback
import streamlite

KEY = "sk-SENTINEL-tls-7c1e"
PROXY_USER = "proxy-user"
PROXY_PASSWORD = "pr0xy-SENTINEL-pass-5d2a"
PROXY_TOKEN = base64.b64encode(("%s:%s" % (PROXY_USER, PROXY_PASSWORD)).encode()).decode()
SECRETS = (KEY, PROXY_PASSWORD)
TIMEOUT = 10.0  # every socket operation of the test servers
# Tests that take `run` run through Client and AsyncClient (conftest.py).
SYNC_ONLY = set()  # every test runs through both clients (https through a proxy too, on 3.8+)
CLIENT = dict(connect_timeout=5, read_timeout=5, total_timeout=15, max_retries=0)

SSE_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
    b'data: {"choices":[{"index":0,"delta":{"content":"hello over the wire"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
ENV_NAMES = (
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "no_proxy", "NO_PROXY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY",
    "OPENAI_API_VERSION",
)


###############################################################################
# Fixtures: a clean environment, no secret in any log record, certificates
###############################################################################


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def no_secret_logged(caplog):
    """Capture every log record at DEBUG; none may hold a secret."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = "%s %r %s" % (record.getMessage(), record.args, record.exc_text or "")
        for secret in SECRETS + (PROXY_TOKEN,):
            assert secret not in text, record


def assert_no_secret(error):
    """Neither the API key nor the proxy password in the error's text, repr, attributes or
    formatted traceback (with its whole chain)."""
    texts = [
        str(error),
        repr(error),
        repr(vars(error)),
        "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


Certs = namedtuple("Certs", "ca good localhost_only expired")
CERTS = pathlib.Path(__file__).parent / "data" / "certs"


@pytest.fixture(scope="session")
def certs():
    """A throwaway CA and two server certificates it signed (tests/data/certs, made by its
    make_certs.py): `good` for 127.0.0.1, localhost and api.example.test; `localhost_only` for
    localhost alone; `expired`, `good` but expired in 2021."""
    return Certs(str(CERTS / "ca.pem"), CERTS / "good", CERTS / "localhost_only", CERTS / "expired")


def server_context(cert):
    return loopback.server_context(cert)


###############################################################################
# Servers (tests/loopback.py): an origin that records requests, a forward proxy, a silent listener
###############################################################################


def header(request, name):
    return request.header(name)


def Origin(reply=SSE_REPLY, tls=None, limit=4, allow_failures=False):
    """An HTTP (or, with `tls`, HTTPS) server that records each request and answers `reply`."""
    return loopback.FaultServer([loopback.send(reply), loopback.close()], tls=tls, max_connections=limit,
                                io_timeout=TIMEOUT, allow_errors=allow_failures)


def Proxy(routes, answer=None, limit=4, allow_failures=False):
    """A forward proxy to 127.0.0.1 (loopback.Proxy) whose url() holds the test's credentials."""
    return loopback.Proxy(routes, answer, credentials=(PROXY_USER, PROXY_PASSWORD), max_connections=limit,
                          io_timeout=TIMEOUT, allow_errors=allow_failures)


Silent = loopback.Silent


def complete(client):
    return client.complete("hi", model="test-model")


def raises_run(run, error_type, url, api_key=KEY, **options):
    """complete() through the client `run` drives (sync or async, tests/clients.py) must raise
    `error_type`; checks that it leaks no secret and returns it."""
    outcome = run(url, "hi", api_key, call="complete", model="test-model", **options)
    if not isinstance(outcome.error, error_type):
        raise AssertionError("expected %s, got %r" % (error_type.__name__, outcome.error))
    assert_no_secret(outcome.error)
    return outcome.error


def completes(run, url, api_key=KEY, **options):
    """complete() through the client `run` drives must succeed; returns the Completion."""
    outcome = run(url, "hi", api_key, call="complete", model="test-model", **options)
    if outcome.error is not None:
        raise outcome.error
    return outcome.completion


def raises(error_type, call, *args, **kwargs):
    """Run call(), expect `error_type`, check it leaks no secret and return it."""
    with pytest.raises(error_type) as info:
        call(*args, **kwargs)
    assert_no_secret(info.value)
    return info.value


###############################################################################
# TLS
###############################################################################


def test_default_client_refuses_an_unknown_ca_and_says_how_to_fix_it(certs, run):
    with Origin(tls=server_context(certs.good), allow_failures=True) as origin:
        error = raises_run(run, streamlite.APIConnectionError, origin.url, **dict(CLIENT, max_retries=2))
    message = str(error)
    assert "TLS certificate verification failed for 127.0.0.1" in message
    assert "ca_file=" in message and "SSL_CERT_FILE" in message and "verify=False" in message
    assert not isinstance(error, streamlite.APITimeoutError)
    assert origin.accepted == 1  # a certificate failure is not retried
    assert origin.requests == []  # nothing was sent to a server that could not be verified
    assert len(origin.failures) == 1 and isinstance(origin.failures[0], ssl.SSLError)


def test_an_expired_certificate_is_refused_and_says_so(certs, run):
    with Origin(tls=server_context(certs.expired), allow_failures=True) as origin:
        error = raises_run(run, streamlite.APIConnectionError, origin.url, ca_file=certs.ca, **CLIENT)
    message = str(error)
    assert "TLS certificate verification failed for 127.0.0.1: certificate has expired" in message
    assert "renewed" in message and "clock" in message and "ca_file" not in message
    assert origin.requests == []


def _check_answer(completion, origin):
    assert completion.content == "hello over the wire"
    assert completion.finish_reason == "stop"
    assert len(origin.requests) == 1
    request = origin.requests[0]
    assert request.line == "POST /v1/chat/completions HTTP/1.1"
    assert header(request, "Authorization") == "Bearer " + KEY


def test_ca_file_option_verifies_the_server(certs, run):
    with Origin(tls=server_context(certs.good)) as origin:
        completion = completes(run, origin.url, ca_file=certs.ca, **CLIENT)
    _check_answer(completion, origin)
    assert header(origin.requests[0], "Host") == "127.0.0.1:%d" % origin.port


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_ca_bundle_from_the_environment(certs, monkeypatch, variable, run):
    monkeypatch.setenv(variable, certs.ca)
    with Origin(tls=server_context(certs.good)) as origin:
        completion = completes(run, origin.url, **CLIENT)
    _check_answer(completion, origin)


def test_ca_file_option_wins_over_the_environment(certs, tmp_path, monkeypatch, run):
    other = tmp_path / "other-ca.pem"
    shutil.copy(certs.ca, str(other))  # a valid bundle, so a wrong choice would still work...
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))  # ...but this one is missing
    with Origin(tls=server_context(certs.good)) as origin:
        completion = completes(run, origin.url, ca_file=str(other), **CLIENT)
    _check_answer(completion, origin)


def test_verify_false_accepts_an_unknown_ca(certs, run):
    with Origin(tls=server_context(certs.good)) as origin:
        completion = completes(run, origin.url, verify=False, **CLIENT)
    _check_answer(completion, origin)


def test_verify_false_accepts_a_host_name_mismatch(certs, run):
    with Origin(tls=server_context(certs.localhost_only)) as origin:
        completion = completes(run, origin.url, verify=False, **CLIENT)
    _check_answer(completion, origin)


def test_certificate_for_another_host_is_refused_even_with_the_right_ca(certs, run):
    # the certificate names localhost only; the client connects to 127.0.0.1
    with Origin(tls=server_context(certs.localhost_only), allow_failures=True) as origin:
        error = raises_run(run, streamlite.APIConnectionError, origin.url, ca_file=certs.ca, **CLIENT)
    message = str(error)
    assert "TLS certificate verification failed for 127.0.0.1" in message
    assert "mismatch" in message and "not valid for '127.0.0.1'" in message
    assert "check the host in base_url" in message and "ca_file" not in message and ".." not in message
    assert origin.requests == [] and origin.accepted == 1
    assert len(origin.failures) == 1 and isinstance(origin.failures[0], ssl.SSLError)


def test_missing_ca_file_is_a_config_error_before_any_io(tmp_path):
    with Silent() as silent:
        url = "https://127.0.0.1:%d/v1" % silent.port
        missing = str(tmp_path / "no-such-ca.pem")
        error = raises(streamlite.ConfigError, streamlite.Client, url, KEY, ca_file=missing)
        assert "does not exist" in str(error) and missing in str(error)
        assert not silent.contacted()


def test_missing_ca_bundle_from_the_environment_is_a_config_error(tmp_path, monkeypatch, run):
    missing = str(tmp_path / "no-such-bundle.pem")
    monkeypatch.setenv("SSL_CERT_FILE", missing)
    with Silent() as silent:
        error = raises_run(run, streamlite.ConfigError, "https://127.0.0.1:%d/v1" % silent.port, **CLIENT)
        assert "does not exist" in str(error) and missing in str(error)
        assert not silent.contacted()


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path, run):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with Silent() as silent:
        error = raises_run(run, streamlite.ConfigError, "https://127.0.0.1:%d/v1" % silent.port, ca_file=str(garbage),
                           **CLIENT)
        assert "cannot load the CA file" in str(error)
        assert not silent.contacted()


###############################################################################
# Proxies
###############################################################################


def test_http_target_goes_through_an_explicit_proxy_in_absolute_form(run):
    with Origin() as origin, Proxy({"127.0.0.1": origin.port}) as proxy:
        completion = completes(run, origin.url, proxy=proxy.url(), **CLIENT)
    assert completion.content == "hello over the wire"
    assert [r.line for r in proxy.requests] == [
        "POST http://127.0.0.1:%d/v1/chat/completions HTTP/1.1" % origin.port
    ]
    seen = proxy.requests[0]
    assert header(seen, "Proxy-Authorization") == "Basic " + PROXY_TOKEN
    assert header(seen, "Host") == "127.0.0.1:%d" % origin.port
    assert len(origin.requests) == 1
    assert origin.requests[0].line == "POST /v1/chat/completions HTTP/1.1"
    assert header(origin.requests[0], "Authorization") == "Bearer " + KEY
    assert b'"messages"' in origin.requests[0].body


def test_https_target_goes_through_a_connect_tunnel_and_proxy_credentials_stay_with_the_proxy(certs, run):
    with Origin(tls=server_context(certs.good)) as origin, Proxy({"127.0.0.1": origin.port}) as proxy:
        completion = completes(run, origin.url, proxy=proxy.url(), ca_file=certs.ca, **CLIENT)
    assert completion.content == "hello over the wire"
    # the proxy saw one CONNECT with its credentials, and nothing meant for the origin
    assert [r.line for r in proxy.requests] == ["CONNECT 127.0.0.1:%d HTTP/1.1" % origin.port]
    connect = proxy.requests[0]
    assert header(connect, "Proxy-Authorization") == "Basic " + PROXY_TOKEN
    assert header(connect, "Host") == "127.0.0.1:%d" % origin.port
    assert header(connect, "Authorization") is None
    assert KEY not in repr(connect)
    assert proxy.tunnelled and KEY.encode() not in proxy.tunnelled  # encrypted in the tunnel
    # the origin saw the request, with the API key and without the proxy's credentials
    assert len(origin.requests) == 1
    request = origin.requests[0]
    assert request.line == "POST /v1/chat/completions HTTP/1.1"
    assert header(request, "Authorization") == "Bearer " + KEY
    assert header(request, "Proxy-Authorization") is None
    assert PROXY_PASSWORD not in repr(request) and PROXY_TOKEN not in repr(request)


def test_https_proxy_from_the_environment_tunnels_to_a_named_host(certs, monkeypatch, run):
    """The client asks the proxy for api.example.test and never resolves the name itself; the
    certificate is checked against that name."""
    with Origin(tls=server_context(certs.good)) as origin, Proxy({"api.example.test": origin.port}) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the wrong one for https
        completion = completes(run, "https://api.example.test/v1", ca_file=certs.ca, **CLIENT)
    assert completion.content == "hello over the wire"
    assert [r.line for r in proxy.requests] == ["CONNECT api.example.test:443 HTTP/1.1"]
    assert header(proxy.requests[0], "Proxy-Authorization") == "Basic " + PROXY_TOKEN
    assert header(origin.requests[0], "Host") == "api.example.test"
    assert header(origin.requests[0], "Proxy-Authorization") is None


def test_host_name_mismatch_through_a_tunnel_names_the_host(certs, run):
    with Origin(tls=server_context(certs.good), allow_failures=True) as origin, \
            Proxy({"wrong.example.test": origin.port}) as proxy:
        error = raises_run(run, streamlite.APIConnectionError, "https://wrong.example.test/v1", proxy=proxy.url(),
                           ca_file=certs.ca, **CLIENT)
    message = str(error)
    assert "TLS certificate verification failed for wrong.example.test" in message
    assert "Hostname mismatch" in message and "not valid for 'wrong.example.test'" in message
    assert origin.requests == [] and len(origin.failures) == 1 and isinstance(origin.failures[0], ssl.SSLError)
    assert [r.line for r in proxy.requests] == ["CONNECT wrong.example.test:443 HTTP/1.1"]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_http_proxy_from_the_environment(monkeypatch, variable, run):
    with Origin() as origin, Proxy({"api.example.test": origin.port}) as proxy:
        monkeypatch.setenv(variable, proxy.url(credentials=False))
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the wrong one for http
        completion = completes(run, "http://api.example.test:8080/v1", **CLIENT)
    assert completion.content == "hello over the wire"
    assert [r.line for r in proxy.requests] == ["POST http://api.example.test:8080/v1/chat/completions HTTP/1.1"]
    assert header(proxy.requests[0], "Proxy-Authorization") is None  # the URL had no credentials
    assert header(origin.requests[0], "Host") == "api.example.test:8080"


def test_environment_proxies_apply_to_loopback_targets_too(certs, monkeypatch, run):
    """As with curl and requests, only NO_PROXY exempts a host: 127.0.0.1 is proxied like any other."""
    with Origin() as origin, Origin(tls=server_context(certs.good)) as tls_origin:
        with Proxy({"127.0.0.1": origin.port}, limit=1) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url(credentials=False))
            assert completes(run, origin.url, **CLIENT).content == "hello over the wire"
        assert [r.line for r in proxy.requests] == ["POST %s/chat/completions HTTP/1.1" % origin.url]
        with Proxy({"127.0.0.1": tls_origin.port}, limit=1) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url(credentials=False))
            assert completes(run, tls_origin.url, ca_file=certs.ca, **CLIENT).content == "hello over the wire"
        assert [r.line for r in proxy.requests] == ["CONNECT 127.0.0.1:%d HTTP/1.1" % tls_origin.port]
    assert len(origin.requests) == 1 and len(tls_origin.requests) == 1


@pytest.mark.parametrize("no_proxy", ["127.0.0.0/8", "localhost,127.0.0.1", "::1/128, 127.0.0.1/32"])
def test_no_proxy_exempts_loopback_targets(certs, monkeypatch, no_proxy, run):
    with Silent() as proxy, Origin() as origin, Origin(tls=server_context(certs.good)) as tls_origin:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, "http://127.0.0.1:%d" % proxy.port)
        monkeypatch.setenv("NO_PROXY", no_proxy)
        assert completes(run, origin.url, **CLIENT).content == "hello over the wire"
        assert completes(run, tls_origin.url, ca_file=certs.ca, **CLIENT).content == "hello over the wire"
        assert not proxy.contacted()
    assert len(origin.requests) == 1 and len(tls_origin.requests) == 1


PROXY_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
    b"Content-Type: text/html\r\nContent-Length: 71\r\nConnection: close\r\n\r\n"
    b"<html><head><title>Proxy Authentication Required</title></head></html>"
)


def test_proxy_407_on_connect_is_a_typed_error_without_secrets(certs, run):
    with Proxy({}, answer=PROXY_407) as proxy:
        error = raises_run(run, streamlite.APIError, "https://api.example.test/v1", proxy=proxy.url(),
                           ca_file=certs.ca, **dict(CLIENT, max_retries=2))
    assert error.status == 407
    assert "needs credentials (407 Proxy Authentication Required)" in str(error)
    assert "127.0.0.1:%d" % proxy.port in str(error) and "api.example.test:443" in str(error)
    assert proxy.accepted == 1  # not retried
    assert PROXY_TOKEN not in str(error) + repr(error)


def test_proxy_refusing_connect_is_a_typed_error(certs, run):
    forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with Proxy({}, answer=forbidden) as proxy:
        error = raises_run(run, streamlite.APIError, "https://api.example.test/v1", proxy=proxy.url(),
                           ca_file=certs.ca, **CLIENT)
    assert error.status == 403 and "refused it" in str(error)


def _echo_407(request):
    """A chatty proxy that echoes the credentials it got (decoded) and the API key."""
    token = header(request, "Proxy-Authorization").split()[1]
    body = ("credentials %s rejected; the request carried %s" % (
        base64.b64decode(token).decode(), header(request, "Authorization"))).encode()
    return (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


def _echo_token_407(request):
    """A proxy that echoes its Proxy-Authorization header as it came: the base64 token."""
    body = ("rejected Proxy-Authorization: %s" % header(request, "Proxy-Authorization")).encode()
    return (b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


@pytest.mark.parametrize("answer", [PROXY_407, _echo_407, _echo_token_407], ids=["plain", "echoing", "token"])
def test_proxy_407_for_an_http_target_is_a_typed_error_without_secrets(answer, run):
    with Proxy({}, answer=answer) as proxy:
        error = raises_run(run, streamlite.APIError, "http://api.example.test/v1", proxy=proxy.url(), **dict(CLIENT,
                           max_retries=2))
    assert error.status == 407
    assert str(error).startswith("407 Proxy Authentication Required")
    assert PROXY_TOKEN not in str(error) and PROXY_PASSWORD not in str(error)
    assert proxy.accepted == 1
    assert header(proxy.requests[0], "Proxy-Authorization") == "Basic " + PROXY_TOKEN


def test_the_token_of_a_proxy_from_the_environment_is_scrubbed_too(monkeypatch, run):
    with Proxy({}, answer=_echo_token_407) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        error = raises_run(run, streamlite.APIError, "http://api.example.test/v1", **CLIENT)
    assert error.status == 407 and "[redacted]" in str(error)
    assert PROXY_TOKEN not in str(error) and PROXY_TOKEN not in repr(error.body)


def test_uppercase_http_proxy_is_ignored_in_a_cgi_program(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://from-a-request-header:3128")
    assert streamlite._proxy_from_env("http", "api.example.test") == "http://from-a-request-header:3128"
    monkeypatch.setenv("REQUEST_METHOD", "POST")  # httpoxy: a CGI request's Proxy: header
    assert streamlite._proxy_from_env("http", "api.example.test") is None
    monkeypatch.setenv("http_proxy", "http://chosen-by-the-admin:3128")
    assert streamlite._proxy_from_env("http", "api.example.test") == "http://chosen-by-the-admin:3128"


def test_unreachable_proxy_error_names_the_proxy_not_its_password(run):
    with loopback.refused_port() as port:  # bound, not listening: connecting is refused
        proxy = "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PASSWORD, port)
        error = raises_run(run, streamlite.APIConnectionError, "http://api.example.test/v1", proxy=proxy, **CLIENT)
    assert "through the proxy 127.0.0.1:%d" % port in str(error)
    assert PROXY_USER not in str(error)


@pytest.mark.parametrize("url, problem", [
    ("https://127.0.0.1:3128", "only http:// proxies"),
    ("socks5://127.0.0.1:1080", "only http:// proxies"),
    ("http://127.0.0.1:3128/\r\nX-Injected: 1", "without spaces or control characters"),
    ("http://127.0.0.1:99999", "invalid port"),
])
def test_bad_proxy_urls_are_config_errors(url, problem):
    error = raises(streamlite.ConfigError, streamlite.Client, "http://127.0.0.1:1/v1", KEY, proxy=url)
    assert problem in str(error)
    assert "X-Injected" not in str(error)


def test_proxy_url_parsing_and_credentials():
    proxy = streamlite._Proxy("http://us%40er:p%3Ass%2Fword-long@proxy.example.test:3128")
    assert (proxy.host, proxy.port) == ("proxy.example.test", 3128)
    assert proxy.headers == {"Proxy-Authorization": "Basic " + base64.b64encode(b"us@er:p:ss/word-long").decode()}
    assert proxy.secrets == [base64.b64encode(b"us@er:p:ss/word-long").decode(), "p:ss/word-long"]
    assert "word" not in repr(proxy)
    bare = streamlite._Proxy("127.0.0.1")  # no scheme, no port: http, 8080
    assert (bare.host, bare.port, bare.headers, bare.secrets) == ("127.0.0.1", 8080, {}, [])


def test_client_repr_holds_no_secret():
    proxy = "http://%s:%s@127.0.0.1:2" % (PROXY_USER, PROXY_PASSWORD)
    client = streamlite.Client("http://127.0.0.1:1/v1", KEY, proxy=proxy)
    for text in (repr(client), str(client), repr(client._session.settings.proxy)):
        for secret in SECRETS + (PROXY_TOKEN,):
            assert secret not in text
    assert "127.0.0.1:1" in repr(client)


@pytest.mark.parametrize("host, no_proxy, expected", [
    ("10.1.2.3", "10.0.0.0/8", True),
    ("11.1.2.3", "10.0.0.0/8", False),
    ("192.168.7.9", "localhost, 192.168.0.0/16", True),
    ("api.example.com", "10.0.0.0/8", False),  # a name is not in a CIDR range
    ("2001:db8::5", "2001:db8::/32", True),
    ("2001:db9::5", "2001:db8::/32", False),
    ("api.example.com", ".example.com", True),
    ("example.com", ".example.com", True),
    ("deep.api.example.com", ".example.com", True),
    ("badexample.com", ".example.com", False),
    ("badexample.com", "example.com", False),  # a suffix only counts at a dot
    ("api.example.com", "example.com", True),
    ("api.example.com", "*.example.com", True),
    ("example.com.evil.test", "example.com", False),
    ("exact.host", "exact.host", True),
    ("EXACT.Host.", "exact.host", True),  # case and a trailing dot do not matter
    ("other.host", "exact.host", False),
    ("exact.host", "exact.host:8080", True),  # a port in the entry is ignored
    ("2001:db8::1", "[2001:db8::1]:8080", True),
    ("anything.at.all", "*", True),
    ("10.9.9.9", "other.test,*", True),
    ("b.test", "a.test b.test", True),  # spaces separate too
    ("a.test", "", False),
    ("a.test", " , ,", False),
])
def test_no_proxy_matching(host, no_proxy, expected):
    assert streamlite._bypasses_proxy(host, no_proxy) is expected


def _setenv(monkeypatch, **values):
    for name, value in values.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("env, scheme, host, expected", [
    (dict(HTTPS_PROXY="http://s:1", HTTP_PROXY="http://h:1"), "https", "api.test", "http://s:1"),
    (dict(HTTPS_PROXY="http://s:1", HTTP_PROXY="http://h:1"), "http", "api.test", "http://h:1"),
    (dict(HTTPS_PROXY="http://s:1"), "http", "api.test", None),  # HTTPS_PROXY is for https only
    (dict(HTTP_PROXY="http://h:1"), "https", "api.test", None),
    (dict(ALL_PROXY="http://a:1"), "https", "api.test", "http://a:1"),
    (dict(ALL_PROXY="http://a:1"), "http", "api.test", "http://a:1"),
    (dict(all_proxy="http://a:1"), "http", "api.test", "http://a:1"),
    (dict(ALL_PROXY="http://a:1", HTTPS_PROXY="http://s:1"), "https", "api.test", "http://s:1"),
    (dict(https_proxy="http://lower:1", HTTPS_PROXY="http://upper:1"), "https", "api.test", "http://lower:1"),
    (dict(HTTPS_PROXY="", ALL_PROXY="http://a:1"), "https", "api.test", "http://a:1"),  # empty is unset
    (dict(HTTPS_PROXY="http://s:1", NO_PROXY=".test"), "https", "api.test", None),
    (dict(HTTPS_PROXY="http://s:1", no_proxy="api.test"), "https", "api.test", None),
    (dict(HTTPS_PROXY="http://s:1", NO_PROXY="other.test"), "https", "api.test", "http://s:1"),
    (dict(HTTPS_PROXY="http://s:1", NO_PROXY="10.0.0.0/8"), "https", "10.2.3.4", None),
    (dict(HTTPS_PROXY="http://s:1", NO_PROXY="*"), "https", "api.test", None),
    (dict(HTTPS_PROXY="http://s:1", HTTP_PROXY="http://h:1"), "https", "127.0.0.1", "http://s:1"),  # loopback too
    (dict(HTTPS_PROXY="http://s:1", HTTP_PROXY="http://h:1"), "http", "localhost", "http://h:1"),
    (dict(ALL_PROXY="http://a:1"), "http", "::1", "http://a:1"),
    (dict(ALL_PROXY="http://a:1", NO_PROXY="localhost,127.0.0.0/8,::1"), "http", "127.9.9.9", None),
    (dict(ALL_PROXY="http://a:1", NO_PROXY="localhost,127.0.0.0/8,::1"), "http", "localhost", None),
    (dict(ALL_PROXY="http://a:1", NO_PROXY="localhost,127.0.0.0/8,::1"), "http", "::1", None),
])
def test_proxy_from_the_environment(monkeypatch, env, scheme, host, expected):
    _setenv(monkeypatch, **env)
    assert streamlite._proxy_from_env(scheme, host) == expected


def test_proxy_option_overrides_the_environment(monkeypatch):
    _setenv(monkeypatch, HTTPS_PROXY="http://env-proxy.test:3128", HTTP_PROXY="http://env-proxy.test:3128")
    endpoint = streamlite._endpoint("https://api.example.test/v1", azure=False, model=None, api_version=None)

    def proxy_for(**options):
        return streamlite.Client("https://api.example.test/v1", KEY, **options)._session.settings.proxy_for(endpoint)

    assert proxy_for(proxy="") is None  # "" turns the environment's proxies off
    from_env = proxy_for()
    assert (from_env.host, from_env.port) == ("env-proxy.test", 3128)
    explicit = proxy_for(proxy="http://127.0.0.1:4000")
    assert (explicit.host, explicit.port) == ("127.0.0.1", 4000)
    loopback = streamlite._endpoint("https://127.0.0.1:9/v1", azure=False, model=None, api_version=None)
    client = streamlite.Client("https://127.0.0.1:9/v1", KEY, proxy="http://127.0.0.1:4000")
    assert client._session.settings.proxy_for(loopback).port == 4000  # an explicit proxy is used even for loopback


def test_empty_proxy_option_sends_directly_despite_the_environment(monkeypatch, run):
    with Proxy({}) as proxy, Origin() as origin:
        _setenv(monkeypatch, HTTP_PROXY=proxy.url(), ALL_PROXY=proxy.url())
        completion = completes(run, origin.url, proxy="", **CLIENT)
    assert completion.content == "hello over the wire"
    assert proxy.accepted == 0 and len(origin.requests) == 1


###############################################################################
# Hygiene: URLs, headers, the key, redirects
###############################################################################


@pytest.mark.parametrize("template", [
    "ftp://127.0.0.1:%d/v1",
    "file://127.0.0.1:%d/etc/passwd",
    "ws://127.0.0.1:%d/v1",
    "gopher://127.0.0.1:%d/",
    "127.0.0.1:%d/v1",
])
def test_only_http_and_https_urls_and_no_io_before_refusing(template):
    with Silent() as silent:
        url = template % silent.port
        error = raises(streamlite.ConfigError, streamlite.Client, url, KEY, **CLIENT)
        assert "must be an http:// or https:// URL" in str(error)
        error = raises(streamlite.ConfigError, streamlite.complete, "hi", base_url=url, api_key=KEY)
        assert "must be an http:// or https:// URL" in str(error)
        assert not silent.contacted()


def test_file_url_without_host_is_refused():
    error = raises(streamlite.ConfigError, streamlite.Client, "file:///etc/passwd", KEY)
    assert "must be an http:// or https:// URL" in str(error)


_INJECTED = ["\r\nX-Injected: 1", "\nX-Injected: 1", "\rX-Injected", "\x00X-Injected", "\x7fX-Injected", " X-Injected"]


@pytest.mark.parametrize("where, injected", [
    (where, injected) for where in ("path", "host", "env") for injected in _INJECTED
    if not (where == "env" and "\x00" in injected)  # an environment variable cannot hold NUL
])
def test_control_characters_in_base_url_are_config_errors(monkeypatch, injected, where):
    with Silent() as silent:
        if where == "path":
            url = "http://127.0.0.1:%d/v1%s" % (silent.port, injected)
        else:
            url = "http://127.0.0.1%s:%d/v1" % (injected, silent.port)
        if where == "env":
            monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:%d/v1%s" % (silent.port, injected))
            error = raises(streamlite.ConfigError, streamlite.Client, api_key=KEY)
        else:
            error = raises(streamlite.ConfigError, streamlite.Client, url, KEY)
        assert "base_url" in str(error) and "control characters" in str(error)
        assert "X-Injected" not in str(error)
        assert not silent.contacted()


def test_credentials_in_base_url_are_refused_without_echoing_them(run):
    with Silent() as silent:
        error = raises_run(run, streamlite.ConfigError, "http://user:%s@127.0.0.1:%d/v1" % (PROXY_PASSWORD,
                           silent.port),
                           None, **CLIENT)
        assert "must not hold credentials" in str(error)
        assert not silent.contacted()


@pytest.mark.parametrize("control", ["\r", "\n", "\r\n", "\x00", "\x1b", "\x7f"])
def test_control_characters_in_header_values_are_config_errors(control):
    value = "trace-VALUE-d41c%sX-Injected: 1" % control
    error = raises(streamlite.ConfigError, streamlite.Client, "http://127.0.0.1:1/v1", KEY,
                   headers={"X-Trace-Id": "fine", "X-Request-Tag": value})
    assert "'X-Request-Tag'" in str(error) and "control character" in str(error)
    assert "VALUE-d41c" not in str(error) and "X-Injected" not in str(error)
    # a key smuggled in as a header value is not shown either
    error = raises(streamlite.ConfigError, streamlite.Client, "http://127.0.0.1:1/v1",
                   headers={"Authorization": "Bearer %s%s" % (KEY, control)})
    assert "'Authorization'" in str(error)


def test_tab_in_a_header_value_is_allowed(run):
    with Origin() as origin:
        completes(run, origin.url, headers={"X-Tag": "a\tb"}, **CLIENT)
    assert header(origin.requests[0], "X-Tag") == "a\tb"


@pytest.mark.parametrize("name", ["X-Bad\r\nInjected", "X-Bad:Name", "X Bad", "", "X-Bad\x00"])
def test_bad_header_names_are_config_errors(name):
    error = raises(streamlite.ConfigError, streamlite.Client, "http://127.0.0.1:1/v1", KEY, headers={name: "v"})
    assert "invalid header name" in str(error)
    assert "\r" not in str(error) and "\n" not in str(error)


def test_api_key_with_a_control_character_inside_is_refused_without_showing_it():
    error = raises(streamlite.ConfigError, streamlite.Client, "http://127.0.0.1:1/v1", KEY + "\r\nX-Injected: 1")
    assert "api_key contains a control character" in str(error)


@pytest.mark.parametrize("raw", [KEY + "\n", KEY + "\r\n", "  " + KEY + " \n", "\n" + KEY])
@pytest.mark.parametrize("source", ["argument", "env"])
def test_api_key_read_from_a_file_is_stripped(monkeypatch, raw, source, run):
    with Origin() as origin:
        if source == "env":
            monkeypatch.setenv("OPENAI_API_KEY", raw)
            completes(run, origin.url, None, **CLIENT)
        else:
            completes(run, origin.url, raw, **CLIENT)
    assert header(origin.requests[0], "Authorization") == "Bearer " + KEY


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_is_not_followed(status, run):
    with Silent() as elsewhere:
        location = "http://127.0.0.1:%d/v1/chat/completions" % elsewhere.port
        reply = ("HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                 % (status, location)).encode()
        with Origin(reply=reply) as origin:
            error = raises_run(run, streamlite.APIError, origin.url, **dict(CLIENT, max_retries=2))
        assert error.status == status
        assert "redirect to %s not followed" % location in str(error)
        assert origin.accepted == 1  # not retried either
        assert not elsewhere.contacted()


def test_redirect_from_https_to_another_origin_is_not_followed(certs, run):
    with Silent() as elsewhere:
        location = "http://127.0.0.1:%d/v1/chat/completions" % elsewhere.port
        reply = ("HTTP/1.1 307 Temporary Redirect\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location).encode()
        with Origin(reply=reply, tls=server_context(certs.good)) as origin:
            error = raises_run(run, streamlite.APIError, origin.url, ca_file=certs.ca, **CLIENT)
        assert error.status == 307 and location in str(error)
        assert not elsewhere.contacted()


def test_server_echoing_the_key_in_an_error_is_scrubbed(run):
    body = b'{"error":{"message":"Incorrect API key provided: ' + KEY.encode() + b'","code":"invalid_api_key"}}'
    reply = (b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
             % (len(body), body))
    with Origin(reply=reply) as origin:
        error = raises_run(run, streamlite.APIError, origin.url, **CLIENT)
    assert error.status == 401 and "Incorrect API key provided" in str(error)
    assert header(origin.requests[0], "Authorization") == "Bearer " + KEY  # the key was sent


###############################################################################
# The same through AsyncClient (its own connect and tunnel code)
###############################################################################


def acomplete(client):
    return asyncio.run(client.acomplete("hi", model="test-model"))


def test_async_unknown_ca_is_refused_with_the_same_advice(certs):
    with Origin(tls=server_context(certs.good), allow_failures=True) as origin:
        client = streamlite.AsyncClient(origin.url, KEY, **CLIENT)
        error = raises(streamlite.APIConnectionError, acomplete, client)
    assert "TLS certificate verification failed for 127.0.0.1" in str(error)
    assert "ca_file=" in str(error) and "SSL_CERT_FILE" in str(error) and "verify=False" in str(error)
    assert origin.requests == []


def test_async_ca_file_and_host_name_check(certs):
    with Origin(tls=server_context(certs.good)) as origin:
        completion = acomplete(streamlite.AsyncClient(origin.url, KEY, ca_file=certs.ca, **CLIENT))
    _check_answer(completion, origin)
    with Origin(tls=server_context(certs.localhost_only), allow_failures=True) as origin:
        client = streamlite.AsyncClient(origin.url, KEY, ca_file=certs.ca, **CLIENT)
        error = raises(streamlite.APIConnectionError, acomplete, client)
    assert "mismatch" in str(error) and "not valid for '127.0.0.1'" in str(error)


def test_async_http_target_through_a_proxy():
    with Origin() as origin, Proxy({"127.0.0.1": origin.port}) as proxy:
        completion = acomplete(streamlite.AsyncClient(origin.url, KEY, proxy=proxy.url(), **CLIENT))
    assert completion.content == "hello over the wire"
    assert [r.line for r in proxy.requests] == ["POST http://127.0.0.1:%d/v1/chat/completions HTTP/1.1" % origin.port]
    assert header(proxy.requests[0], "Proxy-Authorization") == "Basic " + PROXY_TOKEN
    assert header(origin.requests[0], "Authorization") == "Bearer " + KEY


def test_async_https_target_through_a_connect_tunnel(certs):
    with Origin(tls=server_context(certs.good)) as origin, \
            Proxy({"api.example.test": origin.port}) as proxy:
        client = streamlite.AsyncClient("https://api.example.test/v1", KEY, proxy=proxy.url(), ca_file=certs.ca,
                                        **CLIENT)
        completion = acomplete(client)
    assert completion.content == "hello over the wire"
    assert [r.line for r in proxy.requests] == ["CONNECT api.example.test:443 HTTP/1.1"]
    assert header(proxy.requests[0], "Proxy-Authorization") == "Basic " + PROXY_TOKEN
    assert header(proxy.requests[0], "Authorization") is None
    assert header(origin.requests[0], "Authorization") == "Bearer " + KEY
    assert header(origin.requests[0], "Proxy-Authorization") is None


def test_async_proxy_407_on_connect(certs):
    with Proxy({}, answer=PROXY_407) as proxy:
        client = streamlite.AsyncClient("https://api.example.test/v1", KEY, proxy=proxy.url(), ca_file=certs.ca,
                                        **dict(CLIENT, max_retries=2))
        error = raises(streamlite.APIError, acomplete, client)
    assert error.status == 407 and "needs credentials" in str(error)
    assert proxy.accepted == 1


def test_async_host_name_mismatch_through_a_tunnel(certs):
    with Origin(tls=server_context(certs.good), allow_failures=True) as origin, \
            Proxy({"wrong.example.test": origin.port}) as proxy:
        client = streamlite.AsyncClient("https://wrong.example.test/v1", KEY, proxy=proxy.url(), ca_file=certs.ca,
                                        **CLIENT)
        error = raises(streamlite.APIConnectionError, acomplete, client)
    assert "Hostname mismatch" in str(error) and "not valid for 'wrong.example.test'" in str(error)
    assert origin.requests == [] and len(proxy.requests) == 1


###############################################################################
# Broken proxies and servers that do not speak TLS
###############################################################################


def Blurt(data, limit=4):
    """Sends `data` the moment a client connects (before reading anything), then closes."""
    return loopback.FaultServer([loopback.send(data), loopback.close()], read_request=False, max_connections=limit,
                                io_timeout=TIMEOUT, allow_errors=False)


def test_https_to_a_plain_http_server_is_a_tls_handshake_error(run):
    with Blurt(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n") as server:
        error = raises_run(run, streamlite.APIConnectionError, "https://127.0.0.1:%d/v1" % server.port,
                           **dict(CLIENT, max_retries=2))
    assert "TLS handshake with 127.0.0.1:%d failed" % server.port in str(error)
    assert "certificate verification" not in str(error)
    assert server.accepted == 1  # not retried


def test_proxy_closing_during_connect_is_a_connection_error(certs, run):
    with Proxy({}, answer=b"") as proxy:
        error = raises_run(run, streamlite.APIConnectionError, "https://api.example.test/v1", proxy=proxy.url(),
                           ca_file=certs.ca, **CLIENT)
    assert "the proxy 127.0.0.1:%d closed the connection during CONNECT" % proxy.port in str(error)
    assert header(proxy.requests[0], "Proxy-Authorization") == "Basic " + PROXY_TOKEN


def test_proxy_sending_data_before_the_tunnel_opens_is_a_protocol_error(certs, run):
    early = b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    with Proxy({}, answer=early) as proxy:
        error = raises_run(run, streamlite.ProtocolError, "https://api.example.test/v1", proxy=proxy.url(),
                           ca_file=certs.ca, **CLIENT)
    assert "before the tunnel was open" in str(error)
