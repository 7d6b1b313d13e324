"""What a pure-Python HTTP/2 client would cost at least: the `h2` library's own work, no sockets.

Two in-memory `h2` connections (client and server); timed is only the client side of sending a
request (HPACK-encoded HEADERS + DATA) and of receiving one SSE event as a DATA frame (parse, flow
control bookkeeping, the WINDOW_UPDATE it owes), one frame per read and 20 frames per read. Compare
with `bench_clients.py`, where the whole HTTP/1.1 client (sockets included) costs less per request
than this per-request *part* does. How the HTTP/2 implementation was chosen: docs/performance.md.

    python benches/upstream/bench_h2_frames.py [--n 5000]
"""

from __future__ import annotations

import argparse
import time

import h2.config
import h2.connection
import h2.events

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"https"),
    (b":authority", b"api.openai.com"),
    (b":path", b"/v1/chat/completions"),
    (b"authorization", b"Bearer sk-bench-0000000000000000000000000000"),
    (b"content-type", b"application/json"),
    (b"user-agent", b"ensemble-gateway"),
    (b"content-length", b"90"),
]
EVENT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"hello "}}]}\n\n'
)


def pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def send_requests(n: int) -> float:
    spent = 0.0
    client, server = pair()
    for i in range(n):
        if i % 90 == 89:  # stay under the default 100 concurrent streams
            client, server = pair()
        sid = client.get_next_available_stream_id()
        t = time.process_time()
        client.send_headers(sid, REQUEST)
        client.send_data(sid, b"x" * 90, end_stream=True)
        out = client.data_to_send()
        spent += time.process_time() - t
        server.receive_data(out)
    return spent / n


def receive_events(n: int, per_read: int) -> float:
    client, server = pair()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, REQUEST[:-1], end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(sid, [(b":status", b"200")])
    client.receive_data(server.data_to_send())
    spent = 0.0
    for _ in range(n // per_read):
        for _ in range(per_read):
            server.send_data(sid, EVENT)
        frames = server.data_to_send()
        t = time.process_time()
        for event in client.receive_data(frames):
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        credit = client.data_to_send()
        spent += time.process_time() - t
        server.receive_data(credit)
    return spent / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    n = ap.parse_args().n
    print(f"h2 {h2.__version__}, client side only, CPU µs")
    print(f"send a request (HEADERS + DATA)      {send_requests(n) * 1e6:8.1f}")
    print(f"receive an event, 1 frame per read   {receive_events(n, 1) * 1e6:8.1f}")
    print(f"receive an event, 20 frames per read {receive_events(n, 20) * 1e6:8.1f}")


if __name__ == "__main__":
    main()
