"""Stream a reply from the local OpenAI-compatible server: no key, no network.

    python3 examples/demo.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import streamlite  # noqa: E402
from server import ChatServer  # noqa: E402

COLOR = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
DIM, RESET = ("\x1b[2m", "\x1b[0m") if COLOR else ("", "")


def main() -> int:
    # -- 1. a local server on 127.0.0.1, port chosen by the OS -----------------------
    with ChatServer(pace=0.03) as server:
        client = streamlite.Client(base_url=server.url, api_key="sk-local-demo")
        # -- 2. stream: reasoning dimmed, then the answer, as they arrive --------------
        with client.stream("Tell me a very short story", model="local-model") as stream:
            for delta in stream:
                if isinstance(delta, streamlite.ReasoningDelta):
                    print(DIM + delta.text + RESET, end="", flush=True)
                elif isinstance(delta, streamlite.ContentDelta):
                    if stream.completion.content == delta.text:
                        print("\n")
                    print(delta.text, end="", flush=True)
        # -- 3. usage at the end ----------------------------------------------------------
        usage = stream.completion.usage
        print("\n")
        if usage is not None:
            print("usage: %s prompt + %s completion = %s tokens (%s reasoning)" % (
                usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.reasoning_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
