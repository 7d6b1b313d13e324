"""Run a command against a real Ensemble: `python clients/with_gateway.py -- CMD ARGS...`

Starts the project's fake upstream and `ensemble serve` on free ports with a temporary config
directory (the mock provider, model `mock-1`, plus an OpenAI-format provider `fake` serving
`fake-gpt` from the fake upstream's endpoint `client-ep`) and a freshly created client key, runs CMD
with these in its environment, then stops both servers and exits with CMD's status:

    ENSEMBLE_URL, ENSEMBLE_API_KEY      the gateway and the key
    ENSEMBLE_FAKE_URL                   the fake upstream (control API under /_fake/)
    ENSEMBLE_FAKE_ENDPOINT              the fake endpoint name to enqueue failures on
    ENSEMBLE_FAKE_MODEL                 the model routed to it

Run it with the project's virtualenv Python (it uses tests/support and the `ensemble` script next
to that interpreter). The TypeScript and Go client test suites run under it (`make test-clients`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.ensemble import MOCK_PROVIDER, Ensemble, openai_provider  # noqa: E402
from support.fake import FakeUpstream  # noqa: E402

FAKE_ENDPOINT = "client-ep"
FAKE_MODEL = "fake-gpt"


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ensemble-clients-") as tmp:
        fake = FakeUpstream()
        try:
            provider = openai_provider(fake.endpoint_url(FAKE_ENDPOINT), name="fake", models=[FAKE_MODEL])
            gateway = Ensemble(Path(tmp), providers=[MOCK_PROVIDER, provider])
            try:
                env = {
                    **os.environ,
                    "ENSEMBLE_URL": gateway.url,
                    "ENSEMBLE_API_KEY": gateway.key,
                    "ENSEMBLE_FAKE_URL": fake.url,
                    "ENSEMBLE_FAKE_ENDPOINT": FAKE_ENDPOINT,
                    "ENSEMBLE_FAKE_MODEL": FAKE_MODEL,
                }
                return subprocess.run(argv, env=env, check=False).returncode
            finally:
                if gateway.stop() != 0:
                    print(gateway.process.output()[-4000:], file=sys.stderr)
        finally:
            fake.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
