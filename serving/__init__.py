"""Serving: the live engine, its durable state, and the HTTP API."""

from serving.engine import Engine, Outcome
from serving.log import EventLog
from serving.outbox import Change
from serving.scorers import Scorers, load_scorers
from serving.service import Service
from serving.settings import Settings
from serving.store import MemoryStore, StateStore

__all__ = [
    "Change",
    "Engine",
    "EventLog",
    "MemoryStore",
    "Outcome",
    "Scorers",
    "Service",
    "Settings",
    "StateStore",
    "load_scorers",
]
