"""Why a message was rejected: one enum for every ``messages_rejected{reason=…}`` label.

Most reasons are ingest's verdict on a message (:mod:`edge_agent.pipeline.ingest`); two are the
MQTT link's, before or around ingest: ``queue_full`` (the bounded incoming queue overflowed —
the agent could not keep up) and ``handler_error`` (handling the message raised: a bug, logged
with its traceback). The README's list, the fuzz test and the metrics all use this enum, so a
new reason cannot be added in one place and missed in another.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_UNIT = "unknown_unit"
    TOO_MANY_UNITS = "too_many_units"
    UNKNOWN_SENSOR = "unknown_sensor"
    BAD_ENCODING = "bad_encoding"
    BAD_JSON = "bad_json"
    BAD_TYPE = "bad_type"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIMESTAMP = "bad_timestamp"
    TOO_OLD = "too_old"
    TOO_NEW = "too_new"
    QUEUE_FULL = "queue_full"
    HANDLER_ERROR = "handler_error"


#: Reasons the MQTT link gives; every other reason is ingest's.
LINK_REASONS: tuple[RejectReason, ...] = (RejectReason.QUEUE_FULL, RejectReason.HANDLER_ERROR)
#: Reasons ingest gives (what a fuzzed payload can reach).
INGEST_REASONS: tuple[RejectReason, ...] = tuple(r for r in RejectReason if r not in LINK_REASONS)
