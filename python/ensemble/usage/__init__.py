"""Pricing, cost, and the asynchronous batched request log."""
