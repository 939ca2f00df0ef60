"""The SSRF guard (SPEC §5): which webhook targets wahookd may connect to.

One rule, `refusal_reason`, decides for an IP address. It is applied in three places:

- `check_url`: when a webhook is configured (config file, PUT config, POST test) and again
  before every attempt. It checks the URL's form and, when the host is an IP literal, the
  address. Host names are not resolved here, because DNS can change after configuring.
- `PolicyResolver.resolve`, at connect time: the daemon resolves the name itself and hands
  aiohttp only the allowed addresses. aiohttp connects to exactly those, with no second
  lookup, so DNS rebinding cannot pass. TLS still verifies the URL's host name.
- `PolicyResolver.open_socket`, aiohttp's socket factory: the last check, on the exact
  address of every socket about to connect, whatever path led there (IP literals skip the
  resolver).

The URL's host is taken from yarl, aiohttp's own URL parser, so the host checked is the host
connected to (yarl maps e.g. full-width digits to ASCII ones, which urlsplit does not).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import yarl
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# First match wins. Reasons read as "<address> is <reason>" ("127.0.0.1 is loopback").
_V4_REFUSED: Final = tuple(
    (ipaddress.IPv4Network(cidr), reason)
    for cidr, reason in (
        ("0.0.0.0/8", "unspecified (0.0.0.0/8)"),
        ("10.0.0.0/8", "private (10.0.0.0/8)"),
        ("100.64.0.0/10", "carrier-grade NAT (100.64.0.0/10)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16, where cloud metadata lives)"),
        ("172.16.0.0/12", "private (172.16.0.0/12)"),
        ("192.0.0.0/24", "IETF protocol assignments (192.0.0.0/24)"),
        ("192.0.2.0/24", "documentation (TEST-NET-1)"),
        ("192.88.99.0/24", "6to4 relay anycast (192.88.99.0/24, deprecated)"),
        ("192.168.0.0/16", "private (192.168.0.0/16)"),
        ("198.18.0.0/15", "benchmarking (198.18.0.0/15)"),
        ("198.51.100.0/24", "documentation (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation (TEST-NET-3)"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved (240.0.0.0/4)"),
    )
)
_V6_REFUSED: Final = tuple(
    (ipaddress.IPv6Network(cidr), reason)
    for cidr, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64 (64:ff9b:1::/48)"),
        ("2001::/32", "Teredo tunnelling (2001::/32)"),
        ("2001::/23", "IETF protocol assignments (2001::/23)"),
        ("2001:db8::/32", "documentation (2001:db8::/32)"),
        ("3fff::/20", "documentation (3fff::/20)"),
        ("fc00::/7", "unique local, private (fc00::/7)"),
        ("fe80::/10", "link-local (fe80::/10)"),
        ("fec0::/10", "site-local (fec0::/10, deprecated)"),
        ("ff00::/8", "multicast"),
    )
)
_V6_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_HOST_NAME_RE: Final = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_RADIX_DIGITS: Final = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}
_ALLOW_HINT: Final = "add it to delivery.allow_networks to allow it"


class RefusedTarget(Exception):
    """The target URL is not allowed; the message says why."""


class RefusedAddress(RefusedTarget, OSError):
    """A resolved or literal address is refused at connect time (an OSError for aiohttp)."""


def refusal_reason(ip: IPAddress, allow_networks: Sequence[Network]) -> str | None:
    """Why wahookd must not connect to ip, or None when it may.

    Refused unless inside allow_networks: every address that is not public unicast. An IPv6
    address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged by the IPv4 one.
    """
    if any(ip in network for network in allow_networks):
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return next((reason for network, reason in _V4_REFUSED if ip in network), None)
    if embedded := _embedded_ipv4(ip):
        how, v4 = embedded
        inner = refusal_reason(v4, allow_networks)
        return None if inner is None else f"{how} {v4}, which is {inner}"
    for network, reason in _V6_REFUSED:
        if ip in network:
            return reason
    if ip not in _V6_GLOBAL_UNICAST:
        return "reserved (outside the global unicast range 2000::/3)"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:  # the socket connects to the IPv4 address itself
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:  # the translator connects to the IPv4 address
        return "NAT64 for", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:  # the 6to4 relay's IPv4 side
        return "6to4 for", ip.sixtofour
    return None


def parse_ip(text: str) -> IPAddress | None:
    """The address in text (an IPv6 zone is dropped), or None when it is not one."""
    try:
        return ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None


def _refused(shown: str, reason: str) -> str:
    return f"{shown} is not a public address: {reason}; {_ALLOW_HINT}"


def check_url(url: str, *, require_https: bool, allow_networks: Sequence[Network]) -> None:
    """Raise RefusedTarget unless url is an http(s) URL whose literal host the policy allows."""
    if any(char.isspace() or not char.isprintable() for char in url):
        raise RefusedTarget("URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        # aiohttp parses the URL with yarl; its host is the one connected to
        host = yarl.URL(url).raw_host
    except (ValueError, UnicodeError) as exc:
        raise RefusedTarget(f"invalid URL: {exc}") from None
    allowed = ("https",) if require_https else ("https", "http")
    if parts.scheme not in allowed:
        need = "https" if require_https else "http or https"
        raise RefusedTarget(f"URL scheme must be {need}, got '{parts.scheme or '(none)'}'")
    if not parts.hostname or not host:
        raise RefusedTarget("URL has no host")
    if port == 0:
        raise RefusedTarget("URL port must be 1-65535")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("URL must not carry credentials; use webhook headers instead")
    if "[" in parts.netloc and ":" not in host:  # "[v1.x]", an RFC 3986 IPvFuture
        raise RefusedTarget(f"host {parts.hostname!r} is not a valid IPv6 address")
    check_host(host, allow_networks)


def check_host(host: str, allow_networks: Sequence[Network]) -> None:
    """Refuse a literal address outside the policy and hosts that only look like names.

    A host that ends in a number is an IPv4 address to browsers and to inet_aton, in any
    of its old forms (2130706433, 0x7f.1, 0177.0.0.1, 127.1); only dotted decimal passes.
    """
    if ":" in host:  # an IPv6 literal: aiohttp connects to it without a lookup
        if "%" in host:
            raise RefusedTarget(f"host {host!r}: IPv6 zone identifiers are not allowed")
        ip = parse_ip(host)
        if ip is None:
            raise RefusedTarget(f"host {host!r} is not a valid IPv6 address")
        if reason := refusal_reason(ip, allow_networks):
            raise RefusedTarget(_refused(host, reason))
        return
    if _ends_in_number(host):
        v4 = _whatwg_ipv4(host)
        if v4 is None:
            raise RefusedTarget(f"host {host!r} ends in a number but is not an IPv4 address")
        canonical = str(v4) == host
        if reason := refusal_reason(v4, allow_networks):
            raise RefusedTarget(_refused(host if canonical else f"{host} (that is {v4})", reason))
        if not canonical:
            raise RefusedTarget(f"host {host!r} is an unusual form of {v4}; write it as {v4}")
        return
    if len(host) > 253 or not _HOST_NAME_RE.fullmatch(host):
        raise RefusedTarget(f"host {host!r} is not a valid host name")


def _ends_in_number(host: str) -> bool:
    """The WHATWG URL standard's "ends in a number" test, which makes a host IPv4."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    if last.isascii() and last.isdigit():
        return True
    return _ipv4_number(last) is not None


