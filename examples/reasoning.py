"""Reasoning vs content: providers name the field differently; streamlite gives ReasoningDelta."""

from _common import client_and_model, streamlite

with client_and_model() as (client, model):
    with client.stream("Is 97 prime?", model=model) as stream:
        for delta in stream:
            if isinstance(delta, streamlite.ReasoningDelta):
                print("[thinking] " + delta.text, flush=True)
            elif isinstance(delta, streamlite.ContentDelta):
                print(delta.text, end="", flush=True)
    print("\n\nreasoning: %d characters, answer: %d characters"
          % (len(stream.completion.reasoning), len(stream.completion.content)))
