# Sourced by the bench scripts, with OUT set: installs missing tools and writes the static backend every
# proxy is measured against: one nginx serving 1 KiB, 64 KiB and 1 MiB files and /health on two loopback
# ports (so balancing is real), plus a self-signed certificate for the TLS listeners.

# install_missing TOOL...: the Debian packages behind the tools not on PATH.
install_missing() {
  local need=() pkgs=() tool
  for tool in "$@"; do command -v "$tool" >/dev/null || need+=("$tool"); done
  [ ${#need[@]} -eq 0 ] && return 0
  for tool in "${need[@]}"; do
    case $tool in clang) pkgs+=(clang lld zlib1g-dev);; h2load) pkgs+=(nghttp2-client);; cc) pkgs+=(gcc);; *) pkgs+=("$tool");; esac
  done
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# BENCH_PORT_BASE moves every port of a run (run.sh allocates its proxies' ports above it), so a second
# checkout can run a benchmark beside this one.
PORT_BASE=${BENCH_PORT_BASE:-18180}
B1=$((PORT_BASE + 1)); B2=$((PORT_BASE + 2))
# The backend's own TLS listener (HTTPS and HTTP/2 straight to nginx, the "direct" rows).
DIRECT_TLS=$((PORT_BASE + 11))
# write_backend: the files nginx serves, the certificate and nginx's configuration.
write_backend() {
  WEB=$OUT/www; mkdir -p "$WEB"; chmod 755 "$OUT" "$WEB"
  head -c 1024 /dev/urandom > "$WEB/1k"; head -c 65536 /dev/urandom > "$WEB/64k"; head -c 1048576 /dev/urandom > "$WEB/1m"
  echo ok > "$WEB/health"; chmod 644 "$WEB"/*
  # The certificate sits in its own directory: sidekick watches the directory of --cert for changes, and the
  # benchmarks write their outputs to $OUT.
  mkdir -p "$OUT/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>/dev/null
  cat > "$OUT/backend.conf" <<CONF
worker_processes 1; pid $OUT/backend.pid; error_log $OUT/backend.err; daemon on;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; sendfile on;
  server { listen 127.0.0.1:$B1; listen 127.0.0.1:$B2; root $WEB; }
  # nginx 1.22 leaves TLS 1.3 out of its default ssl_protocols: every TLS listener of the bench speaks 1.3 only.
  server { listen 127.0.0.1:$DIRECT_TLS ssl http2; ssl_protocols TLSv1.3;
    ssl_certificate $OUT/tls/cert.pem; ssl_certificate_key $OUT/tls/key.pem; root $WEB; } }
CONF
}

start_backend() { nginx -c "$OUT/backend.conf" -p "$OUT"; }
stop_backend() { [ -f "$OUT/backend.pid" ] && kill "$(cat "$OUT/backend.pid")" 2>/dev/null || true; }

# write_haproxy FILE [--threads N|default] [--servers "PORT..."] [--log] BIND...: HAProxy with the settings
# every benchmark compares sidekick against (keep-alive to the backend, least connections, a health check),
# one "bind" line per BIND argument. Defaults: one thread (callgrind and the older runs), both backend ports.
# --threads default writes no nbthread line, so HAProxy starts one thread per core as users run it.
# --log turns on HAProxy's access log (option httplog) to its stdout, which the caller redirects to a file:
# HAProxy has no file target of its own, and stdout needs no syslog daemon between it and the disk (HAProxy
# must then run in the foreground, -db).
write_haproxy() {
  local file=$1 threads=1 servers="$B1 $B2" log="" bind port n=0
  shift
  while [ $# -gt 0 ]; do
    case $1 in
      --threads) threads=$2; shift 2;;
      --servers) servers=$2; shift 2;;
      --log) log=1; shift;;
      *) break;;
    esac
  done
  {
    printf 'global\n  maxconn 4000\n'
    [ "$threads" != default ] && printf '  nbthread %s\n' "$threads"
    [ -n "$log" ] && printf '  log stdout format raw local0\n'
    printf 'defaults\n  mode http\n  timeout connect 10s\n  timeout client 60s\n'
    printf '  timeout server 60s\n  option http-keep-alive\n'
    [ -n "$log" ] && printf '  log global\n  option httplog\n'
    printf 'frontend fe\n'
    for bind in "$@"; do printf '  bind %s\n' "$bind"; done
    printf '  default_backend be\nbackend be\n  balance leastconn\n  option httpchk GET /health\n  http-reuse always\n'
    for port in $servers; do n=$((n + 1)); printf '  server b%s 127.0.0.1:%s check inter 5s\n' "$n" "$port"; done
  } > "$file"
}
