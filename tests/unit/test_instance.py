"""The default instance name: `<hostname>-<lowest free index>`, unique among live workers of a
pipeline on one host (so exactly-once workers never share a transactional id), freed when the
holder goes away, overridable by `--instance` and the `instance` setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.app import instance
from pipeline.app.settings import DlqSpec, OutputSpec, SchemaSpec, Settings


@pytest.fixture(autouse=True)
def slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAZARUS_INSTANCE_DIR", str(tmp_path))
    monkeypatch.setattr(instance, "_held", [])
    return tmp_path / "lazarus-slots"


def test_host_name_keeps_only_safe_characters() -> None:
    assert instance.host_name("pod-7.ns") == "pod-7.ns"
    assert instance.host_name("we ird/host:1") == "we-ird-host-1"
    assert instance.host_name("///") == "host"


def test_live_workers_on_one_host_get_distinct_indexes() -> None:
    names = [instance.default_instance("orders", "h") for _ in range(3)]
    assert names == ["h-0", "h-1", "h-2"]


def test_pipelines_have_their_own_slots() -> None:
    assert instance.default_instance("orders", "h") == "h-0"
    assert instance.default_instance("payments", "h") == "h-0"


def test_a_freed_slot_is_reused_first(slots: Path) -> None:
    first, handle = instance.claim_slot("orders", slots)
    second, other = instance.claim_slot("orders", slots)
    assert (first, second) == (0, 1)
    handle.close()  # the holder exited
    again, third = instance.claim_slot("orders", slots)
    assert again == 0
    other.close()
    third.close()


def test_a_slot_held_by_another_process_is_skipped(slots: Path) -> None:
    code = (
        "import sys,time;from pathlib import Path;from pipeline.app.instance import claim_slot;"
        "i,h=claim_slot('orders',Path(sys.argv[1]));print(i,flush=True);time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(slots)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        assert instance.default_instance("orders", "h") == "h-1"
    finally:
        holder.kill()
        holder.wait()
    index, handle = instance.claim_slot("orders", slots)  # the killed holder freed slot 0
    assert index == 0
    handle.close()


def test_explicit_and_configured_names_win() -> None:
    assert instance.resolve_instance("a", "b", "orders") == "a"
    assert instance.resolve_instance(None, "b", "orders") == "b"
    assert instance.resolve_instance(None, None, "orders").endswith("-0")


def test_no_writable_slot_folder_falls_back_to_the_pid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("LAZARUS_INSTANCE_DIR", str(blocker))  # a file, not a folder
    assert instance.default_instance("orders", "h").startswith("h-p")


def test_the_setting_is_validated() -> None:
    def settings(instance: str) -> Settings:
        return Settings(
            pipeline="p",
            sources={"s": SchemaSpec(format="bytes")},
            output=OutputSpec(topic="o"),
            dlq=DlqSpec(topic="d"),
            instance=instance,
        )

    assert settings("pod-3").instance == "pod-3"
    with pytest.raises(ValueError, match="instance"):
        settings("has space")
