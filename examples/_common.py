"""Shared setup for the examples: a real provider from the environment, else the local server."""

import contextlib
import os
import sys
from typing import Iterator, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import streamlite  # noqa: E402
from server import ChatServer  # noqa: E402


@contextlib.contextmanager
def client_and_model() -> Iterator[Tuple[streamlite.Client, str]]:
    """OPENAI_BASE_URL/OPENAI_API_KEY/STREAMLITE_MODEL when set; otherwise a local ChatServer."""
    model = os.environ.get("STREAMLITE_MODEL", "gpt-4.1-mini")
    if os.environ.get("OPENAI_BASE_URL"):
        yield streamlite.Client(), model
        return
    with ChatServer(pace=0.01) as server:
        yield streamlite.Client(base_url=server.url, api_key="sk-local"), model
