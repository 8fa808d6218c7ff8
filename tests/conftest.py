"""Make `import streamlite` and `from server import ChatServer` (examples/) work from the project root without installing."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
for path in (str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

# The tests talk to their own servers on 127.0.0.1; a proxy set for this machine must not catch
# them (streamlite, like curl, proxies loopback hosts too unless NO_PROXY lists them). Tests of
# proxies set these themselves. Subprocesses inherit the cleaned environment.
for _name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_name, None)


def pytest_generate_tests(metafunc):
    """A test that takes the `run` fixture runs through both clients; a module's SYNC_ONLY names
    the tests whose async variant does not apply on this Python (the module says why)."""
    if "run" not in metafunc.fixturenames or "run" in vars(metafunc.module):
        return  # a module with a `run` fixture of its own parametrizes it itself
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "run" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return  # the test gives `run` its own values
    modes = ["sync", "async"]
    if metafunc.function.__name__ in getattr(metafunc.module, "SYNC_ONLY", ()):
        modes = ["sync"]  # the module says why (e.g. a Python version without the async feature)
    metafunc.parametrize("run", modes, indirect=True)


@pytest.fixture
def run(request):

    """run(url, prompt="hi", api_key=None, *, call="stream", on_delta=None, ...) -> Outcome, through
    streamlite.Client or streamlite.AsyncClient (tests/clients.py); run.mode is "sync" or "async"."""
    from clients import RUNNERS  # tests/ is on sys.path once this module has run

    runner = RUNNERS[request.param]
    runner.mode = request.param
    return runner
