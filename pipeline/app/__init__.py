"""Wiring at the edge: settings, building a worker from them, topic checks, logging and the
`lazarus` worker commands."""
