# The toll system as separate services, each the same `runner` binary with its
# own pipeline file (see pipelines/). Each service target runs in the
# foreground; `make stack` starts everything in the background (logs and pids
# in var/stack) and `make stop` stops it. Start order: kafka, aggregator,
# distance, receiver, gateway, then the OBUs.

RUNNER := target/release/runner
STACK := var/stack
SERVICES := aggregator distance receiver gateway obu

.PHONY: build tokens kafka receiver obu distance aggregator gateway stack stop

build:
	cargo build --release --bin runner

# A random gateway token in var/gateway-tokens, unless one exists.
tokens:
	@mkdir -p var
	@test -s var/gateway-tokens || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > var/gateway-tokens

# A local single-node Kafka broker on 127.0.0.1:39092 (data in var/kafka).
kafka:
	@mkdir -p var/kafka
	bash .ci/kafka.sh start var/kafka

receiver obu distance aggregator: build
	$(RUNNER) --pipeline pipelines/$@.toml

gateway: build tokens
	$(RUNNER) --pipeline pipelines/gateway.toml

stack: build tokens kafka
	@mkdir -p $(STACK)
	@for service in $(SERVICES); do \
		$(RUNNER) --pipeline pipelines/$$service.toml > $(STACK)/$$service.log 2>&1 & \
		echo $$! > $(STACK)/$$service.pid; \
		echo "started $$service (pid $$!, log $(STACK)/$$service.log)"; \
		sleep 1; \
	done

stop:
	@for service in obu gateway receiver distance aggregator; do \
		if [ -f $(STACK)/$$service.pid ]; then \
			kill -TERM $$(cat $(STACK)/$$service.pid) 2>/dev/null || true; \
			rm -f $(STACK)/$$service.pid; \
			echo "stopped $$service"; \
			sleep 1; \
		fi; \
	done
	-bash .ci/kafka.sh stop var/kafka
