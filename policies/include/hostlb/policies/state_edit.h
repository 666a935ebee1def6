// Edits of a State as the control commands express them. Each returns the
// new State (the input is untouched) or throws DocumentError naming the
// parameter at fault; the result still goes through the document validator
// as a whole (see validate_state), so cross-object rules hold.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "hostlb/policies/model.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {

// Parses one backend object (the "backends" element form); `path` prefixes
// error paths.
Backend parse_backend_object(const nlohmann::json& value, const std::string& path,
                             const DocumentOptions& options);
// Parses {"name": N, "port": P}.
BackendRef parse_backend_ref(const nlohmann::json& value, const std::string& path);
// Parses a "VIP:PORT/PROTO" string.
ServiceKey parse_service_key_param(const nlohmann::json& value, const std::string& path);

State add_backend(const State& state, const Backend& backend);
// Also detaches the backend from every service it serves.
State remove_backend(const State& state, const std::string& name);
State add_service(const State& state, const Service& service);
State remove_service(const State& state, const ServiceKey& key);
// Attaching an attached backend again with another port re-points it; with
// the same port it changes nothing.
State attach_backend(const State& state, const ServiceKey& key, const BackendRef& ref);
State detach_backend(const State& state, const ServiceKey& key, const std::string& name);

// Runs the whole-document validation on an edited state. Throws
// DocumentError.
void validate_state(const State& state);

// Human-readable difference, one line per change, "+" added, "-" removed:
//   + backend web-2 mac 02:00:00:00:01:12 ipv4 198.18.1.12 bridge br0
//   - service 203.0.113.10:80/tcp
//   + binding 203.0.113.10:80/tcp -> web-2:8080
std::vector<std::string> describe_changes(const State& before, const State& after);

}  // namespace hostlb
