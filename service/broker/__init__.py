"""Kafka brokers weir starts for dev, tests and CI: Apache Kafka (KRaft), kfake and Tansu.

See :mod:`service.broker.base` for the seam's call contract and ``weir broker --help`` for
the commands.
"""

from __future__ import annotations

from service.broker.base import Broker, BrokerKind, BrokerStatus, Progress
from service.broker.external import ExternalBroker
from service.broker.kafka import KAFKA_VERSION, ApacheKafka
from service.broker.kfake import KFake
from service.broker.tansu import Tansu

__all__ = [
    "KAFKA_VERSION",
    "ApacheKafka",
    "Broker",
    "BrokerKind",
    "BrokerStatus",
    "ExternalBroker",
    "KFake",
    "Progress",
    "Tansu",
]
