# surge — one GNU Makefile, pkg-config for every library.
#   make            release build: build/surge
#   make test       ASan+UBSan build, unit tests, integration tests, fuzz corpus replay
#   make fuzz       libFuzzer targets with clang (build/fuzz/*)
#   make lint       clang-format check and banned functions
#   make bench-lb   load balancer benchmark against HAProxy and nginx (docs/benchmarks.md)
#   make bench-faults  surge lb under kill -9, reload storm, drain; health-check/metrics cost
#   make bench-gen  load generator benchmark: surge bench vs wrk (docs/benchmarks.md)
#   make bench-app  shop service benchmark: surge lb + 2 surge app vs static nginx (docs/benchmarks.md)
#   make bench-pg   the shop on SQLite vs PostgreSQL (primary + replica), and pgbench -S (docs/benchmarks.md)
#   make bench-redis  surge lb + 2 surge app on Redis drivers vs embedded drivers (docs/benchmarks.md)
#   make bench-spike  the Black Friday scenario (10x spike) through surge lb + 2 surge app
#   make bench-parse  HTTP parse cost per request: ours vs the old http-parser based one
#   make bench-abuse  surge app under a signup flood and 3,000 slow bodies, before and after
#   make soak       the worker chaos test at 100,000 jobs, embedded queue and Redis (release build)
#   make bench-jobs  surge worker vs BullMQ: jobs/s, enqueue-to-start, RSS (docs/benchmarks.md)
#   make bench-up   surge up: cold start, kill -9 replacement, rolling reloads under load
#   make bench-spike-up  the Black Friday scenario against surge up: the pool follows the spike
#   make run        starts surge on embedded defaults
#   make k8s-validate  deploy/k8s/*.yaml against the Kubernetes schemas (offline after the first run)
# Variables: SANITIZE=1 (ASan+UBSan), WERROR=1 (default under CI=true), CC=...

CC      ?= gcc
PKGS    := libuv libcjson inih sqlite3 libsodium libcurl libpq openssl
WERROR  ?= $(if $(CI),1,0)
SANITIZE ?= 0

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wold-style-definition -Wpointer-arith -Wcast-align -Wwrite-strings \
        -Wformat=2 -Wundef -Wvla -Wimplicit-fallthrough -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN += -Werror
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# hiredis: libraries only. Its pkg-config cflags put generic header names
# (async.h, read.h, sds.h) on the include path; we include <hiredis/...>.
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) hiredis 2>/dev/null) -lpthread -lm

CFLAGS_BASE := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g $(WARN) -Isrc $(PKG_CFLAGS)
ifeq ($(SANITIZE),1)
OUT     := build/asan
CFLAGS  := $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
LDFLAGS := -fsanitize=address,undefined
else
OUT     := build
CFLAGS  := $(CFLAGS_BASE) -O2
LDFLAGS :=
endif

LIB_SRCS := $(wildcard src/base/*.c src/net/*.c src/http/*.c src/lb/*.c src/bench/*.c \
              src/data/*.c src/jobs/*.c src/app/*.c src/scale/*.c)
# Generated C: web/dashboard.html embedded into the binary (scripts/embed.sh).
GEN_SRCS := build/gen/web_dashboard.c
LIB_SRCS += $(GEN_SRCS)
CMD_SRCS := $(wildcard src/cmd/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(OUT)/obj/%.o)
CMD_OBJS := $(CMD_SRCS:%.c=$(OUT)/obj/%.o)
UNIT_SRCS := $(wildcard tests/unit/*/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(OUT)/tests/%)
FUZZ_SRCS := $(wildcard fuzz/fuzz_*.c)

.PHONY: all deps test unit fuzz lint format bench-lb bench-edge bench-faults bench-gen bench-app bench-redis \
        bench-spike bench-parse bench-abuse bench-jobs bench-up bench-spike-up bench-pg soak run \
        k8s-validate clean
all: $(OUT)/surge

deps:
	@scripts/deps.sh build

$(OUT)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

build/gen/web_dashboard.c: web/dashboard.html scripts/embed.sh
	@mkdir -p $(@D)
	scripts/embed.sh dashboard_html scale/dashboard.h $< $@

$(OUT)/libsurge.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/surge: $(CMD_OBJS) $(OUT)/libsurge.a
	$(CC) $(LDFLAGS) -o $@ $(CMD_OBJS) $(OUT)/libsurge.a $(PKG_LIBS)

# Unit tests: one Criterion binary per tests/unit/<layer>/test_<module>.c
$(OUT)/tests/%: tests/unit/%.c $(OUT)/libsurge.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(OUT)/libsurge.a $(PKG_LIBS) $(shell pkg-config --libs criterion 2>/dev/null) $(LDFLAGS)

# Fuzz corpus replay: the fuzz targets linked with a plain file-reading driver.
$(OUT)/fuzz/replay_%: fuzz/fuzz_%.c fuzz/replay_main.c $(OUT)/libsurge.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< fuzz/replay_main.c $(OUT)/libsurge.a $(PKG_LIBS) $(LDFLAGS)

