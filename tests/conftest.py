"""Options shared by every suite; fixtures live next to the tests that use them."""

from __future__ import annotations

import pytest
from hypothesis import settings

#: ``pytest --hypothesis-profile=thorough``: ten times the default examples for properties
#: without their own ``max_examples`` (100 -> 1,000; the decoder fuzz tests 200 -> 2,000).
settings.register_profile("thorough", max_examples=1000)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=("kafka", "kfake", "tansu"),
        default="kafka",
        help="broker the integration suite starts when WEIR_KAFKA_BOOTSTRAP is unset (or, when "
        "set, which kind it names): kafka = Apache Kafka 4.x KRaft, kfake = franz-go's kfake "
        "(built once; needs Go or the kfake extra), tansu = embedded Tansu (tests marked "
        "requires_transactions/requires_idempotence/requires_kafka then skip)",
    )
