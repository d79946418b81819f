"""The SSH bastion: the only place dbt_runner imports paramiko and sshtunnel.

- :mod:`.tunnel`: :class:`Tunnel` (connect, verify, authenticate, forward), local ports;
- :mod:`.forwarder`: the local forward server, its pumps, channel-open failures as values;
- :mod:`.hostkeys`: known_hosts files and pinned keys (pure);
- :mod:`.errors`: the one mapping of SSH failures to :class:`~dbt_runner.TunnelError` and
  its subclasses (:func:`~.errors.kind_of` for an SSH exception met elsewhere).

``tests/test_layers.py`` keeps paramiko and sshtunnel imports inside this folder.
"""

from __future__ import annotations

from .errors import kind_of
from .forwarder import LOCAL_HOST, ChannelOpenFailure
from .hostkeys import host_key_line
from .tunnel import PORT_RANGE, Tunnel, derive_local_port, local_port_candidates

__all__ = [
    "LOCAL_HOST",
    "PORT_RANGE",
    "ChannelOpenFailure",
    "Tunnel",
    "derive_local_port",
    "host_key_line",
    "kind_of",
    "local_port_candidates",
]
