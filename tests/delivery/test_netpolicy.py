"""The network policy (SPEC §5): a catalogue of SSRF bypass attempts, DNS rebinding, the rule.

Only 127.0.0.0/8 is ever connected to. Every target that could leave this machine is
checked by the pure layers only (check_url, the policy resolver), never sent to.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from support import Receiver, ca_file, eventually, make_config, running_daemon

from wahookd.app import reload
from wahookd.cli import main
from wahookd.config import ConfigError, DeliveryConfig, load_config
from wahookd.delivery.netpolicy import (
    PolicyResolver,
    RefusedAddress,
    RefusedTarget,
    check_url,
    refusal_reason,
)
from wahookd.delivery.sender import Sender
from wahookd.models import AttemptResult

EVENT = {"event": "session.disconnected", "sessionId": "s1", "reason": "x"}

# --- test doubles ----------------------------------------------------------------------------


class TableResolver(AbstractResolver):
    """Answers lookups from a table: per host, one answer per lookup (the last one repeats)."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test table")
        answers = self.table[host]
        addresses = answers[min(self.lookups.count(host), len(answers)) - 1]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


class Canary:
    """A loopback TCP listener (127.0.0.1 and ::1, one port) that must never be connected to."""

    def __init__(self) -> None:
        self.connections: list[Any] = []
        self._servers: list[asyncio.Server] = []
        self.port = 0

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1, and the same port of ::1 when possible."""
        server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self._servers.append(server)
        self.port = server.sockets[0].getsockname()[1]
        with contextlib.suppress(OSError):
            self._servers.append(await asyncio.start_server(self._accepted, "::1", self.port))

    async def stop(self) -> None:
        """Stop listening."""
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer.get_extra_info("sockname"))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def assert_untouched(self) -> None:
        """Nothing connected, after giving a stray connection time to be accepted."""
        await asyncio.sleep(0.05)
        assert self.connections == []


class HttpsReceiver:
    """An HTTPS receiver bound to one loopback address, with a certificate for `names`."""

    def __init__(self, ca: trustme.CA, host: str, port: int, *names: str) -> None:
        self.ca, self.host, self.port, self.names = ca, host, port, names
        self.requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*self.names).configure_cert(ctx)
        await web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        return web.Response(text="OK")


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    """A listener that the policy must keep every refused attempt away from."""
    listener = Canary()
    await listener.start()
    yield listener
    await listener.stop()


@asynccontextmanager
async def started_sender(
    tmp_path: Path, ca: trustme.CA, resolver: AbstractResolver, *allow: str
) -> AsyncIterator[Sender]:
    """A Sender trusting the test CA, with the resolver injected and allow_networks set."""
    config = DeliveryConfig(
        timeout_s=2.0,
        allow_networks=tuple(ipaddress.ip_network(cidr) for cidr in allow),
        ca_file=ca_file(ca, tmp_path),
    )
    sender = Sender(config, resolver)
    await sender.start()
    try:
        yield sender
    finally:
        await sender.close()


async def post(sender: Sender, url: str) -> AttemptResult:
    return await sender.post(url, b"{}", {"Content-Type": "application/json"}, time.time())


# --- the catalogue ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bypass:
    """One attempt to reach refused address space."""

    url: str  # "{port}" becomes the canary's port
    message: str  # part of the refusal message
    # host names pass check_url (DNS can change) and are refused at connect time; the test
    # resolver answers these addresses for the URL's host
    dns: tuple[str, ...] = ()
    # the target is this machine, so the test may also send to it (the canary listens)
    local: bool = False

    @property
    def host(self) -> str:
        return yarl.URL(self.url.format(port=1)).raw_host or ""


def bypass(id_: str, url: str, message: str, *dns: str, local: bool = False) -> Any:
    return pytest.param(Bypass(url, message, dns, local), id=id_)


LOOPBACK = "is not a public address: loopback"
CATALOGUE = [
    # IPv4 literals in every spelling that inet_aton or a browser accepts for 127.0.0.1
    bypass("v4-loopback", "https://127.0.0.1:{port}/", f"127.0.0.1 {LOOPBACK}", local=True),
    bypass("v4-loopback-other", "https://127.8.9.10:{port}/", LOOPBACK, local=True),
    bypass("v4-decimal", "https://2130706433:{port}/", "(that is 127.0.0.1)", local=True),
    bypass("v4-hex", "https://0x7f000001:{port}/", "(that is 127.0.0.1)", local=True),
    bypass("v4-hex-parts", "https://0x7f.0x0.0x0.0x1:{port}/", "(that is 127.0.0.1)", local=True),
    bypass("v4-hex-short", "https://0x7f.1:{port}/", "0x7f.1 (that is 127.0.0.1)", local=True),
    bypass("v4-octal", "https://0177.0.0.1:{port}/", "(that is 127.0.0.1)", local=True),
    bypass("v4-octal-int", "https://017700000001:{port}/", "(that is 127.0.0.1)", local=True),
    bypass("v4-short", "https://127.1:{port}/", "127.1 (that is 127.0.0.1)", local=True),
    bypass("v4-three-parts", "https://127.0.1:{port}/", "(that is 127.0.0.1)", local=True),
    bypass("v4-trailing-dot", "https://127.0.0.1.:{port}/", "(that is 127.0.0.1)", local=True),
    bypass(
        "v4-fullwidth-digits",
        "https://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/",
        LOOPBACK,
        local=True,
    ),
    bypass("v4-ideographic-dots", "https://127。0。0。1:{port}/", LOOPBACK, local=True),
    bypass("v4-unspecified", "https://0.0.0.0:{port}/", "unspecified", local=True),
    bypass("v4-zero", "https://0:{port}/", "0 (that is 0.0.0.0)", local=True),
    bypass("v4-percent-encoded", "https://%31%32%37.0.0.1:{port}/", "not an IPv4 address"),
    bypass("v4-five-parts", "https://127.0.0.0.1/", "not an IPv4 address"),
    bypass("v4-octet-256", "https://127.0.0.256/", "not an IPv4 address"),
    bypass("v4-bad-octal", "https://08.0.0.1/", "not an IPv4 address"),
    # URL parser confusion: which part is the host?
    bypass("userinfo", "https://example.com@127.0.0.1:{port}/", "credentials", local=True),
    bypass("userinfo-port", "https://example.com:443@127.0.0.1:{port}/", "credentials"),
    bypass("fragment-at", "https://127.0.0.1:{port}#@example.com/", LOOPBACK, local=True),
    bypass("backslash-at", "https://example.com\\@127.0.0.1:{port}/", "invalid URL"),
    bypass("percent-encoded-name", "https://%6c%6fcalhost/", "not a valid host name"),
    bypass("ipvfuture", "https://[v1.fe]/", "not a valid IPv6 address"),
    # other refused IPv4 space, never sent to
    bypass("v4-private-10", "https://10.0.0.1/", "private (10.0.0.0/8)"),
    bypass("v4-private-172", "https://172.31.255.254/", "private (172.16.0.0/12)"),
    bypass("v4-private-192", "https://192.168.0.1/", "private (192.168.0.0/16)"),
    bypass("v4-metadata", "https://169.254.169.254/latest/meta-data/", "cloud metadata"),
    bypass("v4-metadata-decimal", "https://2852039166/", "(that is 169.254.169.254)"),
    bypass("v4-cgnat", "https://100.64.0.1/", "carrier-grade NAT"),
    bypass("v4-ietf", "https://192.0.0.170/", "IETF protocol assignments"),
    bypass("v4-test-net-1", "https://192.0.2.1/", "TEST-NET-1"),
    bypass("v4-test-net-2", "https://198.51.100.1/", "TEST-NET-2"),
    bypass("v4-test-net-3", "https://203.0.113.1/", "TEST-NET-3"),
    bypass("v4-benchmarking", "https://198.18.0.1/", "benchmarking"),
    bypass("v4-multicast", "https://224.0.0.251/", "multicast"),
    bypass("v4-reserved", "https://240.0.0.1/", "reserved (240.0.0.0/4)"),
    bypass("v4-broadcast", "https://255.255.255.255/", "broadcast"),
    # IPv6 literals
    bypass("v6-loopback", "https://[::1]:{port}/", f"::1 {LOOPBACK}", local=True),
    bypass("v6-loopback-long", "https://[0:0:0:0:0:0:0:1]:{port}/", LOOPBACK, local=True),
    bypass("v6-unspecified", "https://[::]:{port}/", "unspecified", local=True),
    bypass(
        "v6-mapped-dotted",
        "https://[::ffff:127.0.0.1]:{port}/",
        "IPv4-mapped 127.0.0.1, which is loopback",
        local=True,
    ),
    bypass("v6-mapped-hex", "https://[::ffff:7f00:1]:{port}/", "IPv4-mapped", local=True),
    bypass("v6-mapped-zero", "https://[::ffff:0.0.0.0]:{port}/", "unspecified", local=True),
    bypass("v6-mapped-metadata", "https://[::ffff:169.254.169.254]/", "cloud metadata"),
    bypass("v6-mapped-private", "https://[::ffff:10.0.0.1]/", "IPv4-mapped 10.0.0.1"),
    bypass("v6-v4-compatible", "https://[::127.0.0.1]/", "reserved"),
    bypass("v6-v4-translated", "https://[::ffff:0:7f00:1]/", "reserved"),
    bypass("v6-nat64-loopback", "https://[64:ff9b::127.0.0.1]/", "NAT64 for 127.0.0.1"),
    bypass("v6-nat64-metadata", "https://[64:ff9b::a9fe:a9fe]/", "NAT64 for 169.254.169.254"),
    bypass("v6-nat64-local-use", "https://[64:ff9b:1::1]/", "local-use NAT64"),
    bypass("v6-6to4-loopback", "https://[2002:7f00:1::1]/", "6to4 for 127.0.0.1"),
    bypass("v6-6to4-private", "https://[2002:c0a8:101::1]/", "6to4 for 192.168.1.1"),
    bypass("v6-teredo", "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    bypass("v6-unique-local", "https://[fd00::1]/", "unique local"),
    bypass("v6-unique-local-fc", "https://[fc00::1]/", "unique local"),
    bypass("v6-link-local", "https://[fe80::1]/", "link-local (fe80::/10)"),
    bypass("v6-link-local-zone", "https://[fe80::1%25eth0]/", "zone identifiers"),
    bypass("v6-site-local", "https://[fec0::1]/", "site-local"),
    bypass("v6-multicast", "https://[ff02::1]/", "multicast"),
    bypass("v6-documentation", "https://[2001:db8::1]/", "documentation (2001:db8::/32)"),
    # host names: pass the URL check, refused at connect time by what they resolve to
    bypass(
        "name-localhost",
        "https://localhost:{port}/",
        "127.0.0.1 is loopback",
        "127.0.0.1",
        "::1",
        local=True,
    ),
    bypass("name-trailing-dot", "https://localhost.:{port}/", "loopback", "127.0.0.1", local=True),
    bypass("name-uppercase", "https://LOCALHOST:{port}/", "loopback", "127.0.0.1", local=True),
    bypass(
        "name-enclosed-letters", "https://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:{port}/", "loopback", "127.0.0.1", local=True
    ),
    bypass(
        "name-sub-localhost", "https://app.localhost:{port}/", "loopback", "127.0.0.1", local=True
    ),
    bypass("name-nip-io", "https://127.0.0.1.nip.io:{port}/", "loopback", "127.0.0.1", local=True),
    bypass(
        "name-aaaa-loopback", "https://v6.evil.test:{port}/", "::1 is loopback", "::1", local=True
    ),
    bypass(
        "name-aaaa-mapped",
        "https://mapped.evil.test:{port}/",
        "IPv4-mapped",
        "::ffff:127.0.0.1",
        local=True,
    ),
    bypass(
        "name-unspecified", "https://zero.evil.test:{port}/", "unspecified", "0.0.0.0", local=True
    ),
    bypass(
        "name-metadata", "https://metadata.google.internal/", "cloud metadata", "169.254.169.254"
    ),
    bypass("name-private", "https://intranet.evil.test/", "private", "10.1.2.3"),
    bypass(
        "name-cgnat-metadata", "https://cgnat.evil.test/", "carrier-grade NAT", "100.100.100.200"
    ),
    bypass("name-ula-metadata", "https://imds6.evil.test/", "unique local", "fd00:ec2::254"),
    bypass(
        "name-nat64", "https://nat64.evil.test/", "NAT64 for 169.254.169.254", "64:ff9b::a9fe:a9fe"
    ),
    bypass("name-link-local-scoped", "https://ll.evil.test/", "link-local", "fe80::1%eth0"),
    bypass(
        "name-all-refused",
        "https://mixed.evil.test/",
        "10.0.0.1 is private",
        "127.0.0.1",
        "10.0.0.1",
        "::1",
    ),
]
URL_STAGE = [case for case in CATALOGUE if not case.values[0].dns]
DNS_STAGE = [case for case in CATALOGUE if case.values[0].dns]
LOCAL = [case for case in CATALOGUE if case.values[0].local]


def test_the_catalogue_is_large_and_its_ids_unique() -> None:
    ids = [case.id for case in CATALOGUE]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert len(DNS_STAGE) >= 10 and len(LOCAL) >= 20


@pytest.mark.parametrize("case", URL_STAGE)
def test_literal_hosts_are_refused_by_the_url_check(case: Bypass) -> None:
    with pytest.raises(RefusedTarget) as info:
        check_url(case.url.format(port=8443), require_https=True, allow_networks=())
    assert case.message in str(info.value)


@pytest.mark.parametrize("case", DNS_STAGE)
async def test_host_names_are_refused_by_what_they_resolve_to(case: Bypass) -> None:
    url = case.url.format(port=8443)
    check_url(url, require_https=True, allow_networks=())  # DNS can change: not judged yet
    policy = PolicyResolver(TableResolver({case.host: [list(case.dns)]}), ())
    with pytest.raises(RefusedAddress) as info:
        await policy.resolve(case.host, 8443, socket.AF_UNSPEC)
    message = str(info.value)
    assert message.startswith(f"{case.host} resolves only to addresses that are not public: ")
    assert case.message in message
    assert message.endswith("add them to delivery.allow_networks to allow them")


@pytest.mark.parametrize("case", LOCAL)
async def test_the_sender_refuses_and_connects_nowhere(
    case: Bypass, tmp_path: Path, ca: trustme.CA, canary: Canary
) -> None:
    resolver = TableResolver({case.host: [list(case.dns)]})
    async with started_sender(tmp_path, ca, resolver) as sender:
        result = await post(sender, case.url.format(port=canary.port))
    assert result.error_class == "refused", result
    assert result.error is not None and result.error.startswith("refused by network policy: ")
    assert case.message in result.error
    assert result.status_code is None
    # a literal is refused before any lookup; a name after exactly one
    assert resolver.lookups == ([case.host] if case.dns else [])
    await canary.assert_untouched()


async def test_api_answers_400_for_each_refused_literal(tmp_path: Path, ca: trustme.CA) -> None:
    config = make_config(tmp_path, ca_file=str(ca_file(ca, tmp_path)), allow_networks=[])
    wrong: list[str] = []
    async with running_daemon(config) as d:
        for case in (param.values[0] for param in URL_STAGE):
            url = case.url.format(port=8443)
            for method, path, body in (
                ("PUT", "/api/webhook/config/s1", {"url": url, "events": ["*"]}),
                ("POST", "/api/webhook/test", {"url": url}),
            ):
                status, answer = await d.call(method, path, body)
                error = answer.get("error", {})
                if (
                    status != 400
                    or answer.get("success") is not False
                    or error.get("code") != "validation_error"
                    or not error.get("message", "").startswith("url: ")
                    or case.message not in error["message"]
                ):
                    wrong.append(f"{method} {url}: {status} {answer}")
    assert wrong == []


@pytest.mark.parametrize("case", URL_STAGE)
def test_static_webhook_with_a_refused_literal_is_a_config_error(
    case: Bypass, tmp_path: Path
) -> None:
    path = tmp_path / "wahookd.toml"
    url = json.dumps(case.url.format(port=8443), ensure_ascii=False)
    path.write_text(f'[[webhook]]\nsession = "*"\nurl = {url}\nevents = ["*"]\n', "utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (error,) = info.value.errors
    assert error.startswith(f"{path}: webhook[0].url: ")
    assert case.message in error


def test_check_config_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wahookd.toml"
    path.write_text('[[webhook]]\nsession = "*"\nurl = "https://0x7f.1/hook"\nevents = ["*"]\n')
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{path}: webhook[0].url: 0x7f.1 (that is 127.0.0.1) is not a public address: "
        "loopback; add it to delivery.allow_networks to allow it: 'https://0x7f.1/hook'"
    ) in err
    # allowed by allow_networks, but only in the canonical spelling
    path.write_text(
        '[delivery]\nallow_networks = ["127.0.0.0/8"]\n'
        '[[webhook]]\nsession = "*"\nurl = "https://0x7f.1/hook"\nevents = ["*"]\n'
        '[[webhook]]\nsession = "*"\nurl = "https://127.0.0.1/hook"\nevents = ["*"]\n'
    )
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: webhook[0].url: host '0x7f.1' is an unusual form of 127.0.0.1" in err
    assert "webhook[1]" not in err


# --- the rule --------------------------------------------------------------------------------

REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.255.255.255", "unspecified"),
    ("10.0.0.0", "private (10.0.0.0/8)"),
    ("10.255.255.255", "private (10.0.0.0/8)"),
    ("100.64.0.0", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "link-local (169.254.0.0/16, where cloud metadata lives)"),
    ("172.16.0.0", "private (172.16.0.0/12)"),
    ("172.31.255.255", "private (172.16.0.0/12)"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.255", "documentation (TEST-NET-1)"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("192.168.255.255", "private (192.168.0.0/16)"),
    ("198.18.0.0", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation (TEST-NET-2)"),
    ("203.0.113.7", "documentation (TEST-NET-3)"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.255", "multicast"),
    ("240.0.0.1", "reserved (240.0.0.0/4)"),
    ("255.255.255.254", "reserved (240.0.0.0/4)"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, which is loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254, which is link-local"),
    ("::ffff:0:7f00:1", "reserved (outside the global unicast range 2000::/3)"),
    ("::7f00:1", "reserved (outside the global unicast range 2000::/3)"),
    ("64:ff9b::7f00:1", "NAT64 for 127.0.0.1, which is loopback"),
    ("64:ff9b::a00:1", "NAT64 for 10.0.0.1, which is private"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("100::1", "reserved (outside the global unicast range 2000::/3)"),
    ("2001::1", "Teredo tunnelling (2001::/32)"),
    ("2001:10::1", "IETF protocol assignments (2001::/23)"),
    ("2001:db8::1", "documentation (2001:db8::/32)"),
    ("2002:7f00:1::1", "6to4 for 127.0.0.1, which is loopback"),
    ("2002:a9fe:a9fe::", "6to4 for 169.254.169.254, which is link-local"),
    ("3fff::1", "documentation (3fff::/20)"),
    ("fc00::1", "unique local, private (fc00::/7)"),
    ("fdff:ffff::1", "unique local, private (fc00::/7)"),
    ("fe80::1", "link-local (fe80::/10)"),
    ("febf::1", "link-local (fe80::/10)"),
    ("fec0::1", "site-local (fec0::/10, deprecated)"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
]
# Public addresses, and the neighbours of each refused range. Never connected to.
ALLOWED = [
    *("1.1.1.1", "8.8.8.8", "93.184.216.34", "9.255.255.255", "11.0.0.0", "100.63.255.255"),
    *("100.128.0.0", "126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0"),
    *("172.15.255.255", "172.32.0.0", "192.0.1.0", "192.0.3.0", "192.167.255.255"),
    *("192.169.0.0", "198.17.255.255", "198.20.0.0", "223.255.255.255"),
    *("2606:4700::1111", "2a00:1450::1", "2001:4860:4860::8888", "2001:200::1"),
    *("::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "2c0f::1"),
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refused_ranges(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address), ())
    assert found is not None and found.startswith(reason), found


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address), ()) is None


def test_allow_networks_overrides_only_what_it_covers() -> None:
    def reason(address: str, *allow: str) -> str | None:
        networks = tuple(ipaddress.ip_network(cidr) for cidr in allow)
        return refusal_reason(ipaddress.ip_address(address), networks)

    assert reason("10.1.2.3", "10.0.0.0/8") is None
    assert reason("127.0.0.1", "10.0.0.0/8") == "loopback"
    assert reason("172.16.0.1", "10.0.0.0/8") == "private (172.16.0.0/12)"
    # the IPv6 forms that reach an allowed IPv4 address are allowed with it
    assert reason("::ffff:10.1.2.3", "10.0.0.0/8") is None
    assert reason("64:ff9b::a01:203", "10.0.0.0/8") is None
    assert reason("::ffff:127.0.0.1", "10.0.0.0/8") == "IPv4-mapped 127.0.0.1, which is loopback"
    assert reason("127.0.0.1", "127.0.0.1/32") is None
    assert reason("127.0.0.2", "127.0.0.1/32") == "loopback"
    assert reason("fd00::1", "fd00::/8") is None
    assert reason("fc00::1", "fd00::/8") is not None
    assert reason("::1", "127.0.0.0/8") == "loopback"  # an IPv4 network never covers IPv6
    assert reason("2001:db8::5", "2001:db8::/32") is None


def test_literal_checks_follow_allow_networks() -> None:
    allow = (ipaddress.ip_network("10.0.0.0/8"),)
    check_url("https://10.1.2.3/hook", require_https=True, allow_networks=allow)
    check_url("https://[::ffff:10.1.2.3]/hook", require_https=True, allow_networks=allow)
    with pytest.raises(
        RefusedTarget, match=re.escape("127.0.0.1 is not a public address: loopback")
    ):
        check_url("https://127.0.0.1/hook", require_https=True, allow_networks=allow)
    # public literals and names pass; non-canonical spellings never do
    check_url("https://93.184.216.34/hook", require_https=True, allow_networks=())
    check_url("https://[2606:4700::1111]/hook", require_https=True, allow_networks=())
    check_url("https://bücher.example/hook", require_https=True, allow_networks=())
    with pytest.raises(RefusedTarget, match=re.escape("unusual form of 93.184.216.34")):
        check_url("https://1572395042/hook", require_https=True, allow_networks=())


async def test_resolver_keeps_the_allowed_answers_only() -> None:
    table = TableResolver({"mixed.test": [["127.0.0.1", "10.0.0.1", "93.184.216.34", "::1"]]})
    policy = PolicyResolver(table, (ipaddress.ip_network("10.0.0.0/8"),))
    answers = await policy.resolve("mixed.test", 443, socket.AF_UNSPEC)
    assert [answer["host"] for answer in answers] == ["10.0.0.1", "93.184.216.34"]
    assert all(answer["hostname"] == "mixed.test" for answer in answers)
    policy.allow_networks = ()  # a reload applies to the next lookup
    answers = await policy.resolve("mixed.test", 443, socket.AF_UNSPEC)
    assert [answer["host"] for answer in answers] == ["93.184.216.34"]
    with pytest.raises(OSError, match="resolves to no address"):
        await PolicyResolver(TableResolver({"empty.test": [[]]}), ()).resolve("empty.test")


# --- connect time: rebinding, literals, the socket factory -----------------------------------


async def receiver_beside(canary: Canary, ca: trustme.CA, host: str) -> HttpsReceiver:
    """An HTTPS receiver for "rebind.test" on another loopback address, the canary's port."""
    receiver = HttpsReceiver(ca, host, canary.port, "rebind.test")
    await receiver.start()
    return receiver


