"""After a fault: `xtopay audit verify` and `xtopay audit leakage` must both pass."""

from __future__ import annotations

import os
import subprocess
import sys


def assert_audit_passes(database_url: str) -> None:
    env = {**os.environ, "XTOPAY_DATABASE_URL": database_url}
    for check in ("verify", "leakage"):
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "audit", check],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"audit {check}:\n{done.stdout}{done.stderr}"
