"""What every example needs: a client for a real provider when one is configured, else a local server.

    OPENAI_BASE_URL   a provider's base URL, e.g. https://api.openai.com/v1 (unset: the local server)
    OPENAI_API_KEY    its key
    STREAMLITE_MODEL  the model to ask (default gpt-4.1-mini; "local-model" for the local server)
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator, Tuple

import streamlite
from server import ChatServer

#: The model asked when STREAMLITE_MODEL is not set.
DEFAULT_MODEL = "gpt-4.1-mini"
#: Examples against the local server wait this long between events, to look like a stream.
LOCAL_PACE = 0.01

Example = Callable[[streamlite.Client, str], None]


@contextlib.contextmanager
def connect() -> Iterator[Tuple[streamlite.Client, str]]:
    """Yield a client and a model: the provider in OPENAI_BASE_URL, else a local ChatServer."""
    if os.environ.get("OPENAI_BASE_URL"):
        # Client() reads OPENAI_BASE_URL and OPENAI_API_KEY itself
        yield streamlite.Client(), os.environ.get("STREAMLITE_MODEL") or DEFAULT_MODEL
        return
    with ChatServer(pace=LOCAL_PACE) as server:
        # the local server accepts any key; proxy="": a proxy set for this machine cannot reach it
        client = streamlite.Client(base_url=server.url, api_key="sk-local", proxy="")
        yield client, os.environ.get("STREAMLITE_MODEL") or "local-model"


def run(example: Example) -> int:
    """Run example(client, model); an error prints one line and gives exit code 1."""
    try:
        with connect() as (client, model):
            example(client, model)
    except streamlite.StreamliteError as exc:  # the message never holds the API key
        print("\nerror: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
