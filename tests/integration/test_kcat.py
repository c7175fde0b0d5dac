"""`dlq inspect --json` speaks kcat's -J dialect: same fields and values as kcat itself reads
from the same records (operators' jq habits keep working), and bytes kcat would mangle arrive
base64-encoded and exact."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys

from confluent_kafka import Producer

from pipeline.core import contract
from pipeline.errors import Category
from tests.conftest import TopicFactory

KCAT_FIELDS = ("topic", "partition", "offset", "tstype", "ts", "headers", "key", "payload")


def dead_letter(value: bytes, offset: int) -> tuple[bytes, bytes, contract.Headers]:
    record = contract.SourceRecord(
        "orders", 0, offset, 1_764_000_000_000, b"k", value, (("h", b"v"),)
    )
    failure = contract.Failure(
        Category.VALIDATION,
        "pydantic_core.ValidationError",
        "1 validation error",
        1_764_000_001_000,
        "p",
    )
    return b"k", value, contract.build_dead_letter(record, failure)


def test_json_lines_match_kcat(bootstrap: str, topic_factory: TopicFactory) -> None:
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is not installed (scripts/test installs it with apt-get)"
    topic = topic_factory()
    producer = Producer({"bootstrap.servers": bootstrap})
    text_value = json.dumps({"payment_id": "p-1", "amount": "12,50"}).encode()
    binary_value = b"\x00\x00\x00\x00\x01\xff\xfe binary avro"
    for offset, value in enumerate((text_value, binary_value)):
        key, val, headers = dead_letter(value, offset)
        producer.produce(topic, val, key, headers=list(headers))
    assert producer.flush(30) == 0

    raw = subprocess.run(
        [kcat, "-b", bootstrap, "-C", "-t", topic, "-J", "-e", "-q"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode("utf-8", errors="replace")
    theirs = [json.loads(line) for line in raw.splitlines() if line.strip()]
    ours_out = subprocess.run(
        [
            sys.executable,
            "-m",
            "reprocessor.cli",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--json",
            "inspect",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ours_out.returncode == 0, ours_out.stderr
    ours = [json.loads(line) for line in ours_out.stdout.splitlines() if line.strip()]
    assert len(theirs) == len(ours) == 2
    text_theirs, text_ours = theirs[0], next(o for o in ours if o["offset"] == theirs[0]["offset"])
    for field in KCAT_FIELDS:
        assert text_ours[field] == text_theirs[field], field
    assert text_ours["error"]["category"] == "validation"

    binary = next(o for o in ours if o["offset"] == theirs[1]["offset"])
    assert binary.get("payload_encoding") == "base64"
    assert base64.b64decode(binary["payload"]) == binary_value  # exact, where kcat mangles
