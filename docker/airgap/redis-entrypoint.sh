#!/bin/sh
# The official redis image's entrypoint contract on Debian's Redis: options (or a .conf file) alone mean
# `redis-server` with them; as root, the working folder (/data) goes to the redis user and the server drops to it;
# umask 0077 unless another than 0022 is set. Without a config file, protected mode is off, as the official image
# compiles it: Redis then answers the other containers of its network, which is all it is reachable from
# (docker-compose.yml does not publish it); Debian's build would refuse every client but loopback.
set -eu
case "${1:-}" in
  -* | *.conf) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
if [ "${1:-}" = redis-server ]; then
  [ "$(umask)" != 0022 ] || umask 0077
  case "${2:-}" in
    *.conf) ;;
    *) shift && set -- redis-server --protected-mode no "$@" ;;
  esac
fi
exec "$@"