async def test_dns_rebinding_connects_to_the_vetted_answer_only(
    tmp_path: Path, ca: trustme.CA, canary: Canary
) -> None:
    # "public" is 127.0.0.2, allowed; the second answer 127.0.0.1 is refused and is the canary
    resolver = TableResolver({"rebind.test": [["127.0.0.2"], ["127.0.0.1"]]})
    vetted = await receiver_beside(canary, ca, "127.0.0.2")
    url = f"https://rebind.test:{canary.port}/hook"
    try:
        async with started_sender(tmp_path, ca, resolver, "127.0.0.2/32") as sender:
            first = await post(sender, url)
            again = await post(sender, url)  # pooled connection or cached vetted answer
        assert (first.status_code, again.status_code) == (200, 200), (first, again)
        # TLS verified the URL's host name although the connection went to an address
        assert [r["Host"] for r in vetted.requests] == [f"rebind.test:{canary.port}"] * 2
        assert resolver.lookups == ["rebind.test"]  # one lookup: checked and connected alike
        await canary.assert_untouched()
        # a new pool looks up again and now gets the rebound answer: refused, not connected
        async with started_sender(tmp_path, ca, resolver, "127.0.0.2/32") as sender:
            rebound = await post(sender, url)
        assert rebound.error_class == "refused"
        assert rebound.error == (
            "refused by network policy: rebind.test resolves only to addresses that are"
            " not public: 127.0.0.1 is loopback; add them to delivery.allow_networks to allow them"
        )
        assert resolver.lookups == ["rebind.test", "rebind.test"]
        await canary.assert_untouched()
        assert len(vetted.requests) == 2
    finally:
        await vetted.stop()


