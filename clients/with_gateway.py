"""Run a command against a real Ensemble: `python clients/with_gateway.py -- CMD ARGS...`

Starts the project's fake upstream and `ensemble serve` on free ports with a temporary config
directory (the mock provider, model `mock-1`, plus the upstream lanes of tests/support/client_lanes.py:
one OpenAI-format provider per lane on the fake upstream, each with its own endpoint and model, so
that every test that makes its upstream fail takes a lane no other test has used) and a freshly
created client key, runs CMD with these in its environment, then stops both servers and exits with
CMD's status:

    ENSEMBLE_URL, ENSEMBLE_API_KEY      the gateway and the key
    ENSEMBLE_FAKE_URL                   the fake upstream (control API under /_fake/)
    ENSEMBLE_FAKE_LANES                 how many plain lanes i (provider `fake-i`, endpoint
                                        `client-ep-i`, model `fake-gpt-i`) there are; their
                                        providers never cool down after failures
                                        (`cooldown_after_failures: 0`)
    ENSEMBLE_FAKE_GUARDED_LANES         how many guarded lanes i (`fake-gi`, `client-ep-gi`,
                                        `fake-gpt-gi`) there are; their providers keep the
                                        gateway's default cool-down after 3 failures in a row

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

from support.client_lanes import GUARDED_LANES, PLAIN_LANES, lane_providers  # noqa: E402
from support.ensemble import MOCK_PROVIDER, Ensemble  # noqa: E402
from support.fake import FakeUpstream  # noqa: E402


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ensemble-clients-") as tmp:
        fake = FakeUpstream()
        try:
            gateway = Ensemble(Path(tmp), providers=[MOCK_PROVIDER, *lane_providers(fake)])
            try:
                env = {
                    **os.environ,
                    "ENSEMBLE_URL": gateway.url,
                    "ENSEMBLE_API_KEY": gateway.key,
                    "ENSEMBLE_FAKE_URL": fake.url,
                    "ENSEMBLE_FAKE_LANES": str(PLAIN_LANES),
                    "ENSEMBLE_FAKE_GUARDED_LANES": str(GUARDED_LANES),
                }
                return subprocess.run(argv, env=env, check=False).returncode
            finally:
                if gateway.stop() != 0:
                    print(gateway.process.output()[-4000:], file=sys.stderr)
        finally:
            fake.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
