"""Outbound HTTP to URLs that users choose (webhooks), never into the farm's own network.

A user-set URL could otherwise make the farm fetch its cloud's metadata service
(169.254.169.254), hosts on the private network, or the farm's own API, Ray GCS and Ray
dashboard on loopback (server-side request forgery). So, at every delivery:

1. the URL must be http(s) with a host name or address and no credentials;
2. the host is resolved *now*, and every address it resolves to must be public: loopback,
   private, link-local, shared, multicast, reserved and unspecified addresses are refused
   (IPv4-mapped IPv6 is judged as the IPv4 it carries), unless the operator's allow-list
   names that address (and port);
3. the connection goes to the address that was checked (a second lookup cannot swap it:
   DNS rebinding), with the URL's host name in `Host:` and for TLS's SNI and certificate check;
4. redirects are not followed: a 3xx answer is a failed delivery.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cameofarm.configs.schema import parse_destination

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DestinationRefused(ValueError):
    """The URL points somewhere the farm does not send requests; the message says why."""


@dataclass(frozen=True)
class AllowRule:
    """An operator's exception: this network (and, if given, only this port) is reachable."""

    network: IPNetwork
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowRule:
        """`10.1.2.3`, `10.1.0.0/16`, `127.0.0.1:8080`, `[::1]:8080` or `fd00::/8`."""
        return cls(*parse_destination(text))

    def admits(self, address: IPAddress, port: int) -> bool:
        return address in self.network and self.port in (None, port)


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    address: IPAddress
    target: str  # path and query, as sent in the request line


def _public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url(url: str) -> tuple[str, str, int, str]:
    """Return (scheme, host, port, target) of a well-formed http(s) URL; raise otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DestinationRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("only http:// and https:// URLs are allowed")
    if not parts.hostname:
        raise DestinationRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("credentials in the URL are not allowed; sign with the secret")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default, target


def resolve(url: str, allow: Sequence[AllowRule] = (), lookup: bool = True) -> Destination | None:
    """Check `url` and the addresses its host resolves to; return where to connect.

    Raises DestinationRefused when any address is not public (and not allowed). With
    `lookup=False` a name that does not resolve returns None instead of raising (for a check
    at configuration time, when the receiver may not be up yet).
    """
    scheme, host, port, target = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        if not lookup:
            return None
        raise DestinationRefused(f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    for address in addresses:
        if not _public(address) and not any(r.admits(address, port) for r in allow):
            raise DestinationRefused(
                f"{host!r} resolves to {address}, which is a loopback, private, link-local or "
                "otherwise internal address; the farm sends no requests there (an operator "
                "may allow it with webhooks.allow_destinations)"
            )
    return Destination(scheme, host, port, addresses[0], target)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, dest: Destination, timeout: float) -> None:
        super().__init__(dest.host, dest.port, timeout=timeout)
        self._address = dest.address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, dest: Destination, timeout: float) -> None:
        super().__init__(dest.host, dest.port, timeout=timeout)
        self._address = dest.address
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        sock = socket.create_connection((str(self._address), self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    allow: Sequence[AllowRule] = (),
) -> int:
    """POST `body` to `url` after the checks above; return the HTTP status (3xx included:
    redirects are never followed). Raises DestinationRefused or OSError."""
    dest = resolve(url, allow)
    assert dest is not None
    conn: http.client.HTTPConnection
    if dest.scheme == "https":
        conn = _PinnedHTTPSConnection(dest, timeout)
    else:
        conn = _PinnedHTTPConnection(dest, timeout)
    try:
        conn.request("POST", dest.target, body=body, headers=headers)
        response = conn.getresponse()
        response.read(65536)  # a receiver's answer is not ours to store; read a little
        return int(response.status)
    finally:
        conn.close()
