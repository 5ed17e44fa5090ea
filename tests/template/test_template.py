#!/usr/bin/env python3
"""Checks template.yaml offline: each function's IAM statements are exactly
the minimal set (a widening fails here, in review), nothing is a wildcard,
routes are the same in template.yaml, openapi.yaml and the local watch
router, and the deployment settings the docs promise are in place. Run by
`make test`."""
import json, pathlib, re, sys, tomllib

import yaml

root = pathlib.Path(__file__).resolve().parents[2]
failures = []
checks = 0


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from cfn import load_template  # noqa: E402

source = load_template()
MODES = ("sealed", "kms")
NO_VALUE = {"Ref": "AWS::NoValue"}


def decide(node, decided):
    """The template with the conditions of `decided` (name: true or false)
    decided: their Fn::If resolved, resources and outputs under a false one
    gone (the other conditions stay as they are)."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"} and node["Fn::If"][0] in decided:
            condition, yes, no = node["Fn::If"]
            return decide(yes if decided[condition] else no, decided)
        out = {}
        for key, value in node.items():
            if isinstance(value, dict) and value.get("Condition") in decided and not decided[value["Condition"]]:
                continue
            value = decide(value, decided)
            if value != NO_VALUE or key != "Value":
                out[key] = value
        return out
    if isinstance(node, list):
        return [decide(item, decided) for item in node]
    return node


def resolve(node, mode):
    """The template as deployed with SigningMode `mode` (the other mode's
    resources and outputs gone; GreenSigns and the like stay as they are)."""
    return decide(node, {"Sealed": mode == "sealed", "KmsMode": mode == "kms"})


templates = {mode: resolve(source, mode) for mode in MODES}
# The default mode's template, for everything that is the same in both.
template = templates["sealed"]
resources = template["Resources"]
check_mode_default = template["Parameters"]["SigningMode"]["Default"] == "sealed"


def check(name, condition, detail=""):
    global checks
    checks += 1
    if not condition:
        failures.append(f"{name}: {detail}")


def describe(resource):
    """A readable name for a statement's Resource."""
    if isinstance(resource, list):
        return [describe(r) for r in resource]
    if isinstance(resource, dict):
        if "Fn::GetAtt" in resource:
            return ".".join(resource["Fn::GetAtt"])
        if "Fn::If" in resource:
            condition, yes, no = resource["Fn::If"]
            return {"if": condition, "then": describe(yes), "else": describe(no)}
    return resource


ACTIVE_KEY = {"if": "GreenSigns", "then": "SigningKeyGreen.Arn", "else": "SigningKeyBlue.Arn"}
VERIFICATION_KEYS = {"if": "AcceptBoth", "then": ["SigningKeyBlue.Arn", "SigningKeyGreen.Arn"], "else": [ACTIVE_KEY]}


def logs(function):
    return (("logs:CreateLogStream", "logs:PutLogEvents"), f"{function}LogGroup.Arn")


def table(*actions):
    return (tuple(f"dynamodb:{a}" for a in actions), "UsersTable.Arn")


# The index of a user's sessions (the sessions list): queried, never written.
SESSIONS_INDEX = (("dynamodb:Query",), {"Fn::Sub": "${UsersTable.Arn}/index/sessions_by_user"})
# The index of users by id (keys only): the admin API's lookup by id.
USERS_INDEX = (("dynamodb:Query",), {"Fn::Sub": "${UsersTable.Arn}/index/users_by_id"})
SIGN = (("kms:Sign",), ACTIVE_KEY)
PUBLIC_KEY = (("kms:GetPublicKey",), VERIFICATION_KEYS)
# Sealed mode: issuers unseal, the rotation seals, and every function that
# signs or verifies reads the issuer keys' partition.
DECRYPT = (("kms:Decrypt",), "SealingKey.Arn")
ENCRYPT = (("kms:Encrypt",), "SealingKey.Arn")
# The second factor's data key: made once and unsealed, under its purpose.
DATA_KEY = (("kms:Decrypt", "kms:GenerateDataKey"), "SecondFactorKey.Arn")
DATA_KEY_PURPOSE = {"StringEquals": {"kms:EncryptionContext:purpose": "auth-second-factor-data-key"}}
KEYS_READ = (("dynamodb:Query",), "UsersTable.Arn")
# The purpose every sealing and unsealing must name (issuer_keys.rs).
PURPOSE = {"StringEquals": {"kms:EncryptionContext:purpose": "auth-jwt-signing-key"}}

# Mail from the sender's domain identity or its address identity, and the
# configuration set when there is one: nothing else of SES.
_SES = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:"
_SES_IDENTITIES = [
    {"Fn::Sub": [_SES + "identity/${Domain}",
                 {"Domain": {"Fn::Select": [1, {"Fn::Split": ["@", {"Ref": "MailFrom"}]}]}}]},
    {"Fn::Sub": _SES + "identity/${MailFrom}"},
]
SES_SENDING = {"if": "HasConfigurationSet",
               "then": _SES_IDENTITIES + [{"Fn::Sub": _SES + "configuration-set/${SesConfigurationSet}"}],
               "else": _SES_IDENTITIES}

