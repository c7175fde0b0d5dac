"""What `dlq` loads only when a command needs it still works when it comes: in a fresh
interpreter (the unit tests' own has long imported pydantic), a dead letter's hold rule, its
index row's, and payloads holding pydantic models, once something has imported pydantic."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from pipeline.core.contract import Failure, SourceRecord, build_dead_letter
from pipeline.errors import Category
from reprocessor.deadletters import from_record, is_model, jsonable, lookup, text_of
from reprocessor.fixes import diff, to_plain
from reprocessor.index_rows import RowView, dead_letter_row

loaded = lambda: sorted(m for m in ("pydantic", "pipeline.core.holds") if m in sys.modules)
print(loaded(), is_model({}), is_model(None))

record = SourceRecord("orders", 1, 77, 1_000, b"k", b"{}", ())
why = Failure(Category.HELD, "lazarus.Held", "held", 5_000, "orders-app",
              policy_rule="hold:fraud-review@0123456789ab")
headers = build_dead_letter(record, why)
view = RowView("orders.dlq", dead_letter_row("orders.dlq", 0, 1, 6_000, b"{}", headers))
print(from_record("orders.dlq", 0, 1, 6_000, b"k", b"{}", headers).rule, view.rule, loaded())

from pydantic import BaseModel, ConfigDict

class Order(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int

order = Order(id=7, note="x")
print(is_model(order), jsonable({"o": order}), lookup(order, ["note"]), text_of(order))
print(to_plain([order]), diff(order, {"id": 8, "note": "x"}))
"""


def test_rules_and_models_work_once_loaded_on_demand() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        "[] False False",
        "fraud-review fraud-review ['pipeline.core.holds', 'pydantic']",
        "True {'o': {'id': 7, 'note': 'x'}} x {\"id\":7,\"note\":\"x\"}",
        "[{'id': 7, 'note': 'x'}] ['~ id: 7 -> 8']",
    ]
