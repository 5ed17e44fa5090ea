#!/usr/bin/env python3
"""What the stack costs per month at three sizes, from the capacity model
(docs/capacity.md: each route's DynamoDB units, Lambda memory and time) and
AWS's list prices. Prints the table docs/deploy.md shows; `--check FILE`
fails unless FILE holds it as printed (make test runs that, so the page
cannot drift from the model). No AWS account is reached: the prices below
are inputs, dated, and the traffic is an assumption stated with them."""
import sys

# List prices, us-east-1, on-demand, no free tier, as published by AWS in 2026
# (check yours: they vary by Region and change).
PRICES = {
    "lambda_gb_second_arm64": 0.0000133334,
    "lambda_request": 0.20 / 1e6,
    "http_api_request": 1.00 / 1e6,
    "dynamodb_write_unit": 0.625 / 1e6,
    "dynamodb_read_unit": 0.125 / 1e6,
    "dynamodb_gb_month": 0.25,
    "pitr_gb_month": 0.20,
    "kms_key_month": 1.00,
    "kms_request": 0.03 / 1e4,
    "logs_ingested_gb": 0.50,
    "logs_stored_gb_month": 0.03,
    "alarm_metric_month": 0.10,
    "custom_metric_month": 0.30,
    "dashboard_month": 3.00,
}

# Each route, from docs/capacity.md ("What each route calls") and
# docs/data.md: write units (transactions at 2 per item; each write of an
# item the sessions index holds adds 1 for the index), strongly consistent
# read units, the function's memory (the template's defaults) and its billed
# time in AWS (bcrypt at cost 12 on one vCPU, ~0.25 s; each in-Region
# DynamoDB call a few ms; an RS256 signature in memory under 2 ms at 256 MB).
ROUTES = {
    #           writes reads  MB    seconds
    "login":    (10 + 1, 1, 1769, 0.30),
    "refresh":  (8 + 1, 3, 256, 0.030),
    "get_name": (0, 1, 256, 0.010),
    "logout":   (4 + 1, 1, 256, 0.020),
}

# The traffic: per monthly active user, per month. An active user signs in
# about once a working day, keeps the page open a few hours (a refresh every
# 15 minutes of use) and calls our /get_name (other services verify tokens
# with the JWKS, which costs nothing here).
PER_USER = {"login": 20, "refresh": 400, "get_name": 200, "logout": 20}
SIZES = [("small", 1_000), ("medium", 100_000), ("large", 1_000_000)]

# What a user leaves in the table: the user item (1 KB); each session
# (0.5 KB, twice: the item and its copy in the sessions index) and each
# refresh token (0.3 KB) stay up to the refresh lifetime, 30 days, plus TTL's
# lag: a month of them.
KB_PER_USER = 1 + PER_USER["login"] * 0.5 * 2 + PER_USER["refresh"] * 0.3
# Log bytes per request: the access log line, the function's own lines and
# its metric line; kept LogRetentionDays (30): a month's worth is stored.
LOG_KB_PER_REQUEST = 2.0
# Fixed: the sealing key and the second factor's key, the alarms (billed by each metric they read: counted
# from template.yaml, sealed mode's), the dashboard, ~60 custom metric
# series (each metric by each of its dimension values: routes, outcomes,
# admin actions); the daily rotation is negligible.
KMS_KEYS = 2
CUSTOM_METRICS = 60
DASHBOARDS = 1


def alarm_metrics():
    """The metrics the template's alarms read: one for a single-metric alarm,
    each MetricStat of a metric-math alarm."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[1] / "template.yaml").read_text()
    count = 0
    for alarm in re.split(r"\n  \w+:\n    Type: AWS::CloudWatch::Alarm\n", text)[1:]:
        alarm = re.split(r"\n  \w+:\n    Type: ", alarm)[0]
        count += alarm.count("MetricStat:") or 1
    return count


ALARM_METRICS = alarm_metrics()


def month(users):
    requests = {route: users * n for route, n in PER_USER.items()}
    total_requests = sum(requests.values())
    lambda_cost = sum(requests[r] * (mb / 1024 * s * PRICES["lambda_gb_second_arm64"] + PRICES["lambda_request"])
                      for r, (_, _, mb, s) in ROUTES.items())
    api_cost = total_requests * PRICES["http_api_request"]
    units = sum(requests[r] * w * PRICES["dynamodb_write_unit"] + requests[r] * rd * PRICES["dynamodb_read_unit"]
                for r, (w, rd, _, _) in ROUTES.items())
    gb = users * KB_PER_USER / 1e6
    storage = gb * (PRICES["dynamodb_gb_month"] + PRICES["pitr_gb_month"])
    log_gb = total_requests * LOG_KB_PER_REQUEST / 1e6
    logs = log_gb * (PRICES["logs_ingested_gb"] + PRICES["logs_stored_gb_month"])
    fixed = (KMS_KEYS * PRICES["kms_key_month"] + ALARM_METRICS * PRICES["alarm_metric_month"]
             + CUSTOM_METRICS * PRICES["custom_metric_month"] + DASHBOARDS * PRICES["dashboard_month"])
    return {"requests": total_requests, "Lambda": lambda_cost, "API Gateway": api_cost,
            "DynamoDB requests": units, "DynamoDB storage + PITR": storage, "CloudWatch Logs": logs,
            "fixed (KMS key, alarms, metrics, dashboard)": fixed}


def table():
    columns = ["Lambda", "API Gateway", "DynamoDB requests", "DynamoDB storage + PITR", "CloudWatch Logs",
               "fixed (KMS key, alarms, metrics, dashboard)"]
    lines = ["| size | requests / month | " + " | ".join(columns) + " | total / month |",
             "|---" * (len(columns) + 3) + "|"]
    for name, users in SIZES:
        m = month(users)
        total = sum(m[c] for c in columns)
        cells = [f"${m[c]:,.2f}" for c in columns]
        lines.append(f"| {name}: {users:,} active users | {m['requests']:,} | " + " | ".join(cells)
                     + f" | **${total:,.2f}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    printed = table()
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        if printed not in open(sys.argv[2]).read():
            sys.exit(f"{sys.argv[2]}: the cost table is not the model's; paste scripts/costs.py's output:\n{printed}")
        print(f"costs: {sys.argv[2]} shows the model's table")
    else:
        print(printed)
