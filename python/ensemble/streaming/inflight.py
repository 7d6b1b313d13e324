"""Requests this worker is answering right now, for `GET /api/v1/status/{id}` (pending | streaming).

Completed and failed requests are answered from SQLite; an entry leaves this index once its record
has been handed to the request log (which status flushes before it reads).
"""

from __future__ import annotations

from dataclasses import dataclass

from ensemble.storage.keys import now_iso
from ensemble.usage.journal import InFlightJournal


@dataclass(slots=True)
class InFlight:
    request_id: str
    key_id: str
    model: str
    created_at: str
    status: str = "pending"  # pending → streaming once the first byte went to the client
    provider: str = ""


class InFlightIndex:
    def __init__(self) -> None:
        self._entries: dict[str, InFlight] = {}
        self.journal: InFlightJournal | None = None  # so a killed worker's requests are recorded as failed

    def add(self, request_id: str, key_id: str, model: str) -> InFlight:
        entry = InFlight(request_id, key_id, model, now_iso())
        self._entries[request_id] = entry
        if self.journal is not None:
            self.journal.begin(request_id, key_id, model, entry.created_at)
        return entry

    def streaming(self, request_id: str, provider: str) -> None:
        entry = self._entries.get(request_id)
        if entry is not None:
            entry.status = "streaming"
            entry.provider = provider

    def discard(self, request_id: str) -> None:
        self._entries.pop(request_id, None)

    def get(self, request_id: str, key_id: str) -> InFlight | None:
        entry = self._entries.get(request_id)
        return entry if entry is not None and entry.key_id == key_id else None

    def __len__(self) -> int:
        return len(self._entries)
