"""The routing core: ``Router`` turns messages into a decision, calls the chosen strategy through
litellm (escalating, retrying or falling back as the policy says) and records the call."""

from triage.policies.decide import Decision
from triage.router.core.calls import Attempt
from triage.router.core.errors import TriageProviderError
from triage.router.core.router import Routed, Router
from triage.router.core.streaming import AsyncTriageStream, TriageStream

__all__ = ["AsyncTriageStream", "Attempt", "Decision", "Routed", "Router", "TriageProviderError", "TriageStream"]
