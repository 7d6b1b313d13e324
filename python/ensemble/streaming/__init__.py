"""Streaming machinery shared by every stream route: stall watchdog, client-disconnect watch,
token coalescing, the in-flight request index, and event-loop lag measurement."""
