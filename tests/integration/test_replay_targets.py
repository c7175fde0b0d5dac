"""`dlq replay --config`: a dead letter whose headers name another pipeline (or, with
`--to-source`, another source topic) is refused and listed with its resolved target, nothing is
written there, and `--to` naming that topic replays it."""

from __future__ import annotations

import uuid
from pathlib import Path

from pipeline.core import contract
from tests.conftest import create_topics
from tests.dlq_kit import dlq, failure, fill, lazarus_letter
from tests.kit import Pipeline, read_all


def test_targets_outside_the_configured_pipeline_need_to(bootstrap: str, tmp_path: Path) -> None:
    pipe = Pipeline(bootstrap, tmp_path).create()
    evil = f"e{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [f"{evil}.redrive", f"{evil}.orders"], 1)
    own = [
        lazarus_letter(pipe.orders, i, b"k", b"v", failure(pipeline=pipe.name)) for i in range(3)
    ]
    steered = [
        lazarus_letter(f"{evil}.orders", i, b"k", b"v", failure(pipeline=evil)) for i in range(2)
    ]
    fill(bootstrap, pipe.dlq, own + steered)
    base = ("--config", str(pipe.config), "replay", "--state-dir", str(tmp_path), "--yes")

    plan = dlq(*base, "--dry-run")
    assert f"{evil}.redrive" in plan.output and "outside the configured pipeline" in plan.output

    result = dlq(*base)
    assert result.code == 3, result.output
    assert len(read_all(bootstrap, pipe.redrive)) == 3
    assert read_all(bootstrap, f"{evil}.redrive") == []
    assert f"--to {evil}.redrive" in result.output

    source = dlq(*base, "--to-source", "--where", f"source.topic={evil}.orders")
    assert source.code == 3, source.output
    assert read_all(bootstrap, f"{evil}.orders") == []

    named = dlq(*base, "--to", f"{evil}.redrive", "--where", f"pipeline={evil}")
    assert named.code == 0, named.output
    copies = read_all(bootstrap, f"{evil}.redrive")
    assert len(copies) == 2 and all(c.header(contract.REPLAY_OF) for c in copies)
