# Sourced by the lab scripts. delete_namespaces PREFIX ROLES: ends the
# processes in, and deletes, the namespaces PREFIX-ROLE whose ROLE matches
# the extended regex ROLES (only those: other namespaces are left alone).
delete_namespaces() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^$1-($2)$" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns"
  done
}
