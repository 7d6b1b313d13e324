"""A provider's `http` key: which HTTP version the gateway speaks to it (docs/configuration.md)."""

from __future__ import annotations


class HttpVersion(str):
    """`auto` (HTTP/2 over TLS when the server offers it, else HTTP/1.1), `1.1` or `2`."""

    __slots__ = ()


CHOICES = ("auto", "1.1", "2")


def parse_http_version(value: object) -> HttpVersion:
    # YAML reads an unquoted `http: 2` as an int and `http: 1.1` as a float: both mean the obvious.
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = {2: "2", 1.1: "1.1"}.get(value, repr(value))
    if isinstance(value, str) and value in CHOICES:
        return HttpVersion(value)
    raise ValueError(f'expected "auto", "1.1" or "2", got {value!r}')