unit: $(UNIT_BINS)

# ThreadSanitizer build of the binary (clang): make test runs the
# multi-threaded integration test (tests/integration/test_lb_tsan.py) on it.
TSAN_CFLAGS := $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer -fsanitize=thread
build/tsan/surge: $(LIB_SRCS) $(CMD_SRCS) $(wildcard src/*/*.h)
	@mkdir -p $(@D)
	clang $(TSAN_CFLAGS) -o $@ $(LIB_SRCS) $(CMD_SRCS) $(PKG_LIBS)

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory build/tsan/surge
	@$(MAKE) --no-print-directory SANITIZE=1 build/asan/surge \
	    $(UNIT_SRCS:tests/unit/%.c=build/asan/tests/%) \
	    $(FUZZ_SRCS:fuzz/fuzz_%.c=build/asan/fuzz/replay_%)
	@scripts/run-tests.sh build/asan

# libFuzzer builds: our sources compiled with clang and coverage instrumentation.
# Run one with a scratch corpus first, so new inputs do not land in the repo:
#   build/fuzz/fuzz_http -max_total_time=300 build/fuzz/corpus fuzz/corpus/http
FUZZ_CFLAGS := $(CFLAGS_BASE) -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
fuzz: $(GEN_SRCS)
	@scripts/deps.sh fuzz
	@mkdir -p build/fuzz
	@for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
	  echo "clang $$n"; \
	  clang $(FUZZ_CFLAGS) -o build/fuzz/$$n $$f $(LIB_SRCS) $(PKG_LIBS) || exit 1; done

lint:
	@scripts/deps.sh lint
	@scripts/lint.sh

format:
	clang-format -i $$(git ls-files 'src/*.[ch]' 'tests/*.[ch]' 'fuzz/*.[ch]')

bench-lb: all
	@scripts/deps.sh bench
	@scripts/bench-lb.sh
	@scripts/bench-edge.sh
	@scripts/bench-access-log.sh

# TLS termination vs HAProxy, the response cache vs nginx proxy_cache, a
# thundering herd (also run by bench-lb).
bench-edge: all
	@scripts/deps.sh bench
	@scripts/bench-edge.sh

bench-faults: all
	@scripts/deps.sh bench
	@scripts/bench-faults.sh

bench-gen: all
	@scripts/deps.sh bench
	@scripts/bench-gen.sh

bench-pg: all
	@scripts/bench-pg.sh

bench-redis: all
	@scripts/deps.sh test
	@scripts/bench-redis.sh

bench-app: all
	@scripts/deps.sh bench
	@scripts/bench-app.sh

bench-spike: all
	@scripts/deps.sh bench
	@scripts/bench-spike.sh

# Parser micro-benchmark: bench/parse_bench.c against our src/http/http.c and
# against the http-parser based one of commit BENCH_PARSE_OLD, extracted from
# git into build/bench-parse/old (libhttp-parser-dev: deps.sh bench group).
BENCH_PARSE_OLD ?= 7eb67c6
BP := build/bench-parse
$(BP)/parse_new: bench/parse_bench.c src/http/http.c src/http/http.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_BASE) -O2 -o $@ bench/parse_bench.c src/http/http.c

$(BP)/old/src/http/http.c:
	@mkdir -p $(@D)
	git show $(BENCH_PARSE_OLD):src/http/http.h > $(@D)/http.h
	git show $(BENCH_PARSE_OLD):src/http/http.c > $@

$(BP)/parse_old: bench/parse_bench.c $(BP)/old/src/http/http.c
	$(CC) -I$(BP)/old/src $(CFLAGS_BASE) -O2 -o $@ bench/parse_bench.c $(BP)/old/src/http/http.c -lhttp_parser

bench-parse:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory $(BP)/parse_new $(BP)/parse_old
	@scripts/bench-parse.sh
bench-abuse: all
	@scripts/deps.sh bench
	@scripts/bench-abuse.sh
bench-spike-up: all
	@scripts/bench-spike-up.sh
bench-up: all
	@scripts/deps.sh build
	@scripts/bench-up.sh

bench-jobs: all
	@scripts/deps.sh bench-jobs
	@scripts/bench-jobs.sh

# 100,000 order confirmations, 3 workers, one killed -9 every 2 s: on the
# embedded queue, then on Redis Streams (the test's `queue` parameter).
# Then the stack across the simulated hosts with the FULL scenarios/blackfriday
# (2.5 min at up to 1000 req/s, 1 ms between hosts: test_hosts_stack.py).
soak: all
	@scripts/deps.sh test
	SURGE_BIN=$(CURDIR)/build/surge CHAOS_JOBS=100000 /usr/bin/python3 -m pytest -q -s \
	    -p no:cacheprovider tests/integration/test_worker_chaos.py
	SURGE_BIN=$(CURDIR)/build/surge SURGE_SOAK=1 /usr/bin/python3 -m pytest -q -s -rs \
	    -p no:cacheprovider tests/integration/test_hosts_stack.py

run:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory all
	@scripts/run.sh

k8s-validate:
	@scripts/k8s-validate.sh

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
