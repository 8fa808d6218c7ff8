"""Reasoning and content apart: whatever field a provider uses, reasoning is a ReasoningDelta.

    python examples/reasoning.py

Providers name it `reasoning_content` (DeepSeek, vLLM < 0.11, llama.cpp), `reasoning` (vLLM,
Ollama, Groq, OpenRouter) or `reasoning_details` (OpenRouter); the deltas are the same.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402
from _common import run  # noqa: E402

###############################################################################
# Stream: label the reasoning and the answer as each begins
###############################################################################

LABELS = {streamlite.ReasoningDelta: "[thinking] ", streamlite.ContentDelta: "\n\n[answer] "}


def think(client: streamlite.Client, model: str) -> None:
    shown: Optional[type] = None  # the kind of delta printed last
    with client.stream("Is 97 a prime number?", model=model) as stream:
        for delta in stream:
            label = LABELS.get(type(delta))
            if label is None:  # not text: a Finish or the Usage
                continue
            if type(delta) is not shown:
                print(label if shown else label.lstrip("\n"), end="")
                shown = type(delta)
            print(delta.text, end="", flush=True)  # type: ignore[attr-defined]
    summarize(stream.completion)


###############################################################################
# Result: the Completion keeps both texts apart
###############################################################################


def summarize(result: streamlite.Completion) -> None:
    if not result.reasoning:
        print("\n\n(this model sent no reasoning; try a reasoning model in STREAMLITE_MODEL)")
    print("\n\nreasoning: %d characters, answer: %d characters" % (len(result.reasoning), len(result.content)))


if __name__ == "__main__":
    sys.exit(run(think))