async def test_rebinding_to_an_unreachable_vetted_address_fails_without_a_second_lookup(
    tmp_path: Path, ca: trustme.CA, canary: Canary
) -> None:
    # the vetted answer 127.0.0.3 has no listener; a second lookup would find the canary
    resolver = TableResolver({"rebind.test": [["127.0.0.3"], ["127.0.0.1"]]})
    async with started_sender(tmp_path, ca, resolver, "127.0.0.3/32") as sender:
        result = await post(sender, f"https://rebind.test:{canary.port}/hook")
    assert result.error_class == "network", result
    # refused by 127.0.0.3: the canary (127.0.0.1) was not touched and no second lookup made
    assert result.error == "connection refused", result
    assert resolver.lookups == ["rebind.test"]
    await canary.assert_untouched()


async def test_mixed_answers_connect_to_the_allowed_address(
    tmp_path: Path, ca: trustme.CA, canary: Canary
) -> None:
    resolver = TableResolver({"rebind.test": [["127.0.0.1", "::1", "127.0.0.2"]]})
    vetted = await receiver_beside(canary, ca, "127.0.0.2")
    try:
        async with started_sender(tmp_path, ca, resolver, "127.0.0.2/32") as sender:
            result = await post(sender, f"https://rebind.test:{canary.port}/hook")
    finally:
        await vetted.stop()
    assert result.status_code == 200, result
    assert len(vetted.requests) == 1
    await canary.assert_untouched()


