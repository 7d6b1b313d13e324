"""Batches: the native and Anthropic batch APIs and the rate-limit fallback (SPEC §4)."""
