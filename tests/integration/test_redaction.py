"""Redaction through the real worker and `dlq` on the real broker: with the default policy no
payload value reaches a `dlq.error.*` header or a log line (a processor's exception text, the
name of an unexpected field, a dict key), and `dlq --mask` hides a field, the key and a header in
`show`, `inspect -d` and `--json` while the replay still copies the record byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.core import contract
from tests.dlq_kit import dlq
from tests.kit import (
    Pipeline,
    WorkerProcess,
    avro_framed,
    committed_offsets,
    good_order,
    good_payment,
    produce,
    read_all,
    wait_until,
)

LEAKY = """
[policy]
retryable = []
max_attempts = 3
initial_backoff_ms = 20
max_backoff_ms = 50
"""
SECRET_KEY = "secret.key@example.com"


def run_to_end(pipe: Pipeline, tmp_path: Path, totals: dict[str, int]) -> str:
    def done() -> bool:
        for topic, total in totals.items():
            offsets = committed_offsets(pipe.bootstrap, pipe.name, topic, pipe.partitions)
            if sum(max(o, 0) for o in offsets.values()) < total:
                return False
        return True

    worker = WorkerProcess(pipe.config, tmp_path / "worker.log")
    try:
        wait_until(lambda: worker.check_alive() and done(), 90, "all committed")
    finally:
        code = worker.stop()
    assert code == 0, worker.text()
    return worker.text()


def test_no_payload_value_in_error_headers_or_logs_and_dlq_masks(
    bootstrap: str, tmp_path: Path
) -> None:
    pipe = Pipeline(
        bootstrap, tmp_path, top='processor = "tests.processors:leaky"', extra=LEAKY
    ).create()
    orders = produce(bootstrap, pipe.orders, [(b"k-alice", avro_framed(good_order(1)))])
    payment = {**good_payment(2), SECRET_KEY: 1}
    payments = produce(
        bootstrap,
        pipe.payments,
        [(b"k-bob", json.dumps(payment).encode())],
        headers=[("x-user", b"alice")],
    )
    log = run_to_end(pipe, tmp_path, {pipe.orders: orders, pipe.payments: payments})

    letters = {r.key: r for r in read_all(bootstrap, pipe.dlq)}
    assert set(letters) == {b"k-alice", b"k-bob"}
    secrets = ("user1@example.com", SECRET_KEY)
    for rec in letters.values():
        for name, value in rec.headers:
            if name.startswith("dlq.error."):
                assert not any(s.encode() in (value or b"") for s in secrets), (name, value)
    assert not any(s in log for s in secrets), log
    assert "raised by the processor (message redacted" in log  # retry and dead-letter lines

    charged = contract.parse_dead_letter(letters[b"k-alice"].headers)
    assert charged is not None and charged.error_type == "ValueError"
    assert (charged.message or "").startswith(
        "ValueError raised by the processor (message redacted"
    )
    assert charged.stacktrace is not None and "in leaky" in charged.stacktrace
    extra = contract.parse_dead_letter(letters[b"k-bob"].headers)
    assert extra is not None and "<extra field> (extra_forbidden)" in (extra.message or "")

    state = {"LAZARUS_STATE_DIR": str(tmp_path / "state")}
    config = ("--config", str(pipe.config), "--mask", "key", "--mask", "header.x-user")
    alice = f"{pipe.dlq}/{letters[b'k-alice'].partition}/{letters[b'k-alice'].offset}"
    where_bob = (letters[b"k-bob"].partition, letters[b"k-bob"].offset)
    bob = f"{pipe.dlq}/{where_bob[0]}/{where_bob[1]}"
    shown = dlq(*config, "--mask", "value.customer.email", "show", alice, env=state)
    assert shown.code == 0, shown.output
    assert "user1@example.com" not in shown.stdout and "k-alice" not in shown.stdout
    assert "***#" in shown.stdout and "o-1" in shown.stdout  # other fields stay readable
    listed = dlq(*config, "--mask", "value.payment_id", "inspect", "-d", "--json", env=state)
    assert listed.code == 0, listed.output
    assert '"p-2"' not in listed.stdout and "alice" not in listed.stdout
    assert "k-bob" not in listed.stdout and len(listed.json_lines()) == 2
    tags = [
        line["decoded"]
        for line in listed.json_lines()
        if (line["partition"], line["offset"]) == where_bob
    ]
    assert tags and str(tags[0]["payment_id"]).startswith("***#")
    assert tags[0]["order_id"] == "o-2"
    again = dlq(*config, "show", bob, "--json", env=state)
    assert json.loads(again.stdout)["key"] == next(
        line["key"]
        for line in listed.json_lines()
        if (line["partition"], line["offset"]) == where_bob
    ), "equal values show equal tags across commands"

    by_email = ("--mask", "value.customer", "group", "--by", "value.customer.email")
    for form in ((), ("--json",)):
        grouped = dlq(*config, *by_email, *form, env=state)
        assert grouped.code == 0, grouped.output
        assert "***#" in grouped.stdout and "example.com" not in grouped.stdout, grouped.output

    email = ("--mask", "value.customer.email", "fix", "--where", "category=processing")
    for form in ((), ("--json",), ("--summary",)):
        fixed = dlq(*config, *email, "--set", "customer.email=new@example.com", *form, env=state)
        assert fixed.code == 0, fixed.output
        assert "customer.email" in fixed.stdout and "***#" in fixed.stdout, fixed.output
        assert "example.com" not in fixed.stdout, fixed.output

    replayed = dlq(
        *config, "--mask", "value", "replay", "--where", "category=processing", "--yes", env=state
    )
    assert replayed.code == 0, replayed.output
    (copy,) = read_all(bootstrap, pipe.redrive)
    assert copy.key == b"k-alice" and copy.value == letters[b"k-alice"].value