async def test_an_allowed_literal_is_connected_without_a_lookup(
    tmp_path: Path, ca: trustme.CA, canary: Canary
) -> None:
    # aiohttp skips the resolver for IP literals: that is why the sender checks them itself
    resolver = TableResolver({})
    async with started_sender(tmp_path, ca, resolver, "127.0.0.0/8") as sender:
        result = await post(sender, f"https://127.0.0.1:{canary.port}/")
    assert result.error_class in ("network", "tls")  # the canary hangs up at once
    assert resolver.lookups == []
    await asyncio.sleep(0.05)
    assert len(canary.connections) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",  # a literal: aiohttp asks no resolver
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://anything.test:{port}/",  # resolved by an unfiltered resolver
    ],
)
async def test_the_socket_factory_refuses_whatever_path_led_there(url: str, canary: Canary) -> None:
    # the last layer alone: a connector whose resolver does not filter at all
    unfiltered = TableResolver({"anything.test": [["127.0.0.1"]]})
    guard = PolicyResolver(unfiltered, ())
    connector = aiohttp.TCPConnector(resolver=unfiltered, socket_factory=guard.open_socket)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(url.format(port=canary.port))
    assert isinstance(info.value.os_error, RefusedAddress)
    assert "is not a public address" in str(info.value.os_error)
    await canary.assert_untouched()


