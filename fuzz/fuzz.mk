# Fuzzing, sanitizers and coverage (fuzz/README.md, docs/fuzzing.md).
# Included by the Makefile; every target here is driven by scripts/fuzz.sh and
# scripts/sanitize.sh, which `make check` also calls.
#
#   make fuzz            each harness for FUZZ_SECONDS (default 180); the corpus grows
#                        in fuzz/corpus/<harness>/, crashes are minimised into
#                        fuzz/regressions/<harness>/
#   make fuzz-smoke      every harness briefly from the seeds, and the regressions replayed
#   make sanitize        the C-touching busted suites on an ASan+UBSan build (build/asan)
#   make coverage        line coverage of csrc/ from the specs plus the fuzz corpus
#   make fuzz-build      only build the harnesses (build/fuzz/bin/)

FUZZ_CC        ?= clang
FUZZ_BUILD     ?= build/fuzz
FUZZ_SECONDS   ?= 180
FUZZ_SMOKE_SECONDS ?= 7
FUZZ_HARNESSES  = prepare encode money ids headers utf8 derive decode curl
FUZZ_LUA_HARNESSES = $(filter-out curl,$(FUZZ_HARNESSES))

FUZZ_LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null)
FUZZ_LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
FUZZ_CURL_CFLAGS := $(shell pkg-config --cflags libcurl 2>/dev/null)
FUZZ_CURL_LIBS  := $(shell pkg-config --libs libcurl 2>/dev/null || echo -lcurl)
FUZZ_UUID_LIBS  := $(shell pkg-config --libs uuid 2>/dev/null || echo -luuid)

FUZZ_SAN    = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_WARN   = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
FUZZ_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 $(FUZZ_WARN) $(FUZZ_SAN)

