"""Token usage: asked for by default (stream_options.include_usage), arrives at the end."""

from _common import client_and_model

with client_and_model() as (client, model):
    usage = client.complete("Count to five", model=model).usage
    if usage is None:
        print("the server sent no usage")
    else:
        print("prompt %s, completion %s, total %s, reasoning %s, cached %s" % (
            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
            usage.reasoning_tokens, usage.cached_tokens))