def test_the_socket_factory_opens_sockets_for_allowed_addresses() -> None:
    guard = PolicyResolver(TableResolver({}), (ipaddress.ip_network("127.0.0.2/32"),))
    info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.2", 443))
    with guard.open_socket(info) as sock:
        assert sock.family == socket.AF_INET
    with pytest.raises(
        RefusedAddress, match=re.escape("127.0.0.1 is not a public address: loopback")
    ):
        guard.open_socket((*info[:4], ("127.0.0.1", 443)))


# --- end to end: the in-process daemon -------------------------------------------------------


def _localhost_is_loopback() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", 443, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).partition("%")[0]).is_loopback for info in infos
    )


needs_localhost = pytest.mark.skipif(
    not _localhost_is_loopback(), reason="localhost does not resolve to loopback only here"
)


def daemon_config(tmp_path: Path, ca: trustme.CA, *allow: str) -> Any:
    return make_config(
        tmp_path,
        ca_file=str(ca_file(ca, tmp_path)),
        allow_networks=list(allow),
        retry_schedule=["0.1s"],
    )


async def wait_for_failed(d: Any, count: int) -> None:
    async def failed() -> bool:
        _, queue = await d.call("GET", "/api/webhook/queue")
        return bool(queue["queue"]["failed"] == count)

    await eventually(failed, timeout_s=10, interval_s=0.05, what=f"{count} failed")


