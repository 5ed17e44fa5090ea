#!/usr/bin/env python3
"""The deploy and runbook pages against what they describe: docs/deploy.md's
parameter table lists every parameter of template.yaml, in the order the
guided deploy asks them, with its default; its list of routes SAM asks "has
no authentication. Is this okay?" about is what SAM's own code finds in the
template; its cost table is scripts/costs.py's output; and docs/runbooks.md
has one section per alarm of the template, and none for an alarm that is
not there; docs/glossary.md defines the words the pages use in a sense of
their own, in order. Run by make test."""
import os
import pathlib
import re
import subprocess
import sys
from collections import Counter

root = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root / "tests" / "interop"))
from checks import check, finish  # noqa: E402


sys.path.insert(0, str(root / "tests" / "template"))
from cfn import load_template  # noqa: E402

template = load_template()
deploy = (root / "docs" / "deploy.md").read_text()
runbooks = (root / "docs" / "runbooks.md").read_text()

# The parameter table: every row's name and default, in order.
section = deploy[deploy.index("<!-- parameters:"):]
rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
documented = [(name, default.strip()) for name, default in rows]
expected = [(name, "(empty)" if str(p.get("Default", "")) == "" else f"`{p['Default']}`")
            for name, p in template["Parameters"].items()]
check("deploy.md lists every parameter, in the template's order, with its default", documented == expected,
      f"\n  docs     {documented}\n  template {expected}")

# The routes SAM's guided deploy asks about, as SAM itself finds them.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
from samcli.commands.deploy.auth_utils import auth_per_resource  # noqa: E402
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider  # noqa: E402

stacks, _ = SamLocalStackProvider.get_stacks(str(root / "template.yaml"),
                                              parameter_overrides={"JwtIssuer": "https://auth.example.com"},
                                              global_parameter_overrides={"AWS::Region": "us-east-1"})
asked = Counter(resource for resource, authorized in auth_per_resource(stacks) if not authorized)
block = deploy[deploy.index("<!-- authorization:"):]
block = block[:block.index("\n\n", block.index("-->"))]
listed = Counter({name: int(n) for name, n in re.findall(r"(\w+Function) \((\d+)\)", block)})
check("deploy.md names each route SAM asks about, with the count", listed == asked,
      f"docs {dict(listed)}, SAM {dict(asked)}")
total = sum(asked.values())
check(f"deploy.md says how many times ({total})", f"({total} times)" in deploy, "")

# The costs: scripts/costs.py's table, as printed.
costs = subprocess.run([sys.executable, str(root / "scripts" / "costs.py"), "--check",
                        str(root / "docs" / "deploy.md")], capture_output=True, text=True)
check("deploy.md's cost table is scripts/costs.py's output", costs.returncode == 0, costs.stderr)

# One runbook per alarm.
alarms = {name for name, r in template["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}
sections = set(re.findall(r"^## (\w+Alarm)$", runbooks, re.M))
check("runbooks.md has a section for every alarm, and only those", sections == alarms,
      f"missing {sorted(alarms - sections)}, extra {sorted(sections - alarms)}")
# Each runbook says what it means, where to look and what to do.
for alarm in sorted(alarms & sections):
    body = runbooks.split(f"## {alarm}\n", 1)[1].split("\n## ", 1)[0]
    check(f"runbook {alarm}: means, look, do, clears",
          all(re.search(rf"\*\*{part}(:\*\*|\*\* \()", body) for part in ("Means", "Look", "Do", "Clears")), "")
# The glossary defines each word the pages use in a sense of their own.
glossary = (root / "docs" / "glossary.md").read_text()
defined = re.findall(r"^\*\*([^*]+)\.\*\*", glossary, re.M)
needed = ["Watch", "Floor", "Peer", "Epoch", "Family", "Issuer and verifier functions", "EMF", "Fresh login",
          "Reservation", "Blue/green", "Sealed mode, KMS mode", "Device proof", "Session"]
check("the glossary defines each of its words", set(needed) <= set(defined),
      f"missing {sorted(set(needed) - set(defined))}")
check("the glossary is in alphabetical order", defined == sorted(defined, key=str.lower), defined)
finish()
