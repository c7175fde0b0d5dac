"""Configuration defaults that commands need without loading the configuration's models.

`dlq -b HOST:PORT -t TOPIC …` runs with no config file, and importing the settings models
(pydantic-settings) would cost each such command 0.1-0.2 s of start-up: the `[reprocessor]`
table's defaults live here, imported by both `pipeline.app.settings.ReprocessorSpec` and
`reprocessor.options`, so they are stated once.
"""

from __future__ import annotations

MAX_REPLAYS = 3
"""`[reprocessor] max_replays`: how many times one record's lineage may be replayed."""

USE_INDEX = True
"""`[reprocessor] index`: whether `dlq` commands answer from the local DLQ index."""
