"""The routing core: ``Router`` turns messages into a decision, calls the chosen strategy through
litellm (escalating, retrying or falling back as the policy says) and records the call."""

from policies.decide import Decision
from router.core.calls import Attempt
from router.core.errors import TriageProviderError
from router.core.router import Routed, Router
from router.core.streaming import AsyncTriageStream, TriageStream

__all__ = ["AsyncTriageStream", "Attempt", "Decision", "Routed", "Router", "TriageProviderError", "TriageStream"]
