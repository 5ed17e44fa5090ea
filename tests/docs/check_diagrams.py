#!/usr/bin/env python3
"""docs/architecture.md's pictures against what they draw: the stack's
functions are the template's, and the "Issuers" box holds exactly the
functions whose roles may unseal a key (sealed mode's kms:Decrypt) and
only they draw that arrow; the session sequence names routes the template
serves and error codes the code answers, with the default lifetimes; the
rotation timeline uses the template's default period and lead. Run by make
test."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(root / "tests" / "interop"))
from checks import check, finish  # noqa: E402


sys.path.insert(0, str(root / "tests" / "template"))
from cfn import load_template  # noqa: E402

template = load_template()
resources = template["Resources"]
page = (root / "docs" / "architecture.md").read_text()


def diagram(name):
    start = page.index(f"<!-- diagram: {name} ")
    block = page[page.index("```mermaid", start):]
    return block[:block.index("\n```", 10)]


functions = {r["Metadata"]["BuildProperties"]["Binary"]: logical for logical, r in resources.items()
             if r["Type"] == "AWS::Serverless::Function" and "BuildProperties" in r.get("Metadata", {})}
stack = diagram("architecture")
node_ids = set(re.findall(r"^\s+(\w+)\[", stack, re.M))
drawn = {n.replace("_", "-") for n in node_ids if n.replace("_", "-") in functions or n in ("get_name", "rotate_keys")}
check("the stack: every function of the template, and no other", drawn == set(functions),
      f"drawn {sorted(drawn)}, template {sorted(functions)}")

# Who may unseal: the roles whose key policy grants kms:Decrypt in sealed mode.
role_of = {logical: r["Properties"]["Role"]["Fn::GetAtt"][0]
           for logical, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
unsealers = set()
for policy in (r for r in resources.values() if r["Type"] == "AWS::IAM::RolePolicy"):
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    if isinstance(statements, dict) and "Fn::If" in statements:
        statements = statements["Fn::If"][1]
    if any(s.get("Action") == "kms:Decrypt" for s in statements):
        role = policy["Properties"]["RoleName"]["Ref"]
        unsealers |= {binary for binary, logical in functions.items() if role_of[logical] == role}
issuers_box = stack[stack.index('subgraph issuers'):]
issuers_box = issuers_box[:issuers_box.index("end")]
boxed = {n.replace("_", "-") for n in re.findall(r"^\s+(\w+)\[", issuers_box, re.M)}
check("the Issuers box holds exactly the functions whose roles may unseal", boxed == unsealers,
      f"box {sorted(boxed)}, template {sorted(unsealers)}")
arrow = re.search(r"^\s+([\w& ]+) -- \"Decrypt", stack, re.M)
drawn_unseal = {n.strip().replace("_", "-") for n in arrow.group(1).split("&")} if arrow else set()
check("the unseal arrow comes from exactly those", drawn_unseal == unsealers, sorted(drawn_unseal))

# The session sequence.
sessions = diagram("sessions")
routes = {e["Properties"]["Path"] for r in resources.values() if r["Type"] == "AWS::Serverless::Function"
          for e in r["Properties"].get("Events", {}).values() if e["Type"] == "HttpApi"}
named = set(re.findall(r"POST (/\w+)", sessions))
check("the sequence names routes the template serves", named and named <= routes, sorted(named - routes))
http_rs = (root / "shared" / "src" / "http.rs").read_text()
codes = set(re.findall(r'=> "([a-z_]+)"', http_rs[http_rs.index("pub fn code(&self)"):]))
segment = page[page.index("<!-- diagram: sessions"):page.index("<!-- diagram: rotation")]
said = set(re.findall(r"\b[a-z]+(?:_[a-z]+)+\b", re.sub(r"<!--.*?-->", "", segment)))
check("the error codes it names are the code's", {"invalid_grant", "refresh_token_superseded"} <= said <= codes,
      sorted(said - codes))
ttl = int(template["Parameters"]["AccessTokenTtlSeconds"]["Default"])
check("the access token's lifetime is the default", f"access token ({ttl // 60} min)" in sessions, ttl)

# The rotation timeline.
rotation = diagram("rotation")
period = int(template["Parameters"]["KeyPeriodSeconds"]["Default"]) // 3600
lead = int(template["Parameters"]["KeyLeadSeconds"]["Default"]) // 3600
check("the timeline's period and lead are the template's defaults",
      f"KeyPeriodSeconds {period} h, KeyLeadSeconds {lead} h" in rotation
      and re.search(rf"signs\s+:a1, 00:00, {period}h", rotation)
      and re.search(rf"waiting :b0, {24 - lead:02d}:00, {lead}h", rotation), (period, lead))
finish()
