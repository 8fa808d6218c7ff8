"""Plain streaming: print the answer as it arrives."""

from _common import client_and_model, streamlite

with client_and_model() as (client, model):
    # -- stream and print each piece of content the moment it arrives ----------------
    for delta in client.stream("Tell me a short story", model=model):
        if isinstance(delta, streamlite.ContentDelta):
            print(delta.text, end="", flush=True)
    print()
