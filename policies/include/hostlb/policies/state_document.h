// The state document (JSON) that describes a host's desired state, and its
// strict validation. Every error names the JSON path at fault and the reason,
// e.g. `backends[0].mac: "02:00:00:00:01:zz" is not a MAC address`.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "hostlb/policies/model.h"

namespace hostlb {

inline constexpr int kStateDocumentVersion = 1;

class DocumentError : public std::runtime_error {
 public:
  DocumentError(std::string path, std::string reason)
      : std::runtime_error(path.empty() ? reason : path + ": " + reason),
        path_(std::move(path)),
        reason_(std::move(reason)) {}
  const std::string& path() const { return path_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string path_;
  std::string reason_;
};

struct DocumentOptions {
  // Used for backends that do not name their bridge; empty means "required".
  std::string default_bridge;
};

// Parses JSON strictly (duplicate keys refused). Throws DocumentError.
nlohmann::json parse_json_strict(std::string_view text);

// Parses and validates a state document. Throws DocumentError.
State parse_state_document(std::string_view text, const DocumentOptions& options = {});
State state_from_json(const nlohmann::json& document, const DocumentOptions& options = {});
// parse_state_document's fast path: the State of a plainly valid document
// read in one pass without a JSON tree, or nullopt whenever anything is
// unusual or wrong (then the strict path decides and explains). Exposed for
// the tests that hold the two paths to the same answers.
std::optional<State> parse_state_document_fast(std::string_view text,
                                               const DocumentOptions& options = {});

// The canonical JSON form (stable key and element order as given).
nlohmann::ordered_json state_to_json(const State& state);
// The same for one element of "backends" or "services".
nlohmann::ordered_json backend_to_json(const Backend& backend);

// Parts of a document, for requests and records that carry one object:
// `path` prefixes error paths. One backend object (the "backends" element
// form); {"name": N, "port": P}; a "VIP:PORT/PROTO" string.
Backend parse_backend_object(const nlohmann::json& value, const std::string& path,
                             const DocumentOptions& options);
BackendRef parse_backend_ref(const nlohmann::json& value, const std::string& path);
ServiceKey parse_service_key_param(const nlohmann::json& value, const std::string& path);
nlohmann::ordered_json service_to_json(const Service& service);
// One "services" element, its backends looked up in `state`.
Service parse_service_object(const nlohmann::json& value, const std::string& path,
                             const State& state);
// A service's "health" object; `protocol` is the service's. Throws
// DocumentError.
HealthCheck parse_health_check(const nlohmann::json& value, const std::string& path,
                               Protocol protocol);
// The same rules for a check built otherwise (an edit).
void check_health_check(const HealthCheck& check, const std::string& path, Protocol protocol);
nlohmann::ordered_json health_check_to_json(const HealthCheck& check);

// Names of backends, and of bridges, as the kernel and the CLI accept them.
bool is_valid_backend_name(std::string_view name);
bool is_valid_interface_name(std::string_view name);
// A hypervisor's name as backends name it (the same form as a backend's).
bool is_valid_host_name(std::string_view name);

}  // namespace hostlb
