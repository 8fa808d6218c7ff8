"""Make `import streamlite` and `from server import ChatServer` (examples/) work from the project root without installing."""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
for path in (str(ROOT), str(ROOT / "tests"), str(ROOT / "examples")):
    if path not in sys.path:
        sys.path.insert(0, path)

# The tests talk to their own servers on 127.0.0.1; a proxy set for this machine must not catch
# them (streamlite, like curl, proxies loopback hosts too unless NO_PROXY lists them). Tests of
# proxies set these themselves. Subprocesses inherit the cleaned environment.
for _name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_name, None)
