"""Fully offline: a recorded stream through the sans-I/O layers, no socket at all.

    python examples/offline_replay.py [FILE.sse]

    bytes --SSEDecoder--> events --json.loads--> chunks --parse_chunk--> deltas --Accumulator--> Completion
"""

from __future__ import annotations

import json
import os
import sys
from typing import Iterator, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import streamlite  # noqa: E402

RECORDING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "openai_basic_text.sse")

###############################################################################
# Bytes: read the recording in small pieces, as a socket would deliver them
###############################################################################


def read_pieces(path: str, size: int = 100) -> Iterator[bytes]:
    with open(path, "rb") as recording:
        for piece in iter(lambda: recording.read(size), b""):
            yield piece


###############################################################################
# Events: the SSE decoder turns bytes into events, however the bytes are split
###############################################################################


def decode_events(pieces: Iterator[bytes]) -> Iterator[streamlite.ServerSentEvent]:
    decoder = streamlite.SSEDecoder()
    for piece in pieces:
        yield from decoder.feed(piece)
    yield from decoder.close()


###############################################################################
# Deltas and the Completion: each event's JSON is a chunk; `[DONE]` ends the stream
###############################################################################


def replay(path: str) -> streamlite.Completion:
    accumulator = streamlite.Accumulator()
    for event in decode_events(read_pieces(path)):
        if event.data == "[DONE]":
            break
        chunk = json.loads(event.data)
        accumulator.add_chunk_info(chunk)  # the id, model and created of the answer
        for delta in streamlite.parse_chunk(chunk):
            accumulator.add(delta)
    return accumulator.result()


def main(argv: List[str]) -> int:
    result = replay(argv[0] if argv else RECORDING)
    if result.reasoning:
        print("reasoning:", result.reasoning)
    print(result.content)
    print("finish_reason: %s, model: %s" % (result.finish_reason, result.model))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
