"""The atheris target runs for a bounded time (LAZARUS_FUZZ_SECONDS, default 20) in CI; a crash
fails the test with libFuzzer's report, and the number of inputs tried is printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TARGET = Path(__file__).with_name("fuzz_inputs.py")


def test_fuzz_the_input_readers_for_a_bounded_time(tmp_path: Path) -> None:
    seconds = int(os.environ.get("LAZARUS_FUZZ_SECONDS", "20"))
    result = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-max_total_time={seconds}",
            "-rss_limit_mb=2048",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-4000:]
    done = re.search(r"Done (\d+) runs in (\d+) second", report)
    assert done is not None, report[-2000:]
    print(f"\natheris: {done.group(1)} inputs in {done.group(2)} s, no crash")
    assert int(done.group(1)) > 100
