"""reprocessor/masking.py: field masking for everything `dlq` prints (`--mask`, `[reprocessor]
mask`): the key, headers, decoded fields (with `*`), raw undecodable values, group keys and fix
previews; tags equal for equal values; display copies only."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category, ConfigError
from reprocessor.deadletters import from_record, to_kcat_json
from reprocessor.grouping import GroupRow
from reprocessor.ledger import UNRESOLVED
from reprocessor.masking import MARK, Masks, load_key, parse
from reprocessor.payloads import Fixed, Payload
from reprocessor.stats import Item

CARD = "4111111111111111"
EVENT = {
    "order_id": "o-1",
    "card": {"number": CARD, "expiry": "12/29"},
    "items": [{"sku": "s-1", "qty": 1}, {"sku": "s-2", "qty": 2}],
    "note": None,
}


def masks(*paths: str) -> Masks:
    return Masks(parse(paths), b"k" * 32)


def item(value: bytes = json.dumps(EVENT).encode(), payload: Payload | None = None) -> Item:
    record = SourceRecord("orders", 0, 7, 500, b"alice", value, (("x-user", b"alice"),))
    failure = Failure(Category.VALIDATION, "E", "m", 1_000, "p")
    headers = build_dead_letter(record, failure)
    dl = from_record("orders.dlq", 0, 3, 1_000, b"alice", value, headers)
    shown = payload or Payload(EVENT, EVENT, "json")
    return Item(dl, UNRESOLVED, shown)


def test_paths_are_checked() -> None:
    assert parse(["key", "value", "value.card.number", "header.x.user"]) == (
        ("key",),
        ("value",),
        ("value", "card", "number"),
        ("header", "x.user"),
    )
    for bad in ("card.number", "key.x", "value.", "value..x", "header", "header."):
        with pytest.raises(ConfigError, match="mask"):
            parse([bad])


def test_a_masked_field_is_a_tag_equal_for_equal_values() -> None:
    m = masks("value.card.number")
    shown = m.value(EVENT)
    assert isinstance(shown, dict)
    tag = shown["card"]["number"]
    assert tag.startswith(MARK) and len(tag) == len(MARK) + 8 and CARD not in tag
    assert shown["card"]["expiry"] == "12/29" and shown["order_id"] == "o-1"
    assert m.value(EVENT) == shown  # stable
    other = m.value({**EVENT, "card": {"number": "5500000000000004"}})
    assert isinstance(other, dict) and other["card"]["number"] != tag
    assert Masks(m.paths, b"j" * 32).tag(CARD) != tag  # another host's key, another tag


def test_wildcards_parents_and_nulls() -> None:
    shown = masks("value.items.*.sku", "value.note").value(EVENT)
    assert isinstance(shown, dict)
    assert [i["sku"][:4] for i in shown["items"]] == [MARK, MARK]
    assert [i["qty"] for i in shown["items"]] == [1, 2]
    assert shown["note"] is None  # null stays null
    parent = masks("value.card").value(EVENT)
    assert isinstance(parent, dict) and parent["card"].startswith(MARK)
    assert masks("value").value(EVENT) == masks("value").tag(EVENT)


def test_an_item_is_masked_everywhere_it_is_printed() -> None:
    m = masks("key", "header.x-user", "value.card.number")
    shown = m.item(item())
    assert shown.payload is not None
    text = json.dumps(to_kcat_json(shown.dl, state=shown.state, decoded=shown.payload.shown))
    assert CARD not in text and "alice" not in text
    assert shown.dl.key is not None and shown.dl.key.startswith(MARK.encode())
    assert dict(shown.dl.headers)["dlq.source.topic"] == b"orders"  # other headers stay
    assert shown.dl.coordinates == "orders.dlq/0/3"


def test_raw_bytes_are_masked_whole_when_a_value_path_is() -> None:
    raw = Payload(None, "hex:00ff" + CARD, "hex", problem="not JSON")
    shown = masks("value.card.number").item(item(payload=raw))
    assert shown.payload is not None and str(shown.payload.shown).startswith(MARK)
    assert shown.payload.problem == "not JSON"
    assert shown.dl.value is not None and CARD.encode() not in shown.dl.value


def test_without_masks_nothing_changes() -> None:
    original = item()
    assert masks().item(original) is original
    assert masks("key").item(original).dl.value == original.dl.value


def test_fix_previews_diff_the_masked_events_and_keep_nothing_else() -> None:
    after = {**EVENT, "card": {"number": "5500000000000004", "expiry": "12/30"}}
    fixed = Fixed(EVENT, after, b"replayed bytes", ["~ card.number: ..."], None, True)
    shown = masks("value.card.number").fixed(fixed)
    assert all(CARD not in line and "5500" not in line for line in shown.diff)
    assert any(line.startswith("~ card.number: '***#") for line in shown.diff)
    assert "~ card.expiry: '12/29' -> '12/30'" in shown.diff
    assert shown.value is None and shown.before is None and shown.after is None
    assert fixed.value == b"replayed bytes"  # the original, which replay uses, is untouched


def test_group_keys_of_a_masked_field_are_tags() -> None:
    row = GroupRow("c-42", 2, 1, 2, "m", "orders.dlq/0/1", None, None, 0, 0, 2)
    m = masks("value.customer")
    (masked,) = m.rows("value.customer.id", [row])
    assert masked.key == m.tag("c-42") and masked.count == 2
    missing = GroupRow("(missing)", 1, 1, 2, "m", "orders.dlq/0/2", None, None, 0, 0, 1)
    assert m.rows("value.customer.id", [missing]) == [missing]
    assert m.rows("value.order_id", [row]) == [row]
    assert m.rows("fingerprint", [row]) == [row]


def test_the_key_is_made_once_and_readable_by_its_owner_only(tmp_path: Path) -> None:
    key = load_key(tmp_path / "state")
    assert load_key(tmp_path / "state") == key and len(key) == 32
    mode = (tmp_path / "state" / "mask.key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["mask.key"]  # nothing aside


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_bad_mask_is_a_usage_error_before_any_io(where: str) -> None:
    from tests.dlq_kit import dlq

    target = ("--bootstrap", "127.0.0.1:1", "--topic", "t")
    mask = ("--mask", "card.number")
    args = (*mask, *target, "stats") if where == "before" else (*target, "stats", *mask)
    result = dlq(*args)
    assert result.code == 2, result.output
    assert "mask 'card.number': expected key, value" in result.stderr


def test_a_bad_mask_in_the_config_is_a_configuration_error(tmp_path: Path) -> None:
    from tests.dlq_kit import dlq

    config = tmp_path / "p.toml"
    config.write_text(
        'pipeline = "p"\nbootstrap = "127.0.0.1:1"\n[sources.t]\nformat = "bytes"\n'
        '[output]\ntopic = "o"\n[dlq]\ntopic = "d"\n[reprocessor]\nmask = ["nope"]\n'
    )
    result = dlq("--config", str(config), "stats")
    assert result.code == 2, result.output
    assert "mask 'nope'" in result.stderr


def test_a_damaged_key_file_gives_a_key_for_this_process_only(tmp_path: Path) -> None:
    (tmp_path / "mask.key").write_text("not hex")
    assert len(load_key(tmp_path)) == 32
    assert (tmp_path / "mask.key").read_text() == "not hex"  # never overwritten
    assert [p.name for p in tmp_path.iterdir()] == ["mask.key"]
