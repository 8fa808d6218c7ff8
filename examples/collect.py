"""Collect the full response with complete() and read the Completion."""

from _common import client_and_model

with client_and_model() as (client, model):
    result = client.complete("Say hello", model=model, system="Answer briefly.", temperature=0.2)
    print("content:", result.content)
    print("finish_reason:", result.finish_reason)
    print("model:", result.model, "id:", result.id)
