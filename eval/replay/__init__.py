"""The replay format: logged per-query outcomes of real models, one JSON object per line."""

from eval.replay.io import ReplayFormatError, iter_replay, read_replay, write_replay
from eval.replay.matrix import ReplayData
from eval.replay.schema import ChatMessage, Outcome, ReplayRecord

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
