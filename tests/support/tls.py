"""A certificate authority made at test time (trustme), the certificate it issues for loopback,
and fixtures for a fake upstream serving it (import `local_ca` and `tls_fake` into a test module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from support.fake import FakeUpstream


class LocalCA:
    """A fresh CA; `server` is a cert for 127.0.0.1/localhost signed by it, written as PEM files."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_file))
        server = self._ca.issue_cert("127.0.0.1", "localhost")
        self.cert_file = directory / "server.pem"
        self.key_file = directory / "server.key"
        server.private_key_pem.write_to_path(str(self.key_file))
        with self.cert_file.open("wb") as out:
            for pem in server.cert_chain_pems:
                out.write(pem.bytes())


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(Path(tmp_path_factory.mktemp("ca")))


@pytest.fixture(scope="module")
def tls_fake(local_ca: LocalCA) -> Iterator[FakeUpstream]:
    """The fake upstream over HTTPS (ALPN h2 and http/1.1) with `local_ca`'s certificate."""
    upstream = FakeUpstream(tls=local_ca)
    yield upstream
    upstream.stop()