async def attempt_errors(d: Any) -> list[str]:
    rows = await d.state.store.read(
        lambda c: c.execute("SELECT error FROM attempts ORDER BY id").fetchall()
    )
    return [row[0] for row in rows]


@needs_localhost
async def test_daemon_refuses_a_name_resolving_to_loopback(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    url = f"https://localhost:{receiver.port}/hook"
    async with running_daemon(daemon_config(tmp_path, ca)) as d:
        # a host name is not resolved when configured: DNS can change until it is used
        status, answer = await d.call(
            "PUT", "/api/webhook/config/s1", {"url": url, "events": ["*"]}
        )
        assert status == 200, answer
        await d.call("POST", "/api/events", EVENT)
        await wait_for_failed(d, 1)  # refused attempts are retried like any failure
        errors = await attempt_errors(d)
        # the test route: a name resolving into refused space is a failed send, not a 400
        status, tested = await d.call("POST", "/api/webhook/test", {"url": url})
    assert len(errors) == 2
    for error in errors:
        assert error.startswith(
            "refused by network policy: localhost resolves only to addresses that are not public: "
        )
        assert "127.0.0.1 is loopback" in error
        assert error.endswith("add them to delivery.allow_networks to allow them")
    assert status == 200
    assert tested["success"] is False and tested["statusCode"] is None
    assert tested["error"].startswith("refused by network policy: localhost resolves only to")
    assert receiver.requests == []


@needs_localhost
async def test_daemon_delivers_to_loopback_when_allowed_and_stops_on_reload(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    url = f"https://localhost:{receiver.port}/hook"
    allowed = daemon_config(tmp_path, ca, "127.0.0.0/8")
    async with running_daemon(allowed) as d:
        await d.call("PUT", "/api/webhook/config/s1", {"url": url, "events": ["*"]})
        await d.call("POST", "/api/events", EVENT)
        await receiver.wait_for(1)
        # narrowing allow_networks also drops the pooled connection and the cached lookup
        app = d.client.server.app
        assert app is not None
        narrowed = replace(allowed, delivery=replace(allowed.delivery, allow_networks=()))
        await reload(app, narrowed)
        await d.call("POST", "/api/events", EVENT)
        await wait_for_failed(d, 1)
        errors = await attempt_errors(d)
    assert len(receiver.requests) == 1
    assert errors[0] is None
    assert all(
        error.startswith("refused by network policy: localhost resolves only")
        for error in errors[1:]
    )


async def test_daemon_api_refuses_a_loopback_literal_unless_allowed(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    body = {"url": receiver.url, "events": ["*"]}
    async with running_daemon(daemon_config(tmp_path, ca)) as d:
        put_status, put = await d.call("PUT", "/api/webhook/config/s1", body)
        test_status, tested = await d.call("POST", "/api/webhook/test", {"url": receiver.url})
    message = (
        "url: 127.0.0.1 is not a public address: loopback; "
        "add it to delivery.allow_networks to allow it"
    )
    assert (put_status, test_status) == (400, 400)
    for answer in (put, tested):
        assert answer == {
            "success": False,
            "error": {"code": "validation_error", "message": message},
        }
    async with running_daemon(daemon_config(tmp_path, ca, "127.0.0.0/8")) as d:
        status, answer = await d.call("POST", "/api/webhook/test", {"url": receiver.url})
    assert status == 200 and answer["success"] is True, answer
    assert len(receiver.requests) == 1
