"""Processing functions the worker tests load by `module:function`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pipeline.core.handler import Context
from pipeline.errors import Retryable


def slow(event: Any, ctx: Context) -> Any:
    """Pass the event on after 3 ms: widens the window in which a transaction is open."""
    time.sleep(0.003)
    return event


class PricingDown(Exception):
    """A dependency error the test configures as retryable."""


def flaky(event: dict[str, Any], ctx: Context) -> Any:
    """Fails on the first attempts according to the order id, then succeeds or gives up:
    `o-1..`: succeeds on attempt 2; `o-2..`: never (retries exhausted); `o-3..`: a bug (not
    retryable); others: enrich and pass on; `o-4..`: split in two; `o-5..`: dropped."""
    order_id = str(event["order_id"])
    if order_id.startswith("o-1") and ctx.attempt < 2:
        raise Retryable("pricing service timed out")
    if order_id.startswith("o-2"):
        raise PricingDown("pricing service returned 503")
    if order_id.startswith("o-3"):
        raise KeyError("discount")
    if order_id.startswith("o-4"):
        return [event, {**event, "order_id": order_id + "-b"}]
    if order_id.startswith("o-5"):
        return None
    return {**event, "amount": round(float(event["amount"]) * 2, 2)}


def marker_outage(event: Any, ctx: Context) -> Any:
    """Raises a retryable error while the marker file named by $LAZARUS_TEST_OUTAGE exists."""
    marker = Path(os.environ["LAZARUS_TEST_OUTAGE"])
    if marker.exists():
        raise Retryable("downstream unavailable")
    return event


def stall(event: Any, ctx: Context) -> Any:
    """With $LAZARUS_TEST_STALL set to a folder: at offsets 1050, 1550, 2050, ... announce
    `stalled-<offset>` there and wait for `release-<offset>`, holding the batch's transaction
    open with the records before it already produced (a kill then lands inside it)."""
    folder = os.environ.get("LAZARUS_TEST_STALL")
    if folder and ctx.offset >= 1050 and ctx.offset % 500 == 50:
        Path(folder, f"stalled-{ctx.offset}").write_text("")
        while not Path(folder, f"release-{ctx.offset}").exists():
            time.sleep(0.05)
    return event


def dies_on_o13(event: Any, ctx: Context) -> Any:
    """A poison pill that kills the process itself (as a segfault or an OOM kill would)."""
    if event.get("order_id") == "o-13":
        os._exit(137)
    return event


def leaky(event: dict[str, Any], ctx: Context) -> Any:
    """Fails with the customer's e-mail address in its exception text: retryable on the first
    attempt (the retry and breaker log lines), then a plain `ValueError` (the dead letter)."""
    email = event["customer"]["email"]
    if ctx.attempt < 2:
        raise Retryable(f"pricing service timed out for {email}")
    raise ValueError(f"cannot charge {email}")
