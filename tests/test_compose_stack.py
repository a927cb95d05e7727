"""The compose stack's `cpu` profile built and run for real (scripts/compose-check.sh): its images built
here, the profile brought up, one spoken question asked through the bot's published port, taken down.

Runs where a container engine is usable (CI's `.ci/run` starts Debian's); elsewhere it is skipped with
the reason in one line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "compose-check.sh"


def engine_problem() -> str | None:
    probe = subprocess.run([str(CHECK), "--probe"], capture_output=True, text=True, timeout=60, check=False)
    return None if probe.returncode == 0 else probe.stdout.strip() or probe.stderr.strip()


PROBLEM = engine_problem()


@pytest.mark.skipif(PROBLEM is not None, reason=f"no container engine here: {PROBLEM}")
@pytest.mark.timeout(3600)
def test_the_cpu_profile_answers_a_spoken_question_through_its_published_port():
    result = subprocess.run([str(CHECK)], cwd=ROOT, capture_output=True, text=True, timeout=3500, check=False)
    summary = [line for line in result.stdout.splitlines() if line.startswith("compose-check:")]
    print("\n".join(summary))
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert any("OK: a spoken answer heard through the published port" in line for line in summary)
    assert any("paris" in line.lower() for line in summary if "spoken answer, transcribed" in line)
