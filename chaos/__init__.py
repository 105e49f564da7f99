"""weir's reliability and security suite: faults, overload, bad input and access.

Each scenario runs the real service (``weir serve`` or ``python -m chaos.worker``) against
its own Apache Kafka (:class:`ChaosKafka`), drives open-loop load through it, injects one
kind of fault and returns a :class:`Row`: events, lost, duplicated, expired/shed, recovery
time, peak RSS, named checks and a verdict. ``python -m chaos`` runs them and prints one
table; ``tests/integration/test_chaos.py`` runs the CI subset.

Modules: ``scenarios`` (the list), ``faults`` (worker killed, broker restarted, restart
from the commit), ``network`` (through :class:`ChaosProxy`), ``pressure`` (engine faults,
overload), ``poison`` (fuzzed input), ``security`` (SASL/SCRAM over TLS), and the tools
``broker``, ``proxy``, ``tls``, ``load``, ``procs``, ``fuzz``, ``worker``.
"""

from chaos.broker import ChaosKafka, ScramUser
from chaos.context import Context, Row
from chaos.proxy import ChaosProxy
from chaos.tls import Pki, make_pki

__all__ = ["ChaosKafka", "ChaosProxy", "Context", "Pki", "Row", "ScramUser", "make_pki"]
