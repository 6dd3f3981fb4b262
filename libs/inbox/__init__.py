"""The idempotent-consumer record (one row per consumer and message id); see ``store``."""

from libs.inbox import store

__all__ = ["store"]