# The modules' sources as the Makefile lists them (CORE_SRC, CURL_SRC, FS_SRC),
# so a file added to a module is fuzzed, sanitized and measured too.
FUZZ_CORE_SRC = $(if $(CORE_SRC),$(CORE_SRC),$(sort $(wildcard csrc/core*.c)) csrc/strbuf.c)
FUZZ_CURL_SRC = $(if $(CURL_SRC),$(CURL_SRC),$(sort $(wildcard csrc/curl*.c)) csrc/strbuf.c)
FUZZ_FS_SRC   = $(if $(FS_SRC),$(FS_SRC),csrc/fs.c)
FUZZ_HDRS     = $(wildcard csrc/*.h)
FUZZ_CORE_OBJ = $(patsubst csrc/%.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_CORE_SRC))
FUZZ_CURL_OBJ = $(patsubst csrc/%.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_CURL_SRC))
FUZZ_BINS     = $(patsubst %,$(FUZZ_BUILD)/bin/fuzz_%,$(FUZZ_HARNESSES))

# Keep the objects make would otherwise delete as intermediates.
.SECONDARY: $(FUZZ_CORE_OBJ) $(FUZZ_CURL_OBJ) $(patsubst %,$(FUZZ_BUILD)/obj/lua_harness_%.o,$(FUZZ_LUA_HARNESSES))

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-seeds fuzz-replay sanitize sanitize-build coverage coverage-build

# The code under test: instrumented for libFuzzer (no main) and the sanitizers.
$(FUZZ_BUILD)/obj/%.o: csrc/%.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(FUZZ_LUA_CFLAGS) $(FUZZ_CURL_CFLAGS) -c -o $@ $<

$(FUZZ_BUILD)/obj/lua_harness_%.o: fuzz/harness/lua_harness.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_LUA_CFLAGS) -DFUZZ_TARGET='"$*"' \
	  -DFUZZ_HOME_DEFAULT='"$(CURDIR)"' -c -o $@ $<

$(FUZZ_BUILD)/bin/fuzz_curl: fuzz/harness/curl_harness.c $(FUZZ_CURL_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $(FUZZ_LUA_CFLAGS) $(FUZZ_CURL_CFLAGS) -Icsrc -o $@ \
	  fuzz/harness/curl_harness.c $(FUZZ_CURL_OBJ) $(FUZZ_CURL_LIBS) $(FUZZ_LUA_LIBS) -lm

# --wrap=realloc: the harness can make the core's allocations fail (lua_harness.c).
$(FUZZ_BUILD)/bin/fuzz_%: $(FUZZ_BUILD)/obj/lua_harness_%.o $(FUZZ_CORE_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Wl,--wrap=realloc -o $@ $^ $(FUZZ_LUA_LIBS) $(FUZZ_UUID_LIBS) -lm

fuzz-build: $(FUZZ_BINS)

# Seeds and dictionaries, written from lua/endaoment/partner/schema.lua.
fuzz-seeds: build
	@rm -rf $(FUZZ_BUILD)/seeds $(FUZZ_BUILD)/dict
	@LUA_CPATH="./build/lua5.4/?.so;;" lua5.4 fuzz/gen_seeds.lua $(FUZZ_BUILD)

fuzz: fuzz-build fuzz-seeds
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh scripts/fuzz.sh run $(FUZZ_ONLY)

fuzz-smoke: fuzz-build fuzz-seeds
	@FUZZ_SMOKE_SECONDS=$(FUZZ_SMOKE_SECONDS) sh scripts/fuzz.sh smoke; a=$$?; \
	  sh scripts/fuzz.sh replay; b=$$?; [ $$a -eq 0 ] && [ $$b -eq 0 ]

fuzz-replay: fuzz-build
	@sh scripts/fuzz.sh replay

# ---- ASan + UBSan build of the three modules, for the busted suites ----

ASAN_BUILD ?= build/asan
ASAN_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -g -O1 $(FUZZ_WARN) $(FUZZ_SAN)
ASAN_SOS = $(ASAN_BUILD)/endaoment/partner/core.so $(ASAN_BUILD)/endaoment/partner/fs.so \
  $(ASAN_BUILD)/endaoment/partner/curl.so

# The modules leave the sanitizer runtime's symbols undefined: the interpreter
# below carries the runtime (fuzz/harness/asan_lua.c says why not LD_PRELOAD).
$(ASAN_BUILD)/bin/lua5.4: fuzz/harness/asan_lua.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_LUA_CFLAGS) -o $@ $< $(FUZZ_LUA_LIBS) -lm

$(ASAN_BUILD)/endaoment/partner/core.so: $(FUZZ_CORE_SRC) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ASAN_CFLAGS) $(FUZZ_LUA_CFLAGS) -shared -o $@ $(FUZZ_CORE_SRC) $(FUZZ_UUID_LIBS)

$(ASAN_BUILD)/endaoment/partner/fs.so: $(FUZZ_FS_SRC) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ASAN_CFLAGS) $(FUZZ_LUA_CFLAGS) -shared -o $@ $(FUZZ_FS_SRC)

$(ASAN_BUILD)/endaoment/partner/curl.so: $(FUZZ_CURL_SRC) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(ASAN_CFLAGS) $(FUZZ_LUA_CFLAGS) $(FUZZ_CURL_CFLAGS) -shared -o $@ \
	  $(FUZZ_CURL_SRC) $(FUZZ_CURL_LIBS)

sanitize-build: $(ASAN_SOS) $(ASAN_BUILD)/bin/lua5.4

sanitize: sanitize-build
	@sh scripts/sanitize.sh

# ---- coverage: gcc --coverage, the specs plus the fuzz corpus ----

COV_BUILD ?= build/coverage

coverage: build fuzz-seeds
	@sh scripts/fuzz.sh coverage

# The same sources, gcc --coverage -O0, into $(COV_BUILD): the three modules
# (for the specs) and the harnesses with fuzz/harness/standalone.c as main
# (for the corpus). Objects are shared, so both feed one .gcda per source.
COV_CC     ?= gcc
COV_CFLAGS  = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden -O0 -g --coverage $(FUZZ_WARN)
COV_OBJ_CORE = $(patsubst csrc/%.c,$(COV_BUILD)/obj/%.o,$(FUZZ_CORE_SRC))
COV_OBJ_CURL = $(patsubst csrc/%.c,$(COV_BUILD)/obj/%.o,$(FUZZ_CURL_SRC))
COV_BINS     = $(patsubst %,$(COV_BUILD)/bin/fuzz_%,$(FUZZ_HARNESSES))
COV_OBJ_FS   = $(patsubst csrc/%.c,$(COV_BUILD)/obj/%.o,$(FUZZ_FS_SRC))
COV_SOS      = $(COV_BUILD)/endaoment/partner/core.so $(COV_BUILD)/endaoment/partner/curl.so \
  $(COV_BUILD)/endaoment/partner/fs.so

.SECONDARY: $(COV_OBJ_CORE) $(COV_OBJ_CURL) $(COV_OBJ_FS)

$(COV_BUILD)/obj/%.o: csrc/%.c $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(COV_CC) $(COV_CFLAGS) $(FUZZ_LUA_CFLAGS) $(FUZZ_CURL_CFLAGS) -c -o $@ $<

$(COV_BUILD)/endaoment/partner/core.so: $(COV_OBJ_CORE)
	@mkdir -p $(dir $@)
	$(COV_CC) --coverage -shared -o $@ $^ $(FUZZ_UUID_LIBS)

$(COV_BUILD)/endaoment/partner/curl.so: $(COV_OBJ_CURL)
	@mkdir -p $(dir $@)
	$(COV_CC) --coverage -shared -o $@ $^ $(FUZZ_CURL_LIBS)

$(COV_BUILD)/endaoment/partner/fs.so: $(COV_OBJ_FS)
	@mkdir -p $(dir $@)
	$(COV_CC) --coverage -shared -o $@ $^

$(COV_BUILD)/bin/fuzz_curl: fuzz/harness/curl_harness.c fuzz/harness/standalone.c $(COV_OBJ_CURL)
	@mkdir -p $(dir $@)
	$(COV_CC) $(COV_CFLAGS) $(FUZZ_LUA_CFLAGS) $(FUZZ_CURL_CFLAGS) -Icsrc -o $@ fuzz/harness/curl_harness.c \
	  fuzz/harness/standalone.c $(COV_OBJ_CURL) $(FUZZ_CURL_LIBS) $(FUZZ_LUA_LIBS) -lpthread -lm

$(COV_BUILD)/bin/fuzz_%: fuzz/harness/lua_harness.c fuzz/harness/standalone.c $(COV_OBJ_CORE)
	@mkdir -p $(dir $@)
	$(COV_CC) $(COV_CFLAGS) $(FUZZ_LUA_CFLAGS) -DFUZZ_TARGET='"$*"' -DFUZZ_HOME_DEFAULT='"$(CURDIR)"' -o $@ \
	  -Wl,--wrap=realloc fuzz/harness/lua_harness.c fuzz/harness/standalone.c $(COV_OBJ_CORE) $(FUZZ_LUA_LIBS) $(FUZZ_UUID_LIBS) -lm

coverage-build: $(COV_SOS) $(COV_BINS)
