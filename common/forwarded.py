"""Which peers may tell us the client's real address, and what they say (uvicorn's rules).

A balancer in front hides the client: every connection comes from the balancer. It can say
who the client is (the PROXY protocol, or an ``X-Forwarded-For`` header), but only a peer in
``--forwarded-allow-ips`` is believed: anyone else could claim any address. Pure.
"""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedHosts:
    """``--forwarded-allow-ips``: comma-separated addresses or networks, or ``*`` for all."""

    def __init__(self, spec: str) -> None:
        items = [item.strip() for item in spec.split(",") if item.strip()]
        self.everyone = "*" in items
        self.networks: list[Network] = []
        for item in items:
            if item != "*":
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ValueError(f"not an address or network: {item!r}") from None

    def __contains__(self, host: object) -> bool:
        if self.everyone:
            return True
        try:
            address = ipaddress.ip_address(str(host))
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def forwarded_client(header: str, trusted: TrustedHosts) -> str | None:
    """The client an ``X-Forwarded-For`` chain names: the rightmost host that is not a
    trusted proxy (each proxy appends the address it received from); None if it names none."""
    hosts = [host.strip() for host in header.split(",") if host.strip()]
    for host in reversed(hosts):
        if host not in trusted:
            return host
    return hosts[0] if hosts else None
