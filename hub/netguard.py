"""Which addresses the hub may call out to (webhook receivers).

Link-local and cloud metadata addresses are always refused: a webhook URL
must never reach the instance's credentials. Private, loopback and other
non-global addresses are refused unless the operator allows private targets
(WEBHOOK_ALLOW_PRIVATE=true). The check runs when an endpoint is registered
and again on every connection, through the resolver the HTTP client uses, so
a name that re-resolves to a forbidden address later (DNS rebinding) is
refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_ALWAYS = [ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10",          # link-local, where most clouds serve metadata
    "100.100.100.200/32",                   # Alibaba Cloud metadata
    "fd00:ec2::254/128",                    # AWS metadata over IPv6
    "0.0.0.0/8", "::/128", "224.0.0.0/4", "ff00::/8", "240.0.0.0/4")]
BLOCKED_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                           "instance-data.ec2.internal", "metadata.azure.internal"})
PRIVATE_HINT = "set WEBHOOK_ALLOW_PRIVATE=true to allow private targets"


class RefusedAddress(OSError):
    """The target is not one the hub may call; the message says why."""


def refusal(ip: IP, allow_private: bool) -> str | None:
    """Why the hub must not connect to `ip`, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in net for net in _ALWAYS if net.version == ip.version) or ip.is_link_local or ip.is_multicast:
        return f"{ip} is a link-local, metadata or reserved address"
    if not allow_private and not ip.is_global:
        return f"{ip} is a private or loopback address ({PRIVATE_HINT})"
    return None


def check_url(url: str) -> tuple[str, IP | None]:
    """(host, its address if it is an IP literal); RefusedAddress for what no setting allows."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedAddress("only http and https URLs are allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise RefusedAddress("the URL has no host")
    try:
        parts.port
    except ValueError:
        raise RefusedAddress("the URL's port is not a number between 0 and 65535") from None
    if host in BLOCKED_NAMES:
        raise RefusedAddress(f"{host} is a cloud metadata address")
    try:
        return host, ipaddress.ip_address(host)
    except ValueError:
        return host, None


async def check_target(url: str, allow_private: bool, timeout: float = 5.0) -> None:
    """Raises RefusedAddress unless every address the URL's host resolves to is allowed."""
    host, literal = check_url(url)
    if literal is not None:
        addresses: list[IP] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout)
        except (OSError, TimeoutError, ValueError):  # ValueError: UnicodeError for a name IDNA refuses
            raise RefusedAddress(f"{host[:100]} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for ip in addresses:
        if (reason := refusal(ip, allow_private)) is not None:
            raise RefusedAddress(reason)


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver: refuses a host any of whose addresses is forbidden."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[ResolveResult]:
        if host.rstrip(".").lower() in BLOCKED_NAMES:
            raise RefusedAddress(f"{host} is a cloud metadata address")
        results = await self._inner.resolve(host, port, family)
        for result in results:
            reason = refusal(ipaddress.ip_address(result["host"].split("%")[0]), self._allow_private)
            if reason is not None:
                raise RefusedAddress(reason)
        return results

    async def close(self) -> None:
        await self._inner.close()
