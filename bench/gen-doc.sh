#!/usr/bin/env bash
# Prints a state document with one backend (web-1 = the lab's vm1) and N
# services: N-1 on VIPs 203.0.113.1-250 and ports 1000.., plus
# 203.0.113.10:80/tcp. Used by the benchmarks.
#   bench/gen-doc.sh N [EXTRA_SERVICE_JSON]
set -euo pipefail
n=$1
extra=${2:-}
backend='{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}'
target='{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":8080}]}'
awk -v n="$((n - 1))" -v backend="$backend" -v target="$target" -v extra="$extra" 'BEGIN {
  printf "{\"version\":1,\"backends\":[%s],\"services\":[", backend
  for (i = 0; i < n; i++)
    printf "{\"vip\":\"203.0.113.%d\",\"port\":%d,\"protocol\":\"tcp\",\"backends\":[{\"name\":\"web-1\",\"port\":8080}]},", i % 250 + 1, 1000 + int(i / 250)
  printf "%s%s]}\n", target, (extra == "" ? "" : "," extra)
}'
