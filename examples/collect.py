"""Collect a whole answer: complete() streams it and returns the Completion.

    python examples/collect.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from _common import run  # noqa: E402

###############################################################################
# Ask: complete() takes the same arguments as stream()
###############################################################################


def ask(client: streamlite.Client, model: str) -> None:
    result = client.complete("Say hello", model=model, system="Answer briefly.", temperature=0.2)
    show(result)


###############################################################################
# Read the Completion: the plain fields describe choice 0
###############################################################################


def show(result: streamlite.Completion) -> None:
    print("content:", result.content)
    print("reasoning:", result.reasoning or "(none)")
    print("refusal:", result.refusal)
    print("tool_calls:", list(result.tool_calls))
    print("finish_reason:", result.finish_reason)
    print("usage:", result.usage)
    print("id:", result.id)
    print("model:", result.model)
    print("choices:", len(result.choices))


if __name__ == "__main__":
    sys.exit(run(ask))
