.PHONY: dev test stack deploy admin smoke bench bench-capacity bench-timing tools screenshot

# Installs what is missing, starts DynamoDB Local (data kept in .dev/), seeds a
# demo user and serves the functions on http://localhost:9000 until Ctrl-C.
dev:
	@scripts/dev.sh

# Lint and every test, against its own DynamoDB Local and watch on free ports.
test:
	@scripts/test.sh

# The deployable build, offline: sam validate --lint, sam build (release, arm64),
# and a check that each function's bootstrap is an aarch64 ELF. Takes minutes.
stack:
	@scripts/build-stack.sh

# make stack, then sam deploy --guided with the project's sam (in .tools/venv,
# on no shell's PATH), with your AWS credentials; ARGS="..." instead of --guided.
deploy: stack
	@scripts/deploy.sh $(ARGS)

# auth-admin against a deployed stack, its environment from the stack's
# outputs: make admin STACK=auth-lambda [REGION=eu-west-1] ARGS="grant alice admin".
admin:
	@scripts/admin.sh --stack "$(STACK)" $(if $(REGION),--region "$(REGION)") -- $(ARGS)

# After a deploy: one throwaway user's life through the real API, each step
# printed (docs/deploy.md): make smoke URL=https://auth.example.com
smoke:
	@scripts/tools.sh && .tools/venv/bin/python3 scripts/smoke.py "$(URL)"

# Every function on the production path (JSON logs, KMS, TLS) against a
# hello-world floor and beside the Flask peer: init, first and warm latency,
# RSS, zip sizes, login's own work, timing; written to docs/measured/bench.md,
# budgets enforced. Not a test. Takes ten minutes or more.
bench:
	@scripts/bench.sh

# CPU time per invocation of each route (release, in process), written to
# docs/measured/cpu.md for the capacity model. Not a test. Takes a minute or two.
bench-capacity:
	@scripts/bench-capacity.sh

# Login timing: unknown user, wrong password, and a wrong password of a hash
# below the configured cost; reset requests and wrong reset codes, whatever
# exists (medians within 3 ms). Not a test.
bench-timing:
	@scripts/bench-timing.sh

# The page's pictures in docs/images/, from make dev and headless Chromium.
screenshot:
	@scripts/screenshot.sh

tools:
	@scripts/tools.sh
