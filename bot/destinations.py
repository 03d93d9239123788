"""Where agent-supplied callback URLs may point.

An agent's `callback_url` goes only where the operator allows. With `agents.<id>.callback_urls`
(URL prefixes) it must fall under one of them, compared as URLs: the same scheme, host and port, and
a path under the prefix's on a segment boundary, after both are normalised the way a browser would
(``https://agents.example/hooks/`` admits ``https://agents.example/hooks/x``, not
``https://agents.example.evil.com/hooks/`` nor ``https://agents.example/hooks/../admin``). Those
prefixes are trusted as configured, internal hosts included. An agent without prefixes may only use
http(s) URLs whose host is, and resolves only to, globally routable addresses, whatever its notation
(a name, IPv6, decimal or hex IPv4).

The check runs when a request is made and again at delivery (DNS can change in between). At delivery
the callback client resolves, checks and connects to the address it checked, in one step: its
connections are opened by a network backend that does all three, so the request keeps its URL, its
Host header and the name for TLS (SNI and certificate), and no second lookup can send it elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio
import httpcore
import httpx
from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

from bot.errors import Invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses the host resolves to, as strings; blocking (run in a thread)
Resolve = Callable[[str, int], Sequence[str]]

RESOLVE_TIMEOUT = 5.0  # seconds
_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
# A path that hides a separator or a dot from the prefix comparison behind percent-encoding.
_HIDDEN = ("%2f", "%5c", "%2e")


class Refused(Invalid):
    """A callback URL the operator does not allow (422). Carries the URL and the addresses looked at."""

    def __init__(self, url: str, why: str, *, addresses: Sequence[str] = ()) -> None:
        super().__init__(f"callback_url: {why}")
        self.url = url
        self.why = why
        self.addresses = tuple(addresses)


class Unresolved(Exception):
    """The host did not resolve (or not in time). At request time a refusal; at delivery a retry."""

    def __init__(self, host: str, why: str) -> None:
        super().__init__(f"{host} {why}")
        self.host = host


def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (what a connection could go to)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def parse(url: str) -> AnyHttpUrl:
    """The URL normalised as a browser would (scheme and host lowercased, IPv4 in any notation
    written as a dotted quad, IDNA names in punycode, `.` and `..` segments resolved)."""
    return _URL.validate_python(url)


def _host(url: AnyHttpUrl) -> str:
    return (url.host or "").removeprefix("[").removesuffix("]")


def is_public(address: Address) -> bool:
    """Globally routable unicast: not loopback, link-local (cloud metadata), private, unique-local,
    shared, multicast, reserved or unspecified. An IPv6 address that stands for an IPv4 one
    (IPv4-mapped, NAT64) is judged by that IPv4 address; one that tunnels to an IPv4 host (6to4,
    Teredo) must be public on both counts."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return is_public(address.ipv4_mapped)
        if any(address in network for network in _NAT64):
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        tunnelled = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if (tunnelled is not None and not is_public(tunnelled)) or address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    )


def _under(url: AnyHttpUrl, prefix: AnyHttpUrl) -> bool:
    if (url.scheme, url.host, url.port, url.username, url.password) != (
        prefix.scheme,
        prefix.host,
        prefix.port,
        prefix.username,
        prefix.password,
    ):
        return False
    path, base = url.path or "/", (prefix.path or "/").rstrip("/")
    if path != base and not path.startswith(base + "/"):
        return False
    return not any(hidden in path.lower() for hidden in _HIDDEN)


def admitted_by_prefix(url: str, prefixes: Iterable[str | AnyHttpUrl], owner: str) -> bool:
    """True when one of the operator's prefixes admits the URL (trusted as configured); False when
    there are none (the URL must then reach only public addresses). Refused when there are some and
    none admits it, or when the URL is not an http(s) URL."""
    try:
        parsed = parse(url)
    except ValidationError:
        raise Refused(url, f"{url!r} is not an http or https URL") from None
    allowed = [parse(str(prefix)) for prefix in prefixes]
    if not allowed:
        return False
    if any(_under(parsed, prefix) for prefix in allowed):
        return True
    listed = ", ".join(str(prefix) for prefix in allowed)
    raise Refused(url, f"{parsed} is not under any of {owner}.callback_urls ({listed})")


@dataclass
class Guard:
    """Resolves hosts (off the event loop, with a timeout) and allows only public addresses."""

    resolve: Resolve = system_resolve
    timeout: float = RESOLVE_TIMEOUT
    _limiter: anyio.CapacityLimiter | None = field(default=None, init=False, repr=False)

    async def addresses(self, host: str, port: int) -> list[Address]:
        """Every address host resolves to; Unresolved when it does not (or not in time)."""
        if self._limiter is None:  # made on first use: it belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(16)
        try:
            with anyio.fail_after(self.timeout):
                found = await anyio.to_thread.run_sync(
                    self.resolve, host, port, abandon_on_cancel=True, limiter=self._limiter
                )
            addresses = [ipaddress.ip_address(address.split("%", 1)[0]) for address in found]  # no zone
        except TimeoutError:
            raise Unresolved(host, f"did not resolve within {self.timeout:g}s") from None
        except (OSError, ValueError) as error:  # ValueError: an answer that is no address
            raise Unresolved(host, f"does not resolve ({error})") from None
        if not addresses:
            raise Unresolved(host, "resolves to no address")
        return addresses

    async def public_addresses(self, url: str, host: str, port: int) -> list[Address]:
        """The addresses of host, if every one of them is public; Refused otherwise."""
        addresses = await self.addresses(host, port)
        private = [str(address) for address in addresses if not is_public(address)]
        if private:
            what = host if private == [host] else f"{host} resolves to {', '.join(private)}, which"
            raise Refused(url, f"{what} is not a public address", addresses=[str(a) for a in addresses])
        return addresses

    async def admit(self, url: str, prefixes: Iterable[str | AnyHttpUrl], owner: str) -> None:
        """The check when a request arrives: under one of the prefixes, or (without prefixes) an
        http(s) URL whose host resolves to public addresses only. Refused (422) otherwise, also when
        the host does not resolve (in time)."""
        if admitted_by_prefix(url, prefixes, owner):
            return
        parsed = parse(url)
        try:
            await self.public_addresses(url, _host(parsed), parsed.port or 443)
        except Unresolved as error:
            raise Refused(url, f"{error}; a callback's host must resolve when the request is made") from None
        except Refused as refused:
            hint = f"callbacks go only to public addresses unless the operator lists the URL in {owner}.callback_urls"
            raise Refused(url, f"{refused.why}; {hint}", addresses=refused.addresses) from None

    def client(self, *, timeout: float) -> httpx.AsyncClient:
        """An HTTP client whose every connection goes to an address this guard checked when it
        connected. It follows no redirects and reads no proxy or credentials from the environment."""
        return httpx.AsyncClient(
            transport=_GuardedTransport(self), timeout=timeout, follow_redirects=False, trust_env=False
        )


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving and checking each host before it connects to the
    addresses it checked. TLS is then started by httpcore with the URL's host name."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._guard.public_addresses(f"{host}:{port}", host, port)
        except Unresolved as error:
            raise httpcore.ConnectError(str(error)) from error
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("callbacks do not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request and response mapping, errors, streaming) over a connection
    pool built on the guarded backend. httpx takes no network backend yet, so the pool it made is
    replaced by an equivalent one that has it."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100,  # httpx's defaults
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_GuardedBackend(guard),
        )
