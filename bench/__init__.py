"""Benchmarks against a real Kafka broker. They measure and print; they never assert timings."""
