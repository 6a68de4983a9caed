#!/usr/bin/env bash
# The Docker engine and arm64 emulation that `sam local invoke` needs, from Debian's packages.
#
#   tests/sam/engine.sh start    installs docker.io and qemu-user-static if missing (as root),
#                                registers qemu for arm64 binaries, and starts dockerd unless an
#                                engine already answers; says what it did
#   tests/sam/engine.sh stop     stops the dockerd that `start` started, and nothing else
#
# dockerd's log and pid go to target/dockerd.{log,pid}. Exit 0 when an engine answers and arm64
# binaries run; 1 with a reason otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
pidfile=target/dockerd.pid

case "${1:-}" in
  stop)
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.2; done
      rm -f "$pidfile"
      echo "engine: stopped the dockerd it started"
    fi
    exit 0
    ;;
  start) ;;
  *) echo "usage: tests/sam/engine.sh start|stop" >&2; exit 2 ;;
esac

mkdir -p target
if ! command -v dockerd >/dev/null || ! [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "engine: no dockerd or qemu-user-static here, and not root to install them"
    exit 1
  fi
  echo "engine: installing docker.io and qemu-user-static"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq docker.io qemu-user-static >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq docker.io qemu-user-static >/dev/null; }
fi

# arm64 binaries through qemu. The F flag opens the interpreter now, so it works inside
# containers, whose file systems do not have it.
if ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  cat /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
  echo "engine: registered qemu-aarch64 for arm64 binaries"
fi
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
  { echo "engine: qemu-aarch64 is registered without the F flag, so containers cannot run arm64"; exit 1; }

if docker info >/dev/null 2>&1; then
  echo "engine: a Docker engine already answers; using it"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "engine: no Docker engine answers, and not root to start one"; exit 1; }
dockerd >target/dockerd.log 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && { echo "engine: started dockerd (log in target/dockerd.log)"; exit 0; }
  kill -0 "$(cat "$pidfile")" 2>/dev/null || break
  sleep 0.5
done
tail -n 20 target/dockerd.log
echo "engine: dockerd did not come up"
exit 1
