#!/usr/bin/env python3
"""The local stand-in for the mail function's event source mapping: reads the
table's stream on DynamoDB Local, and hands each new mail job (an insert of a
MAIL# item) to the mail function in the watch, as Lambda would (a DynamoDB
stream event, through the watch's invoke API); a batch item failure is run
again from that record, three times at most, as the template's mapping does.

With --mailbox, it also reads each message moto's SES kept
(GET /moto-api/data.json), prints its recipient, subject and link, and writes
it as one JSON file (to, subject, text) in that folder: `make dev`'s mailbox.
With --sender, it first makes that address a verified identity on moto's SES
(SES sends from verified identities only, moto too).

    mail-pump.py --dynamodb URL --table NAME --watch URL [--ses URL]
                 [--sender ADDRESS] [--mailbox DIR]
"""
import argparse, html, json, pathlib, re, sys, time, urllib.request

import boto3

ap = argparse.ArgumentParser()
ap.add_argument("--dynamodb", required=True)
ap.add_argument("--table", required=True)
ap.add_argument("--watch", required=True)
ap.add_argument("--ses", help="moto's endpoint (its SES and its mailbox)")
ap.add_argument("--sender")
ap.add_argument("--mailbox")
args = ap.parse_args()

credentials = dict(region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
dynamodb = boto3.client("dynamodb", endpoint_url=args.dynamodb, **credentials)
streams = boto3.client("dynamodbstreams", endpoint_url=args.dynamodb, **credentials)
if args.sender:
    boto3.client("sesv2", endpoint_url=args.ses, **credentials).create_email_identity(EmailIdentity=args.sender)


def log(line):
    print(f"mail-pump: {line}", flush=True)


def stream_arn():
    while True:
        try:
            arn = dynamodb.describe_table(TableName=args.table)["Table"].get("LatestStreamArn")
            if arn:
                return arn
        except dynamodb.exceptions.ResourceNotFoundException:
            pass
        time.sleep(0.5)


def plain(record):
    """A stream record as Lambda's event holds it (numbers for times; keys
    only, as the template's stream)."""
    record = dict(record)
    record["dynamodb"] = {k: (v.timestamp() if hasattr(v, "timestamp") else v)
                          for k, v in record["dynamodb"].items()}
    record["eventSourceARN"] = arn
    return record


def is_job(record):
    return record["eventName"] == "INSERT" and record["dynamodb"]["Keys"]["pk"]["S"].startswith("MAIL#")


def invoke(records):
    """Hands `records` to the mail function; the sequence number it asks to
    run again from, if any."""
    request = urllib.request.Request(
        f"{args.watch}/2015-03-31/functions/mail/invocations",
        data=json.dumps({"Records": records}).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read() or b"{}")
    failures = answer.get("batchItemFailures") or []
    return failures[0]["itemIdentifier"] if failures else None


seen_mail = 0


def read_mailbox():
    """Prints and files each message moto kept since the last look."""
    global seen_mail
    if not (args.ses and args.mailbox):
        return
    with urllib.request.urlopen(f"{args.ses}/moto-api/data.json", timeout=10) as response:
        messages = json.loads(response.read()).get("ses", {}).get("Message", [])
    folder = pathlib.Path(args.mailbox)
    folder.mkdir(parents=True, exist_ok=True)
    for message in messages[seen_mail:]:
        # moto keeps the HTML part of a message with both: the same words.
        body = message["body"]
        text = html.unescape(re.sub(r"<[^>]+>", "\n", body))
        text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
        link = re.search(r'href="([^"]+)"', body)
        to = ", ".join(message["destinations"].get("ToAddresses", []))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}-{message['id'][:8]}.json"
        path.write_text(json.dumps({"to": to, "subject": message["subject"], "text": text}, indent=2) + "\n")
        log(f"mail to {to}: {message['subject']}" + (f"\n    {html.unescape(link.group(1))}" if link else "")
            + f"\n    (the whole message: {path})")
    seen_mail = len(messages)


arn = stream_arn()
iterators = {}  # shard id -> iterator; None once a closed shard is read to its end
first_look = True
log(f"reading the stream of {args.table}")
while True:
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        if shard["ShardId"] not in iterators:
            # Shards there when the pump started: only what comes next (a
            # restarted make dev does not mail again); shards opened since:
            # all of them.
            kind = "LATEST" if first_look else "TRIM_HORIZON"
            iterators[shard["ShardId"]] = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType=kind)["ShardIterator"]
    first_look = False
    idle = True
    for shard_id, iterator in list(iterators.items()):
        if iterator is None:
            continue
        page = streams.get_records(ShardIterator=iterator, Limit=10)
        iterators[shard_id] = page.get("NextShardIterator")
        jobs = [plain(r) for r in page["Records"] if is_job(r)]
        for attempt in range(4):
            if not jobs:
                break
            idle = False
            try:
                again = invoke(jobs)
            except Exception as error:  # the function failed: Lambda runs the batch again
                log(f"the mail function failed ({error}); running the batch again")
                again = jobs[0]["dynamodb"]["SequenceNumber"]
            if again is None:
                break
            log(f"the mail function asked to run a job again (attempt {attempt + 1})")
            jobs = [r for r in jobs if int(r["dynamodb"]["SequenceNumber"]) >= int(again)]
            time.sleep(1)
    read_mailbox()
    if idle:
        time.sleep(0.2)
