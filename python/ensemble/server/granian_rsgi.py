"""Granian's RSGI types, imported in this one module.

The protocol classes live in Granian's compiled extension, `granian._granian` (typed by its stub).
`granian.rsgi` re-exports them under their RSGI names, but as plain aliases that mypy's strict mode
does not count as exports, so importing them from there fails the type check. Hence the private
import, kept here: a Granian upgrade that moves them changes this file only (`granian>=2.5` in
pyproject.toml; checked against 2.8).
"""

from __future__ import annotations

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from granian._granian import RSGIProtocolError as ProtocolError
from granian.rsgi import Scope, WebsocketMessageType

__all__ = ["HTTPProtocol", "ProtocolClosed", "ProtocolError", "Scope", "WebsocketMessageType"]
