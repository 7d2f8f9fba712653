"""Limits of client message fields on `/ws`, in one place: the consumer enforces them, the
AsyncAPI document (events/asyncapi.py) and docs/protocol.md state them (both generated from
the message models in events/protocol.py)."""

from __future__ import annotations

MAX_FRAME_BYTES = 64 * 1024  # a larger frame closes the socket with 1009
MAX_EVENT_ID = 2**63 - 1  # event ids are signed 64-bit integers in PostgreSQL and SQLite
MAX_LIST_ITEMS = 64  # auth.eventTypes, auth.eventCategories
