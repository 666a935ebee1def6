// The files provisioning tools write: the daemon's settings
// (/etc/hostlb/hostlbd.conf, "key = value" lines) and the desired state as
// fragments (/etc/hostlb/services.d/*.json) merged in name order. Pure:
// the caller reads the files.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "hostlb/policies/model.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

// hostlbd's settings; an unset field keeps the built-in default (a flag on
// the command line wins over both).
struct DaemonSettings {
  std::optional<std::string> config;        // state document
  std::optional<std::string> services_dir;  // state fragments
  std::optional<std::string> socket;
  std::optional<std::string> socket_group;
  std::optional<std::string> state_dir;
  std::optional<std::string> log_level;
  std::optional<std::string> default_bridge;
  std::optional<std::string> host_name;
  std::optional<std::string> role;
  std::optional<std::string> client_interface;
  std::optional<std::string> fabric_interface;
  std::optional<std::string> gateway_mac;
  // Gateway role: JET's tracking maps and the warm-up of a drain.
  std::optional<uint32_t> track_timeout;
  std::optional<uint32_t> track_size;
  std::optional<uint32_t> drain_warmup;
  std::optional<std::string> gateway_datapath;  // "bpf" or "nft"
  std::optional<std::string> host_datapath;     // "nft" or "bpf"
  // Host role: chaining.
  std::optional<std::string> chain_uplink;
  std::optional<std::string> chain_gateways;
  std::optional<uint32_t> chain_window;
  std::optional<std::string> ct_mark_mask;
  std::optional<std::string> refuse_policy;
  std::optional<uint32_t> refuse_seconds;
  std::optional<std::string> miss_policy;
  std::optional<uint32_t> embryonic_timeout;
  std::optional<uint32_t> service_new_rate;
  std::optional<uint32_t> service_new_burst;
  std::optional<std::string> metrics_file;
  std::optional<uint32_t> metrics_interval;
  std::optional<uint32_t> event_queue_kb;
  std::optional<bool> manage_sysctls;
  std::optional<bool> tracking;
  // The addresses health probes leave from.
  std::optional<std::string> health_source_ipv4;
  std::optional<std::string> health_source_ipv6;
  // The fleet in etcd: endpoints (comma-separated URLs), key prefix, TLS.
  std::optional<std::string> etcd_endpoints;
  std::optional<std::string> etcd_prefix;
  std::optional<std::string> etcd_ca_file;
  std::optional<std::string> etcd_cert_file;
  std::optional<std::string> etcd_key_file;
};

// Parses the settings file: one "key = value" a line, '#' starts a
// comment, blank lines ignored. Unknown or repeated keys and bad values are
// errors whose path is "line N: key". Throws DocumentError.
DaemonSettings parse_daemon_settings(std::string_view text);

// "MAC,MAC,..." (spaces around the commas allowed), for chain_gateways and
// --chain-gateways. Throws DocumentError(path, ...) naming the item that is
// not a MAC.
std::set<MacAddress> parse_mac_list(std::string_view text, const std::string& path);

struct SourceFile {
  std::string name;  // shown in errors
  std::string text;
};

// Merges state documents in the given order into one state: backends and
// services of all files together, validated as one document (a service may
// use a backend another file defines). A name or service defined twice is
// an error naming both files; every error path starts with the file's
// name ("10-web.json: services[0].port"). Throws DocumentError.
State merge_state_files(const std::vector<SourceFile>& files, const DocumentOptions& options);

}  // namespace hostlb
