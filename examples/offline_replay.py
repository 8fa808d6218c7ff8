"""Fully offline: feed a recorded stream through the sans-I/O layers, no network at all."""

import json
import os

from _common import HERE, streamlite

# -- 1. bytes in, events out: the SSE decoder owns no socket --------------------------
decoder = streamlite.SSEDecoder()
with open(os.path.join(HERE, "data", "openai_basic_text.sse"), "rb") as recording:
    events = decoder.feed(recording.read()) + decoder.close()

# -- 2. events to deltas to a Completion --------------------------------------------------
accumulator = streamlite.Accumulator()
for event in events:
    if event.data.startswith("[DONE]"):
        break
    for delta in streamlite.parse_chunk(json.loads(event.data)):
        accumulator.add(delta)
print(accumulator.result().content)
