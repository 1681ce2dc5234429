"""Fetch a photo from a URL for an inspection, safely (server-side request forgery is refused at the root).

Rules:
- only `http` / `https`, only hosts an admin listed in URL_FETCH_ALLOWED_HOSTS (a name, `*.domain`, an IP or a
  CIDR network); an empty list turns the feature off;
- every address the name resolves to is checked, and a loopback, link-local, private, multicast, reserved or
  unspecified address is refused unless that address is itself covered by a listed IP or network (listing a
  name is not enough to reach the inside of the network);
- the connection goes to the checked address (no second DNS lookup that could answer differently), with the
  name kept for TLS verification and the Host header;
- redirects are followed by hand, at most URL_FETCH_MAX_REDIRECTS, each target checked like the first;
- the body is read in pieces up to the upload limit, within URL_FETCH_TIMEOUT_S in total.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import urllib3

from app.core.errors import DomainError, InvalidInputError, PayloadTooLargeError, PermissionDeniedError

_CHUNK = 64 * 1024
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class UrlFetchTimeoutError(DomainError):
    """The remote server did not answer in time (504 would blame us; 408 says the fetch timed out)."""

    status_code = 408


@dataclass(frozen=True)
class FetchedFile:
    """What a URL gave: the bytes and a file name for the record."""

    data: bytes
    file_name: str
    final_url: str


@dataclass(frozen=True)
class UrlPolicy:
    """Which hosts may be fetched and within what limits."""

    allowed_hosts: tuple[str, ...]
    max_bytes: int
    timeout_s: float
    max_redirects: int = 3

    def networks(self) -> list[IPNetwork]:
        """The listed IPs and networks."""
        found: list[IPNetwork] = []
        for entry in self.allowed_hosts:
            try:
                found.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue
        return found

    def host_listed(self, host: str) -> bool:
        """True when the host name or address is on the list."""
        host = host.lower().rstrip(".")
        for entry in self.allowed_hosts:
            entry = entry.lower().strip().rstrip(".")
            if not entry:
                continue
            if entry.startswith("*.") and (host.endswith(entry[1:]) and host != entry[2:]):
                return True
            if host == entry:
                return True
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(address in net for net in self.networks())


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_internal(address.ipv4_mapped)
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _resolve(host: str, port: int, policy: UrlPolicy) -> str:
    """The address to connect to, after checking every address the name resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidInputError("errors.url_unresolvable", host=host) from exc
    networks = policy.networks()
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise InvalidInputError("errors.url_unresolvable", host=host)
    for address in addresses:
        if _is_internal(address) and not any(address in net for net in networks):
            raise PermissionDeniedError("errors.url_internal_address", host=host, address=str(address))
    return str(addresses[0])


def fetch_url(url: str, policy: UrlPolicy) -> FetchedFile:
    """Download `url` under `policy`; raises a DomainError with a translated reason when refused."""
    if not policy.allowed_hosts:
        raise PermissionDeniedError("errors.url_fetch_disabled")
    deadline = time.monotonic() + policy.timeout_s
    current = url.strip()
    for _ in range(policy.max_redirects + 1):
        response = _request(current, policy, deadline)
        if response.status in {301, 302, 303, 307, 308}:
            location = response.headers.get("Location")
            response.release_conn()
            if not location:
                raise InvalidInputError("errors.url_bad_status", status=response.status)
            current = urljoin(current, location)
            continue
        try:
            if response.status != 200:
                raise InvalidInputError("errors.url_bad_status", status=response.status)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise PayloadTooLargeError("errors.url_too_large", limit_mb=policy.max_bytes // 2**20)
            body = bytearray()
            for chunk in response.stream(_CHUNK):
                body.extend(chunk)
                if len(body) > policy.max_bytes:
                    raise PayloadTooLargeError("errors.url_too_large", limit_mb=policy.max_bytes // 2**20)
                if time.monotonic() > deadline:
                    raise UrlFetchTimeoutError("errors.url_timeout", seconds=policy.timeout_s)
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as exc:
            raise UrlFetchTimeoutError("errors.url_timeout", seconds=policy.timeout_s) from exc
        finally:
            response.release_conn()
        name = PurePosixPath(unquote(urlsplit(current).path)).name or "download"
        return FetchedFile(bytes(body), name[:200], current)
    raise InvalidInputError("errors.url_too_many_redirects", limit=policy.max_redirects)


def _request(url: str, policy: UrlPolicy, deadline: float) -> urllib3.BaseHTTPResponse:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidInputError("errors.url_bad_scheme")
    if parts.username or parts.password:
        raise InvalidInputError("errors.url_bad_scheme")
    host = parts.hostname
    if not policy.host_listed(host):
        raise PermissionDeniedError("errors.url_host_not_allowed", host=host)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidInputError("errors.url_bad_scheme") from exc
    address = _resolve(host, port, policy)
    remaining = max(0.1, deadline - time.monotonic())
    timeout = urllib3.Timeout(connect=min(remaining, 10.0), read=remaining)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            server_hostname=host,
            assert_hostname=host,
            ssl_context=ssl.create_default_context(),
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    try:
        return pool.urlopen(
            "GET",
            path,
            headers={"Host": host_header, "User-Agent": "DefectLens", "Accept": "image/*"},
            redirect=False,
            preload_content=False,
            retries=False,
        )
    except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
        raise UrlFetchTimeoutError("errors.url_timeout", seconds=policy.timeout_s) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise InvalidInputError("errors.url_unreachable", host=host, reason=type(exc).__name__) from exc
