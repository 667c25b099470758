#!/usr/bin/env python3
"""Decodes OTLP records with OpenTelemetry's own protobuf definitions (the
opentelemetry-proto package), the way the OpenTelemetry Collector's Kafka receiver
does with `encoding: otlp_proto`, and prints what it read as JSON, one line per record.

Input on stdin: records, each as an 8-byte little-endian length then the value.
A value the definitions cannot parse makes the script fail: the test must see it.
"""
import json
import struct
import sys

from opentelemetry.proto.logs.v1.logs_pb2 import LogsData


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return {"s": v.string_value}
    if kind == "bytes_value":
        return {"b": v.bytes_value.hex()}
    if kind == "int_value":
        return {"i": v.int_value}
    if kind == "array_value":
        return {"a": [any_value(x) for x in v.array_value.values]}
    raise SystemExit(f"unexpected AnyValue kind {kind}")


def main():
    data = sys.stdin.buffer.read()
    at = 0
    while at < len(data):
        (n,) = struct.unpack_from("<Q", data, at)
        at += 8
        msg = LogsData.FromString(data[at : at + n])
        at += n
        [rl] = msg.resource_logs
        [sl] = rl.scope_logs
        [rec] = sl.log_records
        out = {
            "resource": [[kv.key, any_value(kv.value)] for kv in rl.resource.attributes],
            "scope": [sl.scope.name, sl.scope.version],
            "time_unix_nano": rec.time_unix_nano,
            "observed_time_unix_nano": rec.observed_time_unix_nano,
            "severity_number": rec.severity_number,
            "severity_text": rec.severity_text,
            "body": any_value(rec.body) if rec.HasField("body") else None,
            "attributes": [[kv.key, any_value(kv.value)] for kv in rec.attributes],
        }
        print(json.dumps(out))


main()