# The providers' client secrets: the SSM parameters under OidcParameterPath.
OIDC_SECRETS = {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${OidcParameterPath}*"}

# The minimal set: what each function's code calls, on what it uses
# (besides its keys, below).
COMMON = {
    # Login and refresh check the user item inside their transactions (ConditionCheckItem);
    # login and password clear the attempt record inside theirs (DeleteItem).
    "Login": [logs("Login"), table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem")],
    "GetName": [logs("GetName"), table("GetItem")],
    "Register": [logs("Register"), table("PutItem", "UpdateItem")],
    "Refresh": [logs("Refresh"), table("GetItem", "PutItem", "UpdateItem", "ConditionCheckItem")],
    # Logout also lists and ends the caller's sessions (/sessions).
    "Logout": [logs("Logout"), table("GetItem", "UpdateItem"), SESSIONS_INDEX],
    # Password also re-authenticates (a ConditionCheck on the user item) and
    # deletes accounts (the user item and the attempt record: DeleteItem).
    "Password": [logs("Password"), table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem")],
    # Admin: reads users and lock records, updates roles, activity, epochs and
    # passwords, deletes users (with their attempt record) and lock records.
    # Never signs.
    # Creates users (PutItem), and finds them by id through their index.
    "Admin": [logs("Admin"), table("GetItem", "UpdateItem", "DeleteItem"), table("PutItem"), USERS_INDEX],
    # Federation: reads users, identities and address claims, writes its
    # round trips (used up by a delete), new accounts with their identity,
    # sessions (checking the user item); finds a connecting user by id; reads
    # the providers' client secrets under its path.
    "Federation": [logs("Federation"), table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem"),
                   USERS_INDEX, (("ssm:GetParameter",), OIDC_SECRETS)],
    # SecondFactor: reads users, factors, tickets and the data key; counts
    # codes; writes pending factors and the sign-in's transaction (session,
    # refresh token, device proof, ticket used up, factor, attempt record).
    "SecondFactor": [logs("SecondFactor"), table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem")],
    # Passkeys: reads users, passkeys (one, or a user's in one batch) and
    # ceremonies; writes ceremonies (used up by a delete), passkeys with
    # their user's list, and the sign-in's transaction (session, refresh
    # token, device proof, passkey's counter; a second step's ticket used
    # up); finds a passkey's owner by id.
    "Passkeys": [logs("Passkeys"), table("GetItem", "BatchGetItem", "PutItem", "UpdateItem", "DeleteItem",
                                         "ConditionCheckItem"), USERS_INDEX],
    "Jwks": [logs("Jwks")],
    "Web": [logs("Web")],
    # Recovery: reads users (by name, or by their address's claim) and
    # tickets, counts its windows and wrong codes, writes the reset's
    # transaction (ticket used up, user, attempt record, notice) and jobs.
    "Recovery": [logs("Recovery"), table("GetItem", "PutItem", "UpdateItem", "DeleteItem")],
    # Mail: reads users and claims, writes tickets, counts an account's
    # allowance, deletes the jobs it ran; reads the stream; sends through SES.
    "Mail": [logs("Mail"), table("GetItem", "PutItem", "UpdateItem", "DeleteItem"),
             (("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"), "UsersTable.StreamArn"),
             (("dynamodb:ListStreams",), {"Fn::Sub": "${UsersTable.Arn}/stream/*"}),
             (("sqs:SendMessage",), "MailDropped.Arn"),
             (("ses:SendEmail",), SES_SENDING)],
}
ISSUERS = ("Login", "Refresh", "Password", "Federation", "SecondFactor", "Passkeys")
VERIFIERS = ("GetName", "Logout", "Password", "Admin", "Jwks", "Federation", "SecondFactor", "Passkeys")
EXPECTED = {mode: {name: list(grants) for name, grants in COMMON.items()} for mode in MODES}
for name in ISSUERS:
    EXPECTED["kms"][name].append(SIGN)
    EXPECTED["sealed"][name] += [DECRYPT, KEYS_READ]
for name in VERIFIERS:
    EXPECTED["kms"][name].append(PUBLIC_KEY)
    if KEYS_READ not in EXPECTED["sealed"][name]:
        EXPECTED["sealed"][name].append(KEYS_READ)
for mode in MODES:
    EXPECTED[mode]["SecondFactor"].append(DATA_KEY)
# The rotation (sealed mode only): reads, puts, extends and deletes key
# items, and seals.
EXPECTED["sealed"]["RotateKeys"] = [logs("RotateKeys"), table("Query", "PutItem", "UpdateItem", "DeleteItem"), ENCRYPT]
# The item kinds (key prefixes, docs/data.md) each role may touch: its
# dynamodb:LeadingKeys condition. The functions' own calls, seen through a
# proxy, are held to the same lists by
# matrix::each_function_touches_only_the_item_kinds_its_role_allows.
LEADING_KEYS = {
    "Login": ["USER#*", "LOCK#*", "RATE#login#*", "DEVICE#*", "SESSION#*", "REFRESH#*", "MAIL#*", "MFA#*"],
    "GetName": ["USER#*", "WARMUP#*"],
    "Register": ["USER#*", "RATE#register#*", "MAIL#*", "RATE#reset_for#*"],
    "Refresh": ["USER#*", "SESSION#*", "REFRESH#*"],
    "Logout": ["USER#*", "SESSION#*", "REFRESH#*", "WARMUP#*"],
    "Password": ["USER#*", "LOCK#*", "RATE#login#*", "DEVICE#*", "SESSION#*", "REFRESH#*", "WARMUP#*", "MAIL#*",
                 "EMAIL#*", "TICKET#verify_email#*", "RATE#reset_for#*", "RATE#ticket_guess#*", "IDENTITY#*",
                 "FACTOR#*", "PASSKEY#*"],
    "Admin": ["USER#*", "LOCK#*", "WARMUP#*", "EMAIL#*", "IDENTITY#*", "FACTOR#*", "PASSKEY#*"],
    "Federation": ["USER#*", "OIDC#*", "IDENTITY#*", "EMAIL#*", "LOCK#*", "RATE#login#*", "RATE#register#*", "DEVICE#*",
                   "SESSION#*", "REFRESH#*", "WARMUP#*", "MAIL#*", "MFA#*"],
    "Recovery": ["USER#*", "EMAIL#*", "TICKET#reset#*", "LOCK#*", "MAIL#*", "RATE#reset#*", "RATE#reset_for#*",
                 "RATE#ticket_guess#*"],
    "Mail": ["USER#*", "EMAIL#*", "TICKET#reset#*", "TICKET#verify_email#*", "RATE#tickets_for#*", "MAIL#*"],
    "SecondFactor": ["USER#*", "FACTOR#*", "MFA#*", "LOCK#*", "RATE#login#*", "DEVICE#*", "SESSION#*", "REFRESH#*",
                     "WARMUP#*", "MAIL#*", "DATAKEY#*"],
    "Passkeys": ["USER#*", "PASSKEY#*", "CEREMONY#*", "MFA#*", "LOCK#*", "RATE#login#*", "DEVICE#*", "SESSION#*", "REFRESH#*", "WARMUP#*",
                 "MAIL#*"],
    "RotateKeys": ["KEYS#"],
}
BINARIES = {"Login": "login", "GetName": "get-name", "Register": "register", "Refresh": "refresh",
            "Logout": "logout", "Password": "password", "Admin": "admin", "Jwks": "jwks", "Web": "web",
            "RotateKeys": "rotate-keys", "Recovery": "recovery", "Mail": "mail", "Federation": "federation",
            "SecondFactor": "second-factor", "Passkeys": "passkeys"}
# The page's routes: served by the web function, outside the API's contract.
PAGE = "web"

check("SigningMode defaults to sealed", check_mode_default)
granted_by_mode = {}
for mode in MODES:
    resources = templates[mode]["Resources"]
    expected = EXPECTED[mode]
    functions = {name[: -len("Function")]: r for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    check(f"{mode}: functions", set(functions) == set(expected), sorted(functions))

    granted = {}  # each function's role's (actions, resource), as the template grants them
    for name, function in functions.items():
        props = function["Properties"]
        role_ref = props.get("Role", {}).get("Fn::GetAtt", [None])[0]
        check(f"{name} has its own role", role_ref == f"{name}Role", props.get("Role"))
        check(f"{name} no SAM policies", "Policies" not in props, "policies belong on its role")
        role = resources.get(f"{name}Role", {}).get("Properties", {})
        statements = [s for p in role.get("Policies", []) for s in p["PolicyDocument"]["Statement"]]
        # KMS rights live in RolePolicy resources (the key policy names the roles:
        # inline, they would make a circular reference).
        attached = [r for r in resources.values() if r["Type"] in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy")
                    and r["Properties"].get("RoleName") == {"Ref": f"{name}Role"}]
        statements += [s for r in attached for s in r["Properties"]["PolicyDocument"]["Statement"]]
        check(f"{name} KMS rights are attached before it runs",
              not attached or function.get("DependsOn") == f"{name}KeyPolicy", function.get("DependsOn"))
        actual = []
        for s in statements:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            check(f"{name} statement allows", s["Effect"] == "Allow", s)
            check(f"{name} no wildcard action", not any("*" in a for a in actions), actions)
            # One exception: listing our table's streams (ListStreams takes
            # the table's stream/* pattern, as SAM's DynamoDBStreamReadPolicy).
            listing = actions == ["dynamodb:ListStreams"] and s["Resource"] == {"Fn::Sub": "${UsersTable.Arn}/stream/*"}
            # And one more: the providers' secrets, the parameters under one path.
            secrets = actions == ["ssm:GetParameter"] and s["Resource"] == OIDC_SECRETS
            check(f"{name} no wildcard resource", listing or secrets or "*" not in str(s["Resource"]), s["Resource"])
            actual.append((tuple(actions), describe(s["Resource"])))
            if describe(s["Resource"]) == "UsersTable.Arn":
                # Every item the role may touch by key, narrowed to its kinds
                # (reading the issuer keys: their partition alone).
                condition = s.get("Condition", {})
                kinds = (["KEYS#"] if (tuple(actions), "UsersTable.Arn") == KEYS_READ
                         # The admin API creates users and asks for mail, and writes no other item whole.
                         else ["USER#*", "MAIL#*"] if (name, tuple(actions)) == ("Admin", ("dynamodb:PutItem",))
                         else LEADING_KEYS.get(name))
                check(f"{mode}: {name} table access is narrowed to its item kinds",
                      condition == {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": kinds},
                                    "Null": {"dynamodb:LeadingKeys": "false"}},
                      f"\n    actual   {condition}\n    expected {kinds}")
            if describe(s["Resource"]) == "SecondFactorKey.Arn":
                check(f"{name} makes and unseals the data key only under its purpose",
                      s.get("Condition") == DATA_KEY_PURPOSE, s.get("Condition"))
            if describe(s["Resource"]) == "SealingKey.Arn":
                check(f"{name} seals and unseals only under the signing keys' purpose",
                      s.get("Condition") == PURPOSE, s.get("Condition"))
        granted[name] = actual
        check(f"{mode}: {name} IAM is exactly the minimal set", actual == expected.get(name),
              f"\n    actual   {actual}\n    expected {expected.get(name)}")
        check(f"{name} managed policies", "ManagedPolicyArns" not in role, role.get("ManagedPolicyArns"))
        metadata = function.get("Metadata", {})
        check(f"{name} builds with cargo-lambda", metadata.get("BuildMethod") == "rust-cargolambda", metadata)
        check(f"{name} binary", metadata.get("BuildProperties", {}).get("Binary") == BINARIES[name], metadata)
        memory, timeout = props.get("MemorySize", {}), props.get("Timeout", {})
        check(f"{name} memory is a parameter", isinstance(memory, dict) and memory.get("Ref") in template["Parameters"], memory)
        check(f"{name} timeout is a parameter", isinstance(timeout, dict) and timeout.get("Ref") in template["Parameters"], timeout)
        logging = props.get("LoggingConfig", {})
        check(f"{name} logs JSON", logging.get("LogFormat") == "JSON", logging)
        group = resources.get(f"{name}LogGroup", {}).get("Properties", {})
        check(f"{name} log retention", group.get("RetentionInDays") == {"Ref": "LogRetentionDays"}, group)
        check(f"{name} logs to its group", logging.get("LogGroup") == {"Ref": f"{name}LogGroup"}, logging)
        variables = props.get("Environment", {}).get("Variables", {})
        check(f"{name} no secret in the environment", not any("SECRET" in v or "PASSWORD" in v for v in variables), variables)
        signs = any(g in expected[name] for g in (SIGN, DECRYPT, ENCRYPT))
        check(f"{mode}: {name} signing key only where it signs (or seals)", ("JWT_SIGNING_KEY" in variables) == signs, variables)
        if KEYS_READ in expected[name] or PUBLIC_KEY in expected[name]:
            check(f"{mode}: {name} re-reads the keys on the stack's bound", mode == "kms" or
                  variables.get("JWT_KEYS_REFRESH_SECONDS") == {"Ref": "KeyRefreshSeconds"}, variables)
    granted_by_mode[mode] = granted
resources = template["Resources"]
rust_functions_all = [n for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
# The API's functions (the rotation and the mail are not: no route; the
# table's schedule and stream run them).
functions = {name[: -len("Function")]: r for name, r in resources.items()
             if r["Type"] == "AWS::Serverless::Function" and name not in ("RotateKeysFunction", "MailFunction")}
granted = granted_by_mode["sealed"]

# The mail function's stream: new mail jobs only, a batch's failed record
# run again from there (bisecting, three times, an hour at most), and a
# batch given up on described in an encrypted queue that MailAlarm watches.
mail_events = resources["MailFunction"]["Properties"]["Events"]
check("the mail function has one event, the table's stream", list(mail_events) == ["MailJobs"]
      and mail_events["MailJobs"]["Type"] == "DynamoDB", mail_events)
stream = mail_events["MailJobs"]["Properties"]
check("the mail stream", stream.get("Stream") == {"Fn::GetAtt": ["UsersTable", "StreamArn"]}
      and stream.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
      and stream.get("BisectBatchOnFunctionError") is True and stream.get("MaximumRetryAttempts") == 3
      and stream.get("MaximumRecordAgeInSeconds") == 3600, stream)
check("the mail stream: new mail jobs only", json.loads(stream["FilterCriteria"]["Filters"][0]["Pattern"]) ==
      {"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "MAIL#"}]}}}}, stream)
check("the mail stream: a batch given up on goes to MailDropped",
      stream.get("DestinationConfig") == {"OnFailure": {"Destination": {"Fn::GetAtt": ["MailDropped", "Arn"]}}}, stream)
check("the table's stream holds keys only", resources["UsersTable"]["Properties"].get("StreamSpecification")
      == {"StreamViewType": "KEYS_ONLY"}, resources["UsersTable"]["Properties"])
dropped = resources["MailDropped"]
check("MailDropped: an encrypted queue", dropped["Type"] == "AWS::SQS::Queue"
      and dropped["Properties"].get("SqsManagedSseEnabled") is True, dropped)
mail_alarm = resources["MailAlarm"]["Properties"]
check("MailAlarm counts MailDropped's messages", {"Namespace": "AWS/SQS", "MetricName": "ApproximateNumberOfMessagesVisible",
      "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["MailDropped", "QueueName"]}}]}
      in [q["MetricStat"]["Metric"] for q in mail_alarm["Metrics"] if "MetricStat" in q]
      and "FILL(dropped, 0)" in mail_alarm["Metrics"][0]["Expression"], mail_alarm)

globals_ = template["Globals"]["Function"]
check("runtime", globals_.get("Runtime") == "provided.al2023", globals_)
check("handler", globals_.get("Handler") == "bootstrap", globals_)
check("arm64", globals_.get("Architectures") == ["arm64"], globals_)

# Routes: exactly the local watch router's.
router = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["metadata"]["lambda"]["watch"]["router"]
routes = {}
for name, function in functions.items():
    for event in function["Properties"].get("Events", {}).values():
        p = event["Properties"]
        check(f"{name} route on the API", p.get("ApiId") == {"Ref": "HttpApi"}, p)
        check(f"{name} route takes any method", p.get("Method") == "ANY", p)
        routes[p["Path"]] = BINARIES[name]
# The watch's router spells a greedy segment {*name}, API Gateway {name+}.
router = {re.sub(r"\{\*(\w+)\}", r"{\1+}", path): function for path, function in router.items()}
check("routes equal the watch router", routes == router, f"\n    template {routes}\n    router   {router}")
check("the page is served at the root and under /assets/",
      {p for p, f in router.items() if f == PAGE} == {"/", "/assets/{path+}"}, router)
api_routes = {p: f for p, f in router.items() if f != PAGE}
spec = yaml.safe_load((root / "openapi.yaml").read_text())
check("openapi.yaml documents exactly the API's routes (not the page's)", set(spec["paths"]) == set(api_routes),
      f"\n    openapi {sorted(spec['paths'])}\n    router  {sorted(api_routes)}")
# The error codes the contract lists are the ones the code can answer.
http_rs = (root / "shared" / "src" / "http.rs").read_text()
code_fn = http_rs[http_rs.index("pub fn code(&self)"):http_rs.index("pub fn into_response")]
codes = set(re.findall(r'=> "([a-z_]+)"', code_fn))
documented = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"])
check("openapi.yaml's error codes are the code's", codes == documented,
      f"only in the code {sorted(codes - documented)}, only in the contract {sorted(documented - codes)}")
# What each route's handler serves (every other method: 405).
served = {"/login": {"post"}, "/get_name": {"get"}, "/register": {"post"}, "/refresh": {"post"},
          "/logout": {"post"}, "/password": {"post"}, "/reauthenticate": {"post"}, "/account": {"delete"},
          "/.well-known/jwks.json": {"get"}, "/.well-known/openid-configuration": {"get"},
          "/admin/users/{username}": {"get", "patch", "delete"},
          "/admin/users/{username}/roles/{role}": {"put", "delete"},
          "/admin/users/{username}/lock": {"delete"}, "/admin/users/{username}/sessions": {"delete"},
          "/admin/users": {"get", "post"}, "/admin/users/{username}/password": {"put"},
          "/admin/users/{username}/second-factor": {"delete"},
          "/sessions": {"get"}, "/sessions/{id}": {"delete"},
          "/password/reset": {"post"}, "/password/reset/confirm": {"post"},
          "/account/email": {"get", "put", "delete"}, "/account/email/verify": {"post"},
          "/oidc/providers": {"get"}, "/oidc/{provider}/start": {"post"}, "/oidc/{provider}/callback": {"get"},
          "/account/identities": {"get"}, "/account/identities/{provider}": {"delete"},
          "/login/second-factor": {"post"}, "/account/second-factor": {"post", "delete"},
          "/account/second-factor/confirm": {"post"}, "/account/second-factor/recovery-codes": {"post"},
          "/account/second-factor/verify": {"post"},
          "/login/passkey": {"post"}, "/login/passkey/options": {"post"},
          "/account/passkeys": {"get", "post"}, "/account/passkeys/options": {"post"},
          "/account/passkeys/{id}": {"patch", "delete"},
          "/account/passkeys/verify": {"post"}, "/account/passkeys/verify/options": {"post"}}
check("every API route's methods are known", set(served) == set(api_routes), sorted(set(served) ^ set(api_routes)))
for path, function in api_routes.items():
    methods = set(spec["paths"].get(path, {})) - {"parameters", "summary", "description"}
    check(f"openapi.yaml: {path} has the methods its handler serves", methods == served.get(path), methods)

api = resources["HttpApi"]["Properties"]
check("$default stage", api.get("StageName") == "$default", api)
check("throttling parameters", api.get("DefaultRouteSettings") == {
    "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"}, "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"}}, api)
cors = api.get("CorsConfiguration", {}).get("Fn::If", [None, {}, None])[1]
check("CORS allows credentials (the refresh cookie) for the listed origins only",
      cors.get("AllowCredentials") is True and cors.get("AllowOrigins") == {"Ref": "CorsAllowedOrigins"}, cors)
for name in ("Login", "Refresh", "Logout", "Password"):
    variables = functions[name]["Properties"]["Environment"]["Variables"]
    check(f"{name} knows the origins that may use the refresh cookie",
          variables.get("CORS_ALLOWED_ORIGINS") == {"Fn::Join": [",", {"Ref": "CorsAllowedOrigins"}]}, variables)
served_methods = {m.upper() for methods in served.values() for m in methods}
check("CORS allows every method a route serves", served_methods | {"OPTIONS"} <= set(cors.get("AllowMethods", [])),
      cors.get("AllowMethods"))
roles_pattern = re.compile(template["Parameters"]["Roles"]["AllowedPattern"])
check("the Roles parameter's pattern is the code's role rule",
      all(roles_pattern.fullmatch(v) for v in ["admin", "admin support", "admin,billing-ops", "a.b_c", ""])
      and not any(roles_pattern.fullmatch(v) for v in ["Admin", "1st", "-x", "a" * 33, "a:b"]),
      template["Parameters"]["Roles"]["AllowedPattern"])
check("CORS from a parameter, off by default", "CorsConfiguration" in api and template["Parameters"]["CorsAllowedOrigins"]["Default"] == "", api)

# Access logs: JSON, to their own group with the retention, the fields an
# operator traces a request by, and nothing that can hold a secret.
access = api.get("AccessLogSettings", {})
check("access logs to their own group", access.get("DestinationArn") == {"Fn::GetAtt": ["AccessLogGroup", "Arn"]}, access)
check("access log retention", resources.get("AccessLogGroup", {}).get("Properties", {}).get("RetentionInDays")
      == {"Ref": "LogRetentionDays"}, resources.get("AccessLogGroup"))
log_format = access.get("Format", "")
try:
    fields = json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", log_format))
except ValueError as e:
    fields = {}
    check("the access log format is JSON", False, e)
for field in ("requestId", "time", "ip", "method", "route", "status", "latencyMs", "userAgent", "integrationError"):
    check(f"access log has {field}", field in fields, sorted(fields))
variables = set(re.findall(r"\$[a-z]+\.[A-Za-z.]+", log_format))
check("access log variables are $context ones only (no header, cookie or body)",
      all(v.startswith("$context.") for v in variables), sorted(variables))
check("access log holds no authorizer, header, cookie or body",
      not re.search(r"authori[sz]|header|cookie|body|token", log_format, re.I), log_format)

# Metrics: every name an alarm or the dashboard uses in our namespace is one
# the code emits (shared/src/metrics.rs).
from metric_names import metric_names
emitted = metric_names()
check("metrics.rs names 22 metrics", len(emitted) == 22, sorted(emitted))
check("the functions get the namespace", globals_.get("Environment", {}).get("Variables", {}).get("METRICS_NAMESPACE")
      == {"Ref": "MetricsNamespace"}, globals_.get("Environment"))
alarms = {n: r["Properties"] for n, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
check("the alarms", set(alarms) == {"RefreshReuseAlarm", "LockoutAlarm", "LoginFailureAlarm", "ServerErrorRatioAlarm", "DependencyThrottleAlarm",
                                      "FunctionErrorAlarm", "FunctionThrottleAlarm", "TableThrottleAlarm", "KeyRotationAlarm",
                                      "KeyRotationMissedAlarm", "MailAlarm"}, sorted(alarms))
notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
for name, alarm in alarms.items():
    check(f"{name} notifies the topic", alarm.get("AlarmActions") == notify and alarm.get("OKActions") == notify, alarm)
    metrics = [alarm] if "MetricName" in alarm else [q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q]
    check(f"{name} watches a metric", bool(metrics), alarm)
    for metric in metrics:
        if metric.get("Namespace") == {"Ref": "MetricsNamespace"}:
            check(f"{name}: {metric['MetricName']} is a metric the code emits", metric["MetricName"] in emitted, sorted(emitted))
        else:
            check(f"{name}: AWS's own metric", metric.get("Namespace") in ("AWS/Lambda", "AWS/DynamoDB", "AWS/SQS"), metric)
    for query in alarm.get("Metrics", []):
        for dimension in query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", []):
            if dimension["Name"] == "FunctionName":
                check(f"{name}: a function of this stack", dimension["Value"]["Ref"][:-len("Function")] in functions
                      or dimension["Value"]["Ref"] in rust_functions_all, dimension)
function_alarms = {q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"] for q in alarms["FunctionErrorAlarm"]["Metrics"] if "MetricStat" in q}
check("function errors: every function", function_alarms == {f"{n}Function" for n in functions}, sorted(function_alarms))
body = json.loads(resources["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"])
used, latency = set(), {}
for widget in body["widgets"]:
    for metric in widget["properties"]["metrics"]:
        if metric[0] == "${MetricsNamespace}":
            used.add(metric[1])
        elif metric[:2] == ["AWS/Lambda", "Duration"]:
            latency.setdefault(widget["properties"]["stat"], set()).add(metric[3])
check("the dashboard's metrics are the code's", used <= emitted and len(used) >= 10, f"unknown {sorted(used - emitted)}")
for stat in ("p50", "p99"):
    check(f"the dashboard shows each function's {stat}", latency.get(stat) == {f"${{{n}Function}}" for n in functions}, latency)

# checkov: every skip is in the resource's metadata with its reason; the
# bcrypt functions have reserved concurrency (0 turns it off, for new accounts).
for name, resource in resources.items():
    for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
        check(f"{name}: checkov skip {skip.get('id')} says why", len(skip.get("comment", "")) > 40, skip)
for name in ("Login", "Register", "Password"):
    reserved = functions[name]["Properties"].get("ReservedConcurrentExecutions")
    check(f"{name} has reserved concurrency", reserved == {"Fn::If": ["HasHashingConcurrency", {"Ref": "HashingFunctionConcurrency"}, {"Ref": "AWS::NoValue"}]}, reserved)

users = resources["UsersTable"]
check("table retained", users.get("DeletionPolicy") == "Retain" and users.get("UpdateReplacePolicy") == "Retain", users)
tp = users["Properties"]
check("on-demand", tp.get("BillingMode") == "PAY_PER_REQUEST", tp)
check("TTL on expires_at", tp.get("TimeToLiveSpecification") == {"AttributeName": "expires_at", "Enabled": True}, tp)
check("point-in-time recovery", tp.get("PointInTimeRecoverySpecification") == {"PointInTimeRecoveryEnabled": True}, tp)
check("deletion protection parameter", tp.get("DeletionProtectionEnabled") == {"Ref": "TableDeletionProtection"}, tp)

# KMS mode's two keys: only in that mode.
check("the blue and green keys exist in KMS mode only",
      all(f"SigningKey{c}" not in resources and f"SigningKey{c}" in templates["kms"]["Resources"] for c in ("Blue", "Green")))
for color in ["Blue", "Green"]:
    key = templates["kms"]["Resources"][f"SigningKey{color}"]["Properties"]
    check(f"{color} key spec", (key.get("KeySpec"), key.get("KeyUsage")) == ("RSA_2048", "SIGN_VERIFY"), key)
    check(f"{color} pending window", key.get("PendingWindowInDays") == 30, key)
    statements = key["KeyPolicy"]["Statement"]
    admin = statements[0]
    check(f"{color} key policy keeps the account in (never locked out)",
          ":root" in str(admin["Principal"]["AWS"]) and admin["Effect"] == "Allow" and admin["Action"] == "kms:*",
          admin)
    denies = [s for s in statements if s["Effect"] == "Deny"]
    # The roles the template lets sign, read from their policies, not from
    # this test's own table.
    signers = sorted(n for n, actual in granted_by_mode["kms"].items() if any("kms:Sign" in actions for actions, _ in actual))
    issuers = [{"Fn::GetAtt": [f"{n}Role", "Arn"]} for n in signers]
    exceptions = [d.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn") for d in denies]
    shape = [{**d, "Condition": None} for d in denies]
    check(f"{color} key: an explicit deny of kms:Sign for every principal but the listed",
          shape == [{"Sid": "OnlyTheIssuersSign", "Effect": "Deny", "Principal": "*", "Action": "kms:Sign",
                     "Resource": "*", "Condition": None}], denies)
    check(f"{color} key: the deny's exceptions are exactly the roles that sign",
          len(exceptions) == 1 and sorted(map(str, exceptions[0] or [])) == sorted(map(str, issuers)), exceptions)
    check(f"{color} key: exactly two statements", len(statements) == 2, statements)
    check(f"{color} key: the roles that sign are the issuers'", signers == ["Federation", "Login", "Passkeys", "Password", "Refresh", "SecondFactor"], signers)
    alias = templates["kms"]["Resources"][f"SigningKey{color}Alias"]["Properties"]
    check(f"{color} alias", alias.get("TargetKeyId") == {"Ref": f"SigningKey{color}"}, alias)

# Sealed mode's sealing key: symmetric, its material rotated, the account in;
# only the roles granted Decrypt unseal, only the rotation seals, and
# nothing is sealed or unsealed under another purpose, whatever IAM allows.
check("the sealing key exists in sealed mode only", "SealingKey" in resources and "SealingKey" not in templates["kms"]["Resources"])
sealing = resources["SealingKey"]
check("sealing key retained", sealing.get("DeletionPolicy") == "Retain" and sealing.get("UpdateReplacePolicy") == "Retain", sealing)
key = sealing["Properties"]
check("sealing key spec", (key.get("KeySpec"), key.get("KeyUsage"), key.get("EnableKeyRotation"), key.get("PendingWindowInDays"))
      == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", True, 30), key)
statements = {s.get("Sid"): s for s in key["KeyPolicy"]["Statement"]}
admin = statements.get("AccountAdministersTheKeyThroughIam", {})
check("sealing key policy keeps the account in", ":root" in str(admin.get("Principal")) and admin.get("Action") == "kms:*", admin)
roles_with = lambda grant: sorted(str({"Fn::GetAtt": [f"{n}Role", "Arn"]}) for n, actual in granted.items() if grant in actual)
unseal = statements.get("OnlyTheIssuersUnseal", {})
exceptions = unseal.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn", [])
check("sealing key: a deny of Decrypt for all but the roles granted it (the issuers)",
      unseal.get("Effect") == "Deny" and unseal.get("Principal") == "*" and unseal.get("Action") == "kms:Decrypt"
      and sorted(map(str, exceptions)) == roles_with(DECRYPT) and len(exceptions) == 6, unseal)
seal = statements.get("OnlyTheRotationSeals", {})
exception = seal.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn")
check("sealing key: a deny of sealing (Encrypt, GenerateDataKey*, ReEncrypt*) for all but the rotation",
      seal.get("Effect") == "Deny" and seal.get("Principal") == "*"
      and sorted(seal.get("Action", [])) == ["kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"]
      and [str(exception)] == roles_with(ENCRYPT) == [str({"Fn::GetAtt": ["RotateKeysRole", "Arn"]})], seal)
purpose = statements.get("OnlyForSigningKeys", {})
check("sealing key: a deny of Encrypt and Decrypt under any other purpose",
      purpose.get("Effect") == "Deny" and sorted(purpose.get("Action", [])) == ["kms:Decrypt", "kms:Encrypt"]
      and purpose.get("Condition") == {"StringNotEquals": {"kms:EncryptionContext:purpose": "auth-jwt-signing-key"}}, purpose)
check("sealing key: exactly four statements", len(statements) == 4, sorted(statements))
# The rotation: on its schedule, one at a time, and at deploy.
rotate = resources["RotateKeysFunction"]["Properties"]
check("the rotation runs one at a time where the account can reserve (reservations on)",
      rotate.get("ReservedConcurrentExecutions") == {"Fn::If": ["HasHashingConcurrency", 1, {"Ref": "AWS::NoValue"}]}, rotate)
check("the default deploys on a new account: nothing reserved",
      template["Parameters"]["HashingFunctionConcurrency"]["Default"] == 0)
schedule = rotate.get("Events", {}).get("Rotation", {})
check("the rotation runs on the schedule parameter", schedule.get("Type") == "ScheduleV2"
      and schedule["Properties"].get("ScheduleExpression") == {"Ref": "KeyRotationSchedule"}, schedule)
check("daily by default", template["Parameters"]["KeyRotationSchedule"]["Default"] == "rate(1 day)")
variables = rotate["Environment"]["Variables"]
check("the rotation's schedule settings are the stack's", all(variables.get(v) == {"Ref": p} for v, p in (
    ("JWT_KEY_PERIOD_SECONDS", "KeyPeriodSeconds"), ("JWT_KEY_LEAD_SECONDS", "KeyLeadSeconds"),
    ("JWT_KEYS_REFRESH_SECONDS", "KeyRefreshSeconds"), ("ACCESS_TOKEN_TTL_SECONDS", "AccessTokenTtlSeconds"))), variables)
at_deploy = resources["RotateKeysAtDeploy"]["Properties"]
check("the rotation runs at deploy, again when its settings change",
      at_deploy.get("RotationFunction") == {"Ref": "RotateKeysFunction"}
      and {"SealingKey", "KeyPeriodSeconds", "KeyLeadSeconds", "AccessTokenTtlSeconds"} <= set(at_deploy)
      and at_deploy.get("Schedule") == {"Ref": "KeyRotationSchedule"}, at_deploy)
deployer = resources["RotateKeysAtDeployRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
check("the deploy-time runner may invoke the rotation and nothing else",
      [(s["Action"], describe(s["Resource"])) for s in deployer] == [
          (["logs:CreateLogStream", "logs:PutLogEvents"], "RotateKeysAtDeployLogGroup.Arn"),
          ("lambda:InvokeFunction", "RotateKeysFunction.Arn")], deployer)
check("a failed rotation raises its alarm", resources["KeyRotationAlarm"]["Properties"]["Dimensions"]
      == [{"Name": "FunctionName", "Value": {"Ref": "RotateKeysFunction"}}])
missed = resources["KeyRotationMissedAlarm"]["Properties"]
check("a day's rotation that never ran raises an alarm (no invocation in 36 hours; none counts as none)",
      missed["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "RotateKeysFunction"}}]
      and (missed["MetricName"], missed["Statistic"], missed["ComparisonOperator"], missed["Threshold"]) ==
      ("Invocations", "Sum", "LessThanThreshold", 1)
      and missed["Period"] * missed["EvaluationPeriods"] == 36 * 3600 == missed["Period"] * missed["DatapointsToAlarm"]
      and missed["TreatMissingData"] == "breaching", missed)


PROPS = {"RotationFunction": "rotate", "KeyLeadSeconds": "7200", "KeyPeriodSeconds": "86400", "Schedule": "rate(1 day)"}


def run_deploy_hook(answer, request="Create", event=None, props=None):
    """The deploy-time runner's code, with fakes of boto3, cfnresponse and
    time (no real sleep): what it invoked and what it sent CloudFormation."""
    import io, types
    calls, sent = [], []
    fake_lambda = types.SimpleNamespace(invoke=lambda **kw: calls.append(kw) or answer())
    boto3 = types.SimpleNamespace(client=lambda service: fake_lambda)
    cfnresponse = types.SimpleNamespace(
        SUCCESS="SUCCESS", FAILED="FAILED",
        send=lambda event, context, status, data, physical, reason=None: sent.append((status, data, reason)))
    fake_time = types.SimpleNamespace(sleep=lambda seconds: None, time=lambda: 1_800_000_000.0)
    saved = {m: sys.modules.get(m) for m in ("boto3", "cfnresponse", "time")}
    sys.modules.update(boto3=boto3, cfnresponse=cfnresponse, time=fake_time)
    try:
        scope = {}
        exec(resources["RotateKeysAtDeployFunction"]["Properties"]["Code"]["ZipFile"], scope)
        with contextlib.redirect_stdout(io.StringIO()):
            scope["handler"](event if event is not None else
                             {"RequestType": request, "ResourceProperties": {**PROPS, **(props or {})}}, None)
    finally:
        for module, value in saved.items():
            if value is None:
                sys.modules.pop(module, None)
            else:
                sys.modules[module] = value
    return calls, sent


import contextlib, io as _io
ok = lambda: {"Payload": _io.BytesIO(b'{"created": ["a", "b", "c"], "extended": [], "deleted": []}')}
calls, sent = run_deploy_hook(ok)
check("at create: the rotation is invoked and the deploy goes on",
      [c["FunctionName"] for c in calls] == ["rotate"] and sent == [("SUCCESS", {"Created": 3}, None)], (calls, sent))
check("at create: every key already in the table is revoked first (another sealing key's)",
      "revoke_made_before" in json.loads(calls[0]["Payload"]), calls)
calls, sent = run_deploy_hook(ok, "Update")
check("at update: a plain run", json.loads(calls[0]["Payload"]) == {} and sent[0][0] == "SUCCESS", (calls, sent))
for bad, why in (({"KeyLeadSeconds": "86400"}, "a lead not below the period"),
                 ({"Schedule": "rate(3 days)"}, "runs too far apart for the keys' coverage")):
    for request in ("Create", "Update"):
        calls, sent = run_deploy_hook(ok, request, props=bad)
        check(f"at {request.lower()}: {why} fails the deploy, nothing run",
              calls == [] and len(sent) == 1 and sent[0][0] == "FAILED" and sent[0][2], (calls, sent))
calls, sent = run_deploy_hook(ok, "Update", props={"Schedule": "cron(0 3 * * ? *)"})
check("a cron schedule is not judged (only rate expressions are)", len(calls) == 1 and sent[0][0] == "SUCCESS", sent)
failed = lambda: {"FunctionError": "Unhandled", "Payload": _io.BytesIO(b'{"errorMessage": "KMS refused"}')}
calls, sent = run_deploy_hook(failed)
check("at create: a rotation that keeps failing (three tries) fails the create, saying why",
      len(calls) == 3 and len(sent) == 1 and sent[0][0] == "FAILED" and "KMS refused" in (sent[0][2] or ""), (calls, sent))
flaky = iter([failed, ok])
calls, sent = run_deploy_hook(lambda: next(flaky)())
check("at create: a first failure (a new role not yet in force) is tried again",
      len(calls) == 2 and sent == [("SUCCESS", {"Created": 3}, "the rotation failed: {'errorMessage': 'KMS refused'}")], (calls, sent))
calls, sent = run_deploy_hook(lambda: (_ for _ in ()).throw(RuntimeError("throttled")))
check("at create: an invocation that cannot be made fails the create", len(calls) == 3 and sent[0][0] == "FAILED", sent)
calls, sent = run_deploy_hook(failed, "Update")
check("at update (or rollback): a failed rotation is reported, the stack is never wedged",
      len(calls) == 1 and sent[0][0] == "SUCCESS" and "KMS refused" in (sent[0][2] or ""), (calls, sent))
calls, sent = run_deploy_hook(ok, "Delete")
check("at stack deletion: nothing runs, the deletion goes on", calls == [] and sent == [("SUCCESS", {}, None)], (calls, sent))
calls, sent = run_deploy_hook(ok, event={"RequestType": "Create"})
check("a malformed request still gets an answer", len(sent) == 1 and sent[0][0] == "FAILED", sent)
check("the custom resource's wait is bounded beyond its function's timeout",
      resources["RotateKeysAtDeploy"]["Properties"].get("ServiceTimeout", 3600)
      > resources["RotateKeysAtDeployFunction"]["Properties"]["Timeout"])

# Each memory parameter's description names exactly the functions it sizes.
for parameter in ("FunctionMemory", "HashingFunctionMemory"):
    sized = {BINARIES[n[: -len("Function")]] for n in rust_functions_all
             if resources[n]["Properties"].get("MemorySize") == {"Ref": parameter}}
    described = template["Parameters"][parameter]["Description"]
    named = {b for b in BINARIES.values() if re.search(rf"(?<![\w-]){re.escape(b)}(?![\w-])", described)}
    check(f"{parameter}'s description names the functions it sizes", named == sized, (sorted(named), sorted(sized)))

# The counts operations.md states, as the template has them (sealed mode:
# the default, and the larger).
operations = (root / "docs" / "operations.md").read_text()
stated = re.search(r"\*\*(\d+) functions\*\* \(the (\d+) of the API", operations)
rust_functions = [n for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
check("operations.md counts the functions and the API's", stated is not None
      and (int(stated.group(1)), int(stated.group(2))) == (len(rust_functions), len(api_routes and set(api_routes.values()))),
      (stated and stated.groups(), len(rust_functions), sorted(set(api_routes.values()))))
groups = [n for n, r in resources.items() if r["Type"] == "AWS::Logs::LogGroup"]
check("operations.md counts the log groups", f"{len(groups)} log groups in all" in operations
      and f"the {len(groups)} log groups" in operations, len(groups))

check("no NoEcho (no secret) parameters", not any(p.get("NoEcho") for p in template["Parameters"].values()))
text = (root / "template.yaml").read_text()
check("no secret references", "secretsmanager" not in text and "ssm-secure" not in text)
check("outputs", {"ApiUrl", "Issuer", "JwksUrl", "TableName"} <= set(template["Outputs"]), template["Outputs"].keys())

# A custom domain: with DomainName, the domain (the certificate's), its
# mapping to the $default stage and, with a hosted zone, the alias records;
# the domain is every function's issuer and the only origin (execute-api off).
# Without it, none of that, and JwtIssuer is the issuer. The rules refuse
# both or neither, and a domain without a certificate, before anything is made.
DOMAIN_ISSUER = {"Fn::Sub": "https://${DomainName}"}
for has_domain, has_zone in [(True, True), (True, False), (False, False)]:
    shape = decide(source, {"Sealed": True, "KmsMode": False, "HasDomain": has_domain, "HasHostedZone": has_zone})
    made = shape["Resources"]
    label = f"domain {has_domain}, zone {has_zone}"
    check(f"{label}: the domain's resources", ({"ApiDomain", "ApiMapping"} <= set(made)) == has_domain
          and ("ApiDnsRecords" in made) == has_zone, sorted(k for k in made if k.startswith("Api")))
    issuers = {name: r["Properties"]["Environment"]["Variables"].get("JWT_ISSUER")
               for name, r in made.items() if r["Type"] == "AWS::Serverless::Function"
               and "JWT_ISSUER" in r["Properties"].get("Environment", {}).get("Variables", {})}
    want = DOMAIN_ISSUER if has_domain else {"Ref": "JwtIssuer"}
    check(f"{label}: every function's issuer", len(issuers) == 12 and all(v == want for v in issuers.values()), issuers)
    check(f"{label}: execute-api off exactly with a domain",
          made["HttpApi"]["Properties"]["DisableExecuteApiEndpoint"] is has_domain)
    outputs = shape["Outputs"]
    check(f"{label}: ApiUrl is the issuer with a domain", (outputs["ApiUrl"]["Value"] == outputs["Issuer"]["Value"]
                                                            == DOMAIN_ISSUER) == has_domain, outputs["ApiUrl"])
    if has_domain:
        domain = made["ApiDomain"]["Properties"]
        check("the domain: regional, TLS 1.2, the certificate parameter", domain["DomainNameConfigurations"] == [
            {"CertificateArn": {"Ref": "CertificateArn"}, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"}])
        check("the mapping: the $default stage at the domain's root", made["ApiMapping"]["Properties"] == {
            "ApiId": {"Ref": "HttpApi"}, "DomainName": {"Ref": "ApiDomain"},
            "Stage": {"Ref": "HttpApiApiGatewayDefaultStage"}})
    if has_zone:
        records = made["ApiDnsRecords"]["Properties"]["RecordSets"]
        check("the alias record: A to the domain", sorted(r["Type"] for r in records) == ["A"]
              and all(r["AliasTarget"]["DNSName"] == {"Fn::GetAtt": ["ApiDomain", "RegionalDomainName"]}
                      for r in records))
# An alarm that sums several series fills each with 0: in CloudWatch's
# metric math a sum is empty where one series has no data point (an idle
# function, KMS in sealed mode), and the alarm would never see the others.
for name, alarm in source["Resources"].items():
    if alarm["Type"] != "AWS::CloudWatch::Alarm" or "Metrics" not in alarm["Properties"]:
        continue
    metrics = alarm["Properties"]["Metrics"]
    expression = next(m["Expression"] for m in metrics if m.get("ReturnData"))
    series = [m["Id"] for m in metrics if "MetricStat" in m]
    if "+" in expression:
        check(f"{name}: each summed series is filled with 0",
              all(f"FILL({s}, 0)" in expression for s in series), expression)
rules = source.get("Rules", {})
check("rules: exactly one of JwtIssuer and DomainName; a domain needs a certificate; no domain settings alone",
      {"IssuerOrDomain", "DomainNeedsCertificate", "NoDomainSettingsWithoutDomain"} <= set(rules), sorted(rules))

# Roles as scopes (docs/clients.md): the authorizer snippet's scopes are roles
# the deployment knows, and its events are the admin API's, in the template.
clients = (root / "docs" / "clients.md").read_text()
snippet = re.search(r"```yaml\n(\s+Auth:\n\s+Authorizer: OurJwt\n\s+AuthorizationScopes: \[(\w+)\]\n)```", clients)
check("docs/clients.md shows the admin routes' authorizer with a scope", snippet is not None)
if snippet:
    roles = set(re.split(r"[ ,]+", template["Parameters"]["Roles"]["Default"]))
    check("the snippet's scope is a role the template knows", snippet.group(2) in roles | {"admin"}, snippet.group(2))
    admin_paths = {e["Properties"]["Path"] for e in functions["Admin"]["Properties"]["Events"].values()}
    check("the admin API's routes are the admin function's", admin_paths == {p for p in api_routes if p.startswith("/admin/")},
          sorted(admin_paths))
permissions_rs = (root / "shared" / "src" / "permissions.rs").read_text()
check("the role the admin API requires is the snippet's scope",
      snippet is not None and f'pub const ADMIN: &str = "{snippet.group(2)}";' in permissions_rs)

# The IAM table of docs/operations.md says what the template grants (typed by
# hand, so checked here: it once listed login without DeleteItem).
docs_rows = {}
for line in (root / "docs" / "operations.md").read_text().split("\n"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and cells[0] in BINARIES.values():
        docs_rows[cells[0]] = cells
check("docs/operations.md has an IAM row per function", set(docs_rows) == set(BINARIES.values()), sorted(docs_rows))
for name, binary in BINARIES.items():
    if binary not in docs_rows:
        continue
    _, dynamodb, kms = docs_rows[binary]
    both = [grant for mode in MODES for grant in EXPECTED[mode].get(name, [])]
    granted = {a.split(":")[1] for actions, resource in both
               if resource == "UsersTable.Arn" or resource == SESSIONS_INDEX[1] for a in actions}
    written = set() if dynamodb in ("–", "-") else {a.strip().split()[0] for a in dynamodb.split(",")}
    check(f"docs/operations.md IAM row {binary}: DynamoDB", written == granted, f"docs {sorted(written)}, template {sorted(granted)}")
    kms_written = {k for k in ("Sign", "GetPublicKey", "Decrypt", "Encrypt") if k in kms}
    kms_granted = {k for k, grant in (("Sign", SIGN), ("GetPublicKey", PUBLIC_KEY), ("Decrypt", DECRYPT), ("Encrypt", ENCRYPT))
                   if grant in both}
    check(f"docs/operations.md IAM row {binary}: KMS", kms_written == kms_granted, f"docs {kms_written}, template {kms_granted}")

for failure in failures:
    print(f"FAIL {failure}")
print(f"{checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
