#!/usr/bin/env python3
"""The operations metrics as the functions wrote them during `make test`: every
EMF line in the watch's log (the stdout of every function it ran) is valid
Embedded Metric Format as CloudWatch reads it (`_aws` and the values at the
top level, unit Count, each dimension's value present), in the one namespace,
named as shared/src/metrics.rs names them; and the stages before (e2e, the
browser tests, the contract run) made the metrics the alarms watch appear.
Usage: check_metrics.py WATCH_LOG"""
import json, sys

from metric_names import metric_names

known = metric_names()

failures, seen, lines = [], set(), 0
for raw in open(sys.argv[1], errors="replace"):
    start = raw.find('{"')
    if start < 0 or '"_aws"' not in raw:
        continue
    lines += 1
    try:
        line = json.loads(raw[start:])
        aws = line["_aws"]
        assert isinstance(aws["Timestamp"], int) and aws["Timestamp"] > 10**12, "Timestamp in ms"
        assert line.get("level") == "INFO", "level"
        assert aws["CloudWatchMetrics"], "no metric directive"
        for directive in aws["CloudWatchMetrics"]:
            assert directive["Namespace"] == "AuthService", directive["Namespace"]
            assert directive["Dimensions"], "no dimension set"
            assert directive["Metrics"], "no metric in the directive"
            for dimension_set in directive["Dimensions"]:
                for dimension in dimension_set:
                    assert isinstance(line[dimension], str), f"dimension {dimension}"
            for metric in directive["Metrics"]:
                assert metric["Unit"] == "Count", metric
                assert isinstance(line[metric["Name"]], int), metric["Name"]
                assert metric["Name"] in known, f"unknown metric {metric['Name']}"
                seen.add(metric["Name"])
    except (AssertionError, KeyError, TypeError, ValueError) as e:
        failures.append(f"{e}: {raw.strip()[:200]}")

expected = {"Registrations", "LoginSucceeded", "LoginFailed", "Refreshes", "RefreshSuperseded",
            "RefreshReuseDetected", "Logouts", "PasswordChanges", "Lockouts", "Responses", "ServerErrors"}
if lines == 0:
    failures.append("no EMF line at all in the watch's log")
if not expected <= seen:
    failures.append(f"never emitted through the watch: {sorted(expected - seen)}")
for failure in failures[:20]:
    print(f"FAIL {failure}")
print(f"metrics: {lines} EMF lines, {len(seen)} metrics seen, {len(failures)} failed")
sys.exit(1 if failures else 0)
