"""Several Ensemble instances sharing one real redis-server (and, with `s3=True`, moto's S3 server).

Each instance has its own directory and SQLite file, so whatever they agree on travelled through
Redis (keys, limits, budgets) or S3 (stored answers). Used as a context manager or stopped by a
module fixture; a failure while starting stops what had started.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from support.ensemble import Ensemble
from support.shared import S3_ENV, MotoS3, RedisServer


class Cluster:
    def __init__(
        self,
        root: Path,
        namespace: str,
        names: Sequence[str] = ("a", "b", "c"),
        *,
        s3: bool = False,
        providers: list[dict[str, Any]] | None = None,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        key: bool = True,
    ) -> None:
        self.root = root
        self.providers = providers
        self.nodes: list[Ensemble] = []
        self._s3: MotoS3 | None = None
        self.redis = RedisServer()
        try:
            self.config: dict[str, Any] = {"redis": {"address": self.redis.address, "namespace": namespace}}
            self.env = dict(env or {})
            if s3:
                self._s3 = MotoS3()
                self.config["persistence"] = {"s3": {"bucket": self._s3.bucket, "endpoint_url": self._s3.url}}
                self.env.update(S3_ENV)
            self.config.update(config or {})
            for name in names:
                self.nodes.append(self.start(name, key=key))
        except BaseException:
            self.stop()
            raise

    @property
    def s3(self) -> MotoS3:
        assert self._s3 is not None, "this cluster was started without S3 (Cluster(..., s3=True))"
        return self._s3

    def start(self, name: str, key: bool = True) -> Ensemble:
        """One more instance on the same Redis (and S3), not in `nodes`: the caller stops it."""
        return Ensemble(self.root / name, providers=self.providers, config=self.config, env=self.env, key=key)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()
        if self._s3 is not None:
            self._s3.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
