"""Talking to providers over HTTP: one small client interface, so the transport can be swapped."""

from ensemble.upstream.client import UpstreamClient, UpstreamResponse
from ensemble.upstream.transports import create_client

__all__ = ["UpstreamClient", "UpstreamResponse", "create_client"]
