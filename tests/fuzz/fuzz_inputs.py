"""An atheris (libFuzzer) target for what reads untrusted bytes: the decoders, the header readers
(every dialect), `--where` and the fix language. A crash is any exception outside each one's
contract (decoders: `RecordError`; header readers: nothing; `--where`: `SelectionError`; fixes:
`ValueError` when parsing, `FixError` when applying).

    python tests/fuzz/fuzz_inputs.py -max_total_time=20   # libFuzzer flags; prints "Done N runs"
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]  # atheris ships neither annotations nor stubs

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["pipeline", "reprocessor"]):
    from pipeline.codecs.avro import AvroCodec
    from pipeline.codecs.catalog import LocalCatalog, load_model
    from pipeline.codecs.json import JsonCodec
    from pipeline.core import contract, dialects
    from pipeline.errors import RecordError
    from reprocessor import fixes, selection
    from reprocessor.deadletters import ReplayState, from_record

CATALOG = LocalCatalog(REPO / "schemas" / "avro")
ORDER = load_model("schemas.orders:Order", search_path=REPO)
PAYMENT = load_model("schemas.orders:Payment", search_path=REPO)
CODECS = [
    AvroCodec(source=CATALOG),
    AvroCodec(source=CATALOG, model=ORDER),
    AvroCodec(writer=CATALOG.by_id(1), model=ORDER),
    JsonCodec(PAYMENT),
    JsonCodec(PAYMENT, strict=True),
]
NAMES = sorted(
    {v for k, v in vars(contract).items() if k.isupper() and isinstance(v, str) and "." in v}
    | {
        v
        for k, v in vars(dialects).items()
        if k.isupper() and isinstance(v, str) and not k.endswith("PREFIX")
    }
)
KINDS = ["set", "delete", "rename", "default", "cast"]


def headers(fdp: atheris.FuzzedDataProvider) -> list[tuple[str, bytes | None]]:
    out: list[tuple[str, bytes | None]] = []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        name = fdp.PickValueInList(NAMES) if fdp.ConsumeBool() else fdp.ConsumeUnicode(8)
        value = None if fdp.ConsumeIntInRange(0, 9) == 0 else fdp.ConsumeBytes(48)
        out.append((name, value))
    return out


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    what = fdp.ConsumeIntInRange(0, 3)
    if what == 0:
        codec = CODECS[fdp.ConsumeIntInRange(0, len(CODECS) - 1)]
        with contextlib.suppress(RecordError):
            codec.decode(fdp.ConsumeBytes(fdp.remaining_bytes()))
    elif what == 1:
        found = headers(fdp)
        contract.parse_dead_letter(found)
        contract.lineage(found)
        dialects.read_foreign(found)
        from_record("dlq", 0, 0, 0, None, fdp.ConsumeBytes(16), found)
    elif what == 2:
        found = headers(fdp)
        try:
            parsed = selection.parse(fdp.ConsumeUnicode(120), now_ms=1_800_000_000_000)
        except selection.SelectionError:
            return
        dl = from_record("dlq", 0, 1, 2, fdp.ConsumeBytes(8), b"v", found)
        parsed.matches(dl, ReplayState.UNRESOLVED, {"a": [fdp.ConsumeUnicode(8)]})
    else:
        pairs = [
            (fdp.PickValueInList(KINDS), fdp.ConsumeUnicode(30))
            for _ in range(fdp.ConsumeIntInRange(1, 3))
        ]
        try:
            ops = fixes.parse_ordered(pairs)
        except ValueError:
            return
        with contextlib.suppress(fixes.FixError):
            fixes.apply(ops, {"a": {"b": [1, "x", None]}, "c": fdp.ConsumeUnicode(12)})


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
