"""The Python SDK: a litellm-style function and a LangChain chat model, both over :class:`Router`.

    from triage.router.sdk import triage_completion
    response = triage_completion(messages=[{"role": "user", "content": "2+2?"}])   # local default
    response.choices[0].message.content, response._hidden_params["triage"]["decision"]["tier"]

    from triage.router.sdk.langchain import TriageChatModel      # needs langchain-core
    TriageChatModel(policy="policies/examples/local.yaml").invoke("2+2?").response_metadata["triage"]
"""

from triage.router.sdk.completion import atriage_completion, get_router, triage_completion, triage_route

__all__ = ["atriage_completion", "get_router", "triage_completion", "triage_route"]
