#!/usr/bin/env bash
# A vendor's view: install the SDK into a temporary prefix, build the sample
# plugin in examples/hello-plugin as its own meson project against that
# prefix only, run its tests, then have the real daemon load it.
# Usage: sdk_out_of_tree.sh BUILD_DIR SOURCE_DIR SWITCHBOARD_BINARY
set -euo pipefail
build=$1 src=$2 switchboard=$3
work=$(mktemp -d /tmp/sb-oot-XXXXXX)
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill -9 "$daemon_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "# install the SDK (headers + switchboard-sdk.pc) into $work/stage"
meson install -C "$build" --no-rebuild --destdir "$work/stage" --tags devel >/dev/null
pc=$(find "$work/stage" -name switchboard-sdk.pc)
[ -n "$pc" ] || fail "switchboard-sdk.pc was not installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
[ "$(pkg-config --variable=abi_major switchboard-sdk)" = 1 ] || fail "abi_major variable"
pkg-config --variable=plugindir switchboard-sdk | grep -q '/switchboard/plugins$' || fail "plugindir variable"
pkg-config --cflags switchboard-sdk | grep -q "$work/stage" || fail "cflags do not point into the staged prefix"
for h in plugin.h plugin.hpp testing.hpp detail/abi.hpp detail/record_data.hpp detail/path_pattern.hpp detail/json_record.hpp; do
  [ -n "$(find "$work/stage" -path "*/include/switchboard/$h")" ] || fail "header $h not installed"
done

echo "# build and test examples/hello-plugin against the staged SDK only"
cp -r "$src/examples/hello-plugin" "$work/hello-src"   # outside the source tree
meson setup "$work/hello" "$work/hello-src" >/dev/null
ninja -C "$work/hello" >/dev/null
meson test -C "$work/hello" --print-errorlogs >/dev/null || fail "the example's own tests failed"
module="$work/hello/hello-source.so"
[ -f "$module" ] || fail "hello-source.so was not built"
exported=$(nm -D --defined-only "$module" | awk '$2 == "T" {print $3}')
[ "$exported" = switchboard_plugin_descriptor ] || fail "module exports more than the entry point: $exported"

echo "# the daemon lists, validates and runs it"
"$switchboard" plugins --plugin-dir "$work/hello" | grep -q '^hello-source .* source  ABI 1\.4' \
  || fail "switchboard plugins does not list hello-source"
mkdir -p "$work/cfg"
cat > "$work/cfg/hello.toml" <<TOML
[node]
data_dir = "$work/data"
[http]
listen = "127.0.0.1:0"
[sources.hello]
plugin = "hello-source"
[sources.hello.config]
greeting = "Good morning"
every = "1s"
TOML
"$switchboard" check -c "$work/cfg/hello.toml" --plugin-dir "$work/hello" >/dev/null \
  || fail "switchboard check refused the config"
"$switchboard" run -c "$work/cfg/hello.toml" --plugin-dir "$work/hello" 2>"$work/log" &
daemon_pid=$!
for _ in $(seq 1 100); do
  grep -q 'core: ready' "$work/log" && break
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
grep -q 'started sources.hello (plugin hello-source)' "$work/log" || { cat "$work/log" >&2; fail "hello-source did not start"; }
grep -q 'core: ready' "$work/log" || { cat "$work/log" >&2; fail "daemon not ready"; }
kill -TERM "$daemon_pid"
for _ in $(seq 1 150); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
wait "$daemon_pid"; rc=$?; daemon_pid=
[ "$rc" = 0 ] || fail "daemon exited with $rc"

echo "# a full install has the command, the SDK and the pkg-config file"
meson install -C "$build" --no-rebuild --destdir "$work/full" >/dev/null
[ -n "$(find "$work/full" -path '*/bin/switchboard')" ] || fail "switchboard binary not installed"
[ -n "$(find "$work/full" -name switchboard-sdk.pc)" ] || fail "switchboard-sdk.pc not installed"
echo "ok: out-of-tree plugin built against the installed SDK and loaded by the daemon"
