# The two commands of the README's quick start, plus the checks CI runs.
.PHONY: run test test-long lint bench bench-outbound clean

run:            ## the live local pipeline: Kafka, registry, Zipkin, connector, workers, simulated carrier, webhook
	@bash infra/bootstrap.sh
	.venv/bin/smsflow run $(ARGS)

test:           ## everything: lint, types, unit, integration (real local Kafka), e2e (real peers)
	@bash infra/bootstrap.sh
	.venv/bin/ruff check connectors streams smsflow devkit tests bench
	.venv/bin/ruff format --check connectors streams smsflow devkit tests bench
	.venv/bin/mypy connectors streams smsflow devkit
	.venv/bin/pytest -q -p no:cacheprovider -m "not long" --durations=20 $(PYTEST_ARGS)

test-long:      ## the scenarios that need minutes (long outages, flapping, soak): marked `long`
	@bash infra/bootstrap.sh
	.venv/bin/pytest -q -p no:cacheprovider -m long $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check connectors streams smsflow devkit tests bench && .venv/bin/ruff format --check connectors streams smsflow devkit tests bench && .venv/bin/mypy connectors streams smsflow devkit

bench:          ## end-to-end benchmark vs Kannel; results go to docs/BENCHMARKS.md by hand
	@bash infra/bootstrap.sh
	.venv/bin/python -m bench.e2e $(ARGS)

bench-outbound: ## outbound (MT) benchmark: POST /v1/messages vs Kannel's sendsms to the same SMSC; by hand to docs
	@bash infra/bootstrap.sh
	.venv/bin/python -m bench.bench_outbound $(ARGS)

clean:
	rm -rf .work
