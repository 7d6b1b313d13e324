"""Test support: real processes on free ports (Ensemble, the fake upstream, redis-server)."""
