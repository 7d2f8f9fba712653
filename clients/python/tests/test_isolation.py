"""The client package stands alone: importing it loads nothing of the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # clients/python
SERVER_PACKAGES = {
    "django",
    "channels",
    "daphne",
    "events",
    "runs",
    "researchflow",
    "devtools",
    "web",
}


def test_importing_the_client_loads_no_server_module() -> None:
    code = (
        "import json, sys; import researchflow_client, researchflow_client.sync; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)  # only the client's own directory
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE_ROOT / "tests",  # not the repository root: its packages must not leak in
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = set(json.loads(done.stdout))
    assert "researchflow_client" in loaded
    assert loaded & SERVER_PACKAGES == set()
