"""The agent's MQTT connection behind a small transport interface.

The rest of the daemon uses what is exported here, all of it plain Python values: the
:class:`Transport` interface and its one implementation :class:`MqttLink`,
:class:`MessageProperties` for MQTT 5 properties, the status message, the subscriptions,
the back-off and the failure descriptions. paho and aiomqtt types stay inside this package
(``tests/test_boundaries.py`` checks both the imports and these signatures).

One concept per module:

* :mod:`.transport`: the interface (:class:`Transport`, :class:`MessageProperties`).
* :mod:`.link`: the state machine (connect, subscribe, receive, publish, stop, reconnect).
* :mod:`.client`: one configured ``aiomqtt.Client`` per attempt (session, Last Will).
* :mod:`.intake`: the bounded, arrival-stamping incoming queue and delivery to the agent.
* :mod:`.direct`: the default receive path, reading the socket itself.
* :mod:`.framing`: MQTT packets out of a byte stream (pure; the direct path's decoder).
* :mod:`.tcp`: the quick ACK after each read that keeps the broker's Nagle from holding readings.
* :mod:`.status`: the retained status message.
* :mod:`.subscriptions`: the wildcard subscriptions (made by :mod:`edge_agent.topics`).
* :mod:`.properties`: paho properties from plain values.
* :mod:`.backoff`: reconnect delays and how often a retry is logged.
* :mod:`.tls`: the TLS context.
* :mod:`.log_relay`: paho's warnings, kept with their exceptions.
* :mod:`.errors`: a failure's cause, by codes and exception types.
* :mod:`.outage`: what the log says during an outage.
"""

from .backoff import RETRY_LOG_EVERY_SECONDS, backoff_delays, retry_log_due
from .errors import CAUSES
from .link import MqttLink
from .properties import alert_properties
from .status import status_payload, status_topic
from .subscriptions import command_subscriptions, subscription_topics
from .tls import tls_context
from .transport import MessageCallback, MessageProperties, ModelTrace, StatusState, Transport

__all__ = [
    "CAUSES",
    "RETRY_LOG_EVERY_SECONDS",
    "MessageCallback",
    "MessageProperties",
    "ModelTrace",
    "MqttLink",
    "StatusState",
    "Transport",
    "alert_properties",
    "backoff_delays",
    "command_subscriptions",
    "retry_log_due",
    "status_payload",
    "status_topic",
    "subscription_topics",
    "tls_context",
]
