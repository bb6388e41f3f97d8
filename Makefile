# logdisk: `make run` and `make test` do everything on a fresh Debian machine (see README.md).
SHELL := /bin/bash
SIZE ?= 1G
STORE ?= ./data
MNT ?= ./mnt
CLI := node dist/src/cli/main.js

.PHONY: all deps build run stop test bench clean simulate teeth soak install uninstall man

all: build

# Debian packages (libfuse2, fuse, e2fsprogs, ...) and npm packages, each only when missing.
deps: node_modules/.installed
	@bash scripts/install-deps.sh test

# npm install, not npm ci: npm 11 rejects this lock file in `ci` over optional platform
# packages of msgpackr-extract it never recorded; install honours the lock all the same.
node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund
	@touch $@

build: deps
	npx tsc -p .
	@node scripts/build-native.mjs
	@chmod +x dist/src/cli/main.js

# Creates a store in ./data unless there is one (SIZE=1G by default) and mounts it at ./mnt.
run: build
	@if [ ! -f $(STORE)/store.json ]; then $(CLI) create $(STORE) --size $(SIZE); fi
	@if grep -qs " $$(realpath -m $(MNT)) fuse.logdisk " /proc/mounts; then \
		echo "$(STORE) is already mounted at $(MNT)"; \
	else \
		$(CLI) mount $(STORE) $(MNT); \
	fi
	@echo "next: mkfs.ext4 $(MNT)/current.img, then mount -o loop $(MNT)/current.img /some/dir (README.md walks through it); make stop unmounts"

stop:
	$(CLI) unmount $(MNT)

# logdisk on the system PATH (a wrapper in $(PREFIX)/bin running this checkout's dist/) and
# the systemd unit template logdisk@.service; mount -t fuse.logdisk and fstab lines then work.
PREFIX ?= /usr/local
UNITDIR ?= /etc/systemd/system
install: build
	PREFIX=$(PREFIX) UNITDIR=$(UNITDIR) DESTDIR=$(DESTDIR) bash scripts/install.sh

# The man page, generated from the command line's help text.
man: build
	node scripts/man.mjs

uninstall:
	PREFIX=$(PREFIX) UNITDIR=$(UNITDIR) DESTDIR=$(DESTDIR) bash scripts/install.sh uninstall

test: build
	node scripts/run-tests.mjs

# The deterministic simulation over many seeds (make test runs fixed ones): SEEDS=N [SEED=first].
simulate: build
	SEEDS=$(or $(SEEDS),200) node scripts/simulate.mjs

# Takes each data-loss fix back out in a copy of the engine and shows a simulation seed that fails (~90 s).
teeth: build
	SEEDS=$(or $(SEEDS),200) node scripts/sim-teeth.mjs

# Real kill -9 of a mounted daemon under fio with verify, background compaction and archiving,
# then remount, verify and e2fsck; CYCLES=N (default 200). Not part of make test.
soak: build
	@bash scripts/install-deps.sh test
	node scripts/soak.mjs

bench: build
	@bash scripts/install-deps.sh bench
	node bench/run.mjs
	node bench/snapshots.mjs
	node bench/trim.mjs
	node bench/archive-targets.mjs
	node bench/copies.mjs
	node bench/replication.mjs

clean:
	rm -rf dist build .tap
