"""Parses Prometheus text (stdin) with the official client library's parser and prints every
sample as one JSON line: {"name", "labels", "value", "type"}. Exits non-zero when the text does
not parse. Used by tests/metrics_e2e.rs to read the engine's /metrics as Prometheus would."""

from __future__ import annotations

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            print(json.dumps({"name": sample.name, "labels": sample.labels, "value": sample.value,
                              "type": family.type}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
