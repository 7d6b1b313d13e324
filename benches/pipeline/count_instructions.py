"""Instructions per request, in process against the fake upstream, counted by valgrind (cachegrind).

CPU time per request on a shared machine swings with the neighbours' load; instruction counts do
not (they still vary by ~3% with the request log's thread batching). Each case is run with N1 and
with N2 requests after the same warm-up, so `(I(N2) - I(N1)) / (N2 - N1)` leaves start-up out. The
gateway is `bench_inprocess.py`'s (an OpenAI-type provider on the fake upstream, 20-chunk streams).

    python benches/pipeline/count_instructions.py [--python OTHER/.venv/bin/python] [--cases sse+usage,responses-sse]

`--python` counts another build (e.g. main's venv) with the same cases; run both in one go with
`--python A --python B` for an A/B. Needs `valgrind`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_inprocess

VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
MESSAGES = [{"role": "user", "content": "Say hello, benchmark."}]
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "json": ("/v1/chat/completions", {"model": "mock-1", "messages": MESSAGES}),
    "sse+usage": (
        "/v1/chat/completions",
        {"model": "mock-1", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
    ),
    "responses-json": ("/v1/responses", {"model": "mock-1", "input": MESSAGES[0]["content"]}),
    "responses-sse": ("/v1/responses", {"model": "mock-1", "input": MESSAGES[0]["content"], "stream": True}),
}


def drive(case: str, n: int, upstream: str) -> None:
    """The measured process: set up, warm up, then `n` requests of `case`."""
    import uvloop

    path, body = CASES[case]
    loop = uvloop.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        app, key = bench_inprocess.setup(Path(tmp), upstream)
        app.__rsgi_init__(loop)
        loop.run_until_complete(bench_inprocess.drive(app, key, path, orjson.dumps(body), 50))
        loop.run_until_complete(bench_inprocess.drive(app, key, path, orjson.dumps(body), n))
        app.__rsgi_del__(loop)


def instructions(python: str, case: str, n: int, upstream: str) -> int:
    out = subprocess.run(
        [*VALGRIND, python, __file__, "--drive", case, str(n), upstream],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", action="append", help="the interpreter of the build to count (repeatable)")
    ap.add_argument("--cases", default="sse+usage,responses-sse", help=f"comma-separated, of {list(CASES)}")
    ap.add_argument("--n1", type=int, default=100)
    ap.add_argument("--n2", type=int, default=300)
    ap.add_argument("--drive", nargs=3, metavar=("CASE", "N", "UPSTREAM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        case, n, upstream = args.drive
        return drive(case, int(n), upstream)
    cases = args.cases.split(",")
    fake, upstream = bench_inprocess.start_fake()
    try:
        for python in args.python or [sys.executable]:
            per_request = {}
            for case in cases:
                low = instructions(python, case, args.n1, upstream)
                high = instructions(python, case, args.n2, upstream)
                per_request[case] = (high - low) / (args.n2 - args.n1)
                print(f"{python}  {case:15s} {per_request[case]:12,.0f} instructions/request", flush=True)
            if len(cases) == 2:
                a, b = (per_request[c] for c in cases)
                print(f"{python}  {cases[1]} vs {cases[0]}: {(b / a - 1) * 100:+.1f}%", flush=True)
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
