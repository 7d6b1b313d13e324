"""Real shared services for scale-out tests: a redis-server and moto's S3 server on free ports."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import boto3
import httpx

from support.processes import BIN, Process, free_port

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


def _ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


class RedisServer:
    """`redis-server` with no persistence; `kill()` and `start()` simulate an outage."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.process: Process | None = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = Process(
            "redis",
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.dir,
        )
        self.process.wait_until(lambda: _ping(self.port), timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-connection, as in a crash."""
        if self.process is not None:
            self.process.signal(9)
            self.process.proc.wait(5)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing answers, as with a hung or overloaded server."""
        if self.process is not None:
            self.process.proc.send_signal(19)

    def thaw(self) -> None:
        if self.process is not None:
            self.process.proc.send_signal(18)

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MotoS3:
    """moto's server mode: the S3 API over HTTP on a free port, with one bucket created."""

    def __init__(self, bucket: str = "ensemble-responses", port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.process = Process("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)])
        try:
            self.process.wait_until(lambda: httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500)
            self.client().create_bucket(Bucket=bucket)
        except BaseException:
            self.process.stop()
            raise

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def keys(self, prefix: str = "") -> list[str]:
        out = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for o in out.get("Contents", [])]

    def stop(self) -> None:
        self.process.stop()