def _ipv4_number(text: str) -> int | None:
    """One part of an IPv4 host: decimal, 0x hex or 0-prefixed octal (WHATWG, inet_aton)."""
    if not text:
        return None
    radix = 10
    if len(text) >= 2 and text[:2] in ("0x", "0X"):
        text, radix = text[2:], 16
    elif len(text) >= 2 and text[0] == "0":
        text, radix = text[1:], 8
    if not text:
        return 0
    if not all(char in _RADIX_DIGITS[radix] for char in text):
        return None
    return int(text, radix)


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The WHATWG URL standard's IPv4 parser: 1 to 4 parts, the last fills the remaining bytes."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if len(labels) > 4:
        return None
    numbers = [_ipv4_number(label) for label in labels]
    if any(number is None for number in numbers):
        return None
    values = [number for number in numbers if number is not None]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (5 - len(values)):
        return None
    return ipaddress.IPv4Address(
        last + sum(value * 256 ** (3 - index) for index, value in enumerate(leading))
    )


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that returns only the addresses the policy allows.

    `allow_networks` is read on every lookup, so a reload applies to the next connection.
    """

    def __init__(self, upstream: AbstractResolver, allow_networks: Sequence[Network]) -> None:
        self.upstream = upstream
        self.allow_networks = tuple(allow_networks)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve with the upstream resolver and drop refused addresses; none left: refuse."""
        answers = await self.upstream.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for answer in answers:
            if reason := self._refusal(answer["host"]):
                refused.append(f"{answer['host']} is {reason}")
            else:
                allowed.append(answer)
        if refused and not allowed:
            raise RefusedAddress(
                f"{host} resolves only to addresses that are not public: {'; '.join(refused)}; "
                "add them to delivery.allow_networks to allow them"
            )
        if not allowed:
            # aiohttp cannot handle an empty answer, so fail the lookup here
            raise OSError(f"{host} resolves to no address")
        return allowed

    def open_socket(self, addr_info: AddrInfoType) -> socket.socket:
        """aiohttp's socket factory: refuse to create a socket for a refused address."""
        family, type_, proto, _, sockaddr = addr_info
        address = str(sockaddr[0])
        if reason := self._refusal(address):
            raise RefusedAddress(_refused(address, reason))
        return socket.socket(family, type_, proto)

    def _refusal(self, address: str) -> str | None:
        ip = parse_ip(address)
        return "not an IP address" if ip is None else refusal_reason(ip, self.allow_networks)

    async def close(self) -> None:
        """Close the upstream resolver."""
        await self.upstream.close()
