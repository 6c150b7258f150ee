# endaoment-partner: build, test and demo entry points.
# `make check` and `make demo` install missing Debian packages first (as root).

LUA        ?= lua5.4
# Per-interpreter build tree so 5.4 and LuaJIT builds can sit side by side.
BUILD      ?= build/$(LUA)
PKG_CONFIG ?= pkg-config

ifeq ($(LUA),luajit)
LUA_PC ?= luajit
else
LUA_PC ?= $(LUA)
endif

LUA_CFLAGS  ?= $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)
CURL_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags libcurl 2>/dev/null)
CURL_LIBS   ?= $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
UUID_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags uuid 2>/dev/null)
UUID_LIBS   ?= $(shell $(PKG_CONFIG) --libs uuid 2>/dev/null || echo -luuid)

CC      ?= cc
WARN    ?= -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
XCFLAGS  = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(WARN)
LIBFLAG ?= -shared

# csrc/compat.c (the Lua version shims of compat.h) goes into every module.
CORE_SRC = $(sort $(wildcard csrc/core*.c)) csrc/strbuf.c csrc/compat.c
CURL_SRC = $(sort $(wildcard csrc/curl*.c)) csrc/strbuf.c csrc/compat.c
HDRS     = $(wildcard csrc/*.h)

FS_SRC   = csrc/fs.c csrc/compat.c

CORE_SO = $(BUILD)/endaoment/partner/core.so
FS_SO   = $(BUILD)/endaoment/partner/fs.so
CURL_SO = $(BUILD)/endaoment/partner/curl.so

BUSTED ?= /usr/bin/busted

# The release: csrc/core.h's EP_VERSION (core.version) is the one source of the version.
VERSION      := $(shell sed -n 's/^\#define EP_VERSION "\(.*\)"$$/\1/p' csrc/core.h)
ROCKSPEC_SCM  = rockspecs/endaoment-partner-scm-1.rockspec
ROCKSPEC_REL  = rockspecs/endaoment-partner-$(VERSION)-1.rockspec

# The package paths of this checkout, for Lua started anywhere (make env).
LUA_PATH_HERE  = $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;;
LUA_CPATH_HERE = $(CURDIR)/$(BUILD)/?.so;;

.PHONY: all build deps check test lint demo clean memcheck bench sandbox env rockspec rock release-check schema

all: build

build: $(CORE_SO) $(FS_SO) $(if $(wildcard csrc/curl*.c),$(CURL_SO))

$(CORE_SO): $(CORE_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) $(CFLAGS) $(LUA_CFLAGS) $(UUID_CFLAGS) $(LIBFLAG) -o $@ $(CORE_SRC) $(UUID_LIBS) $(LDFLAGS)

$(FS_SO): $(FS_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) $(CFLAGS) $(LUA_CFLAGS) $(LIBFLAG) -o $@ $(FS_SRC) $(LDFLAGS)

$(CURL_SO): $(CURL_SRC) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) $(CFLAGS) $(LUA_CFLAGS) $(CURL_CFLAGS) $(LIBFLAG) -o $@ $(CURL_SRC) $(CURL_LIBS) $(LDFLAGS)

deps:
	@sh scripts/deps.sh base

lint: deps
	luacheck --quiet $(wildcard lua bin spec examples bench types)

# Every suite, then one line "N passed, N failed" summed over them.
check: deps
	@$(MAKE) --no-print-directory build
	@LUA=$(LUA) BUILD=$(BUILD) BUSTED=$(BUSTED) sh scripts/check.sh

# Fast: build, then the Lua 5.4 suites only (no apt-get, no valgrind, no other interpreters).
# The OpenResty specs load the LuaJIT build: it is built too when LuaJIT's headers are there.
test:
	@$(MAKE) --no-print-directory build
	@if [ -f /usr/include/luajit-2.1/lua.h ]; then \
	  $(MAKE) --no-print-directory build LUA=luajit BUILD=build/luajit; fi
	LUA_PATH="./lua/?.lua;./lua/?/init.lua;./?.lua;;" LUA_CPATH="./$(BUILD)/?.so;;" \
	  $(LUA) $(BUSTED) --ignore-lua spec

# `eval "$$(make -s env)"`: LUA_PATH and LUA_CPATH for this checkout, as absolute
# paths, so Lua finds the SDK from any directory (build it first: make).
env:
	@[ -f "$(BUILD)/endaoment/partner/core.so" ] || echo "make env: $(BUILD) is not built yet: run make" >&2
	@echo "export LUA_PATH='$(LUA_PATH_HERE)'"
	@echo "export LUA_CPATH='$(LUA_CPATH_HERE)'"

# The release rockspec, made from the scm-1 one (same modules; version and git tag changed).
rockspec:
	$(LUA) scripts/rockspec.lua $(VERSION) > $(ROCKSPEC_REL).tmp
	mv $(ROCKSPEC_REL).tmp $(ROCKSPEC_REL)

# A source rock of this tree, packed offline from a clean copy: build/rocks/*.src.rock.
rock:
	@LUA=$(LUA) sh scripts/release-check.sh pack build/rocks

# Lint both rockspecs, pack the source rock, install it for Lua 5.1, 5.3, 5.4 and LuaJIT
# in scratch trees and load it from outside the checkout (also part of make check).
release-check: deps
	@LUA=$(LUA) sh scripts/release-check.sh

sandbox: deps
	$(LUA) bin/endaoment-sandbox --port 8787

demo: deps
	@$(MAKE) --no-print-directory build
	@sh scripts/demo.sh

# The specs that run our C code, under valgrind: zero errors, zero definite leaks.
# (Servers the specs start are separate processes and are not traced.)
MEMCHECK_SPECS ?= spec/core_spec.lua spec/core_decode_spec.lua spec/curl_transport_spec.lua spec/partner_retry_spec.lua \
  spec/partner_client_spec.lua spec/async_spec.lua spec/fs_spec.lua spec/derive_key_spec.lua \
  spec/journey_store_spec.lua spec/honest_sends_spec.lua spec/net_spec.lua spec/event_loop_spec.lua \
  spec/proxy_http2_spec.lua
memcheck: deps
	@sh scripts/deps.sh memcheck
	@$(MAKE) --no-print-directory build
	LUA_PATH="./lua/?.lua;./lua/?/init.lua;./?.lua;;" LUA_CPATH="./$(BUILD)/?.so;;" \
	valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=1 \
	  $(LUA) $(BUSTED) --ignore-lua $(MEMCHECK_SPECS)

# A benchmark, not a test: prints each figure as a ratio against a reference
# measured in the same run (bench/README.md).
bench: deps
	@sh scripts/deps.sh bench
	@$(MAKE) --no-print-directory build
	@LUA=$(LUA) BUILD=$(BUILD) sh bench/run.sh

# Regenerates csrc/core_schema.h and the schema blocks of docs/ from
# lua/endaoment/partner/schema.lua (make check fails when they are stale).
schema:
	lua5.4 scripts/gen_schema.lua

clean:
	rm -rf build

include fuzz/fuzz.mk
