"""Plain records for unit tests that need one without a database."""

from __future__ import annotations

from ensemble.storage.keys import KeyRecord


def key_record(rpm: int = 0, tpm: int = 0, key_id: str = "key_test") -> KeyRecord:
    """An active client key with the given per-window limits (0 = the config's default) and no model list."""
    return KeyRecord(
        key_id=key_id,
        prefix="ens_x",
        name="t",
        customer_id="",
        status="active",
        rate_limit_rpm=rpm,
        rate_limit_tpm=tpm,
        allowed_models=(),
        created_at="",
    )
