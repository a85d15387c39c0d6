"""The replay format: logged per-query outcomes of real models, one JSON object per line."""

from triage.replay.io import ReplayFormatError, iter_replay, read_replay, write_replay
from triage.replay.matrix import ReplayData
from triage.replay.schema import ChatMessage, Outcome, ReplayRecord

__all__ = [
    "ChatMessage",
    "Outcome",
    "ReplayData",
    "ReplayFormatError",
    "ReplayRecord",
    "iter_replay",
    "read_replay",
    "write_replay",
]
