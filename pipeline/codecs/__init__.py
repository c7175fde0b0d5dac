"""Codecs: record values to events and back (Avro with fastavro, JSON with pydantic). Pure: the
only I/O is a `SchemaSource`'s on a cache miss."""

from pipeline.codecs.avro import AvroCodec, ParsedSchema, SchemaSource, parse_avro
from pipeline.codecs.base import Codec, Decoded
from pipeline.codecs.json import JsonCodec

__all__ = [
    "AvroCodec",
    "Codec",
    "Decoded",
    "JsonCodec",
    "ParsedSchema",
    "SchemaSource",
    "parse_avro",
]
