# Two commands on a fresh Debian 12 machine:
#   make run    install what is missing, build, start the daemon on configs/default.toml
#   make test   install what is missing, build, run the whole test suite
BUILD ?= build

.PHONY: all deps build run test check install clean

all: build

deps:
	@scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# The demo: the feeds' CURVE keys made under var/keys/ when missing (before
# anything reads the config: it refers to them), sample contacts laid out as
# each vendor delivers them, the Landbot hooks posted once the node is ready.
# The departments are ZeroMQ feeds on 127.0.0.1:5601-5603 (watch one with
# switchboard-feed, see README.md); unclassified contacts go to var/departments/review.
run: export LANDBOT_HOOK_TOKEN ?= demo-landbot-hook-token
run: build
	python3 scripts/demo keys --switchboard ./$(BUILD)/core/switchboard
	python3 scripts/demo prepare
	python3 scripts/demo landbot --url http://127.0.0.1:8080 & \
	exec ./$(BUILD)/core/switchboard run -c configs/default.toml --plugin-dir $(BUILD)/plugins

check: build
	python3 scripts/demo keys --switchboard ./$(BUILD)/core/switchboard
	./$(BUILD)/core/switchboard check -c configs/default.toml --plugin-dir $(BUILD)/plugins

test: build
	scripts/run-tests $(BUILD)

install: build
	meson install -C $(BUILD)

clean:
	rm -rf $(BUILD)
