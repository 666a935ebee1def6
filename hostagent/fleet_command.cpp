#include "fleet_command.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "clock.h"
#include "event_loop.h"
#include "hostlb/policies/fleet.h"
#include "loop_io.h"

namespace hostlb {

using nlohmann::json;

namespace {

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitUnreachable = 3;

// One command's etcd calls, each waited for on a loop of its own.
class FleetSession {
 public:
  explicit FleetSession(const EtcdSettings& settings)
      : loop_(clock_), io_(loop_), http_(io_, settings.tls), etcd_(http_, settings) {
    io_.attach(&http_);
  }

  EtcdResult<etcd::RangeResponse> read(const std::string& key, const std::string& end) {
    return wait<etcd::RangeResponse>(
        [&](auto done) { etcd_.read_range(key, end, 0, std::move(done)); });
  }
  EtcdResult<etcd::TxnResponse> txn(const etcd::TxnRequest& request) {
    return wait<etcd::TxnResponse>([&](auto done) { etcd_.txn(request, std::move(done)); });
  }

 private:
  template <typename T, typename Start>
  EtcdResult<T> wait(Start start) {
    std::optional<EtcdResult<T>> out;
    start(std::function<void(EtcdResult<T>)>([&out](EtcdResult<T> r) { out = std::move(r); }));
    while (!out) loop_.run_once();
    return std::move(*out);
  }

  SystemClock clock_;
  EventLoop loop_;
  LoopIo io_;
  HttpClient http_;
  EtcdClient etcd_;
};

int failed(const char* command, const EtcdFailure& failure) {
  std::fprintf(stderr, "hostlbctl: fleet %s: %s\n", command, failure.message.c_str());
  return failure.unreachable ? kExitUnreachable : kExitRefused;
}

struct Current {
  FleetKeys keys;
  int64_t revision = 0;
};

std::optional<Current> read_current(FleetSession& session, const FleetLayout& layout,
                                    const char* command, int* rc) {
  auto read = session.read(layout.backends(), layout.desired_end());
  if (!read.ok()) {
    *rc = failed(command, read.failure);
    return std::nullopt;
  }
  Current out;
  out.revision = read.value->revision;
  for (auto& kv : read.value->kvs) out.keys.emplace(std::move(kv.key), std::move(kv.value));
  return out;
}

// The document checked whole, as a local apply checks it.
std::optional<State> parse_document(const FleetCommandSettings& settings,
                                    const std::string& document, const char* command) {
  try {
    return parse_state_document(document, settings.document);
  } catch (const DocumentError& e) {
    std::fprintf(stderr,
                 "hostlbctl: fleet %s: the document is refused, nothing was written: %s%s\n",
                 command, e.path().empty() ? "" : (e.path() + ": ").c_str(), e.reason().c_str());
    return std::nullopt;
  }
}

json changes_json(const FleetKeys& current, const FleetWrite& write) {
  json out = json::array();
  for (const auto& [key, value] : write.puts)
    out.push_back({{"key", key}, {"change", current.contains(key) ? "update" : "create"}});
  for (const auto& key : write.deletes) out.push_back({{"key", key}, {"change", "delete"}});
  return out;
}

void print_changes(const FleetKeys& current, const FleetWrite& write) {
  for (const auto& [key, value] : write.puts)
    std::printf("%c %s\n", current.contains(key) ? '~' : '+', key.c_str());
  for (const auto& key : write.deletes) std::printf("- %s\n", key.c_str());
}

// Plans the write of `document`; prints it; returns the session's state
// for the caller that writes.
struct Plan {
  Current current;
  FleetWrite write;
};

std::optional<Plan> plan(FleetSession& session, const FleetCommandSettings& settings,
                         const FleetLayout& layout, const std::string& document,
                         const char* command, int* rc) {
  auto desired = parse_document(settings, document, command);
  if (!desired) {
    *rc = kExitRefused;
    return std::nullopt;
  }
  auto current = read_current(session, layout, command, rc);
  if (!current) return std::nullopt;
  Plan out{std::move(*current), {}};
  out.write = plan_fleet_write(layout, out.current.keys, *desired);
  return out;
}

}  // namespace

int fleet_diff(const FleetCommandSettings& settings, const std::string& document) {
  FleetSession session(settings.etcd);
  const FleetLayout layout(settings.prefix);
  int rc = kExitOk;
  auto p = plan(session, settings, layout, document, "diff", &rc);
  if (!p) return rc;
  if (settings.as_json) {
    std::printf("%s\n", json{{"revision", p->current.revision},
                             {"changes", changes_json(p->current.keys, p->write)}}
                            .dump(2)
                            .c_str());
    return kExitOk;
  }
  print_changes(p->current.keys, p->write);
  std::printf("%zu keys to write, %zu to delete (fleet %s at revision %lld)\n",
              p->write.puts.size(), p->write.deletes.size(), layout.prefix().c_str(),
              static_cast<long long>(p->current.revision));
  return kExitOk;
}

int fleet_apply(const FleetCommandSettings& settings, const std::string& document, bool dry_run) {
  FleetSession session(settings.etcd);
  const FleetLayout layout(settings.prefix);
  int rc = kExitOk;
  auto p = plan(session, settings, layout, document, "apply", &rc);
  if (!p) return rc;
  const auto& [current, write] = *p;
  json out{{"revision", current.revision},
           {"puts", write.puts.size()},
           {"deletes", write.deletes.size()},
           {"dry_run", dry_run}};
  if (dry_run) {
    out["changes"] = changes_json(current.keys, write);
    if (settings.as_json) {
      std::printf("%s\n", out.dump(2).c_str());
    } else {
      print_changes(current.keys, write);
      std::printf("dry run: %zu keys would be written, %zu deleted; nothing was\n",
                  write.puts.size(), write.deletes.size());
    }
    return kExitOk;
  }
  if (write.empty()) {
    out["written_revision"] = nullptr;
    if (settings.as_json)
      std::printf("%s\n", out.dump(2).c_str());
    else
      std::printf("the fleet already holds this document (revision %lld); nothing written\n",
                  static_cast<long long>(current.revision));
    return kExitOk;
  }
  // One transaction, and only if no desired key was written since the
  // read: a concurrent writer's change is not overwritten unseen.
  etcd::TxnRequest txn;
  txn.compares.push_back({layout.backends(), layout.desired_end(), current.revision + 1});
  for (const auto& [key, value] : write.puts) txn.puts.push_back({key, value, 0, 0, 0});
  txn.deletes = write.deletes;
  auto result = session.txn(txn);
  if (!result.ok()) {
    if (result.failure.message.find("too many operations") != std::string::npos)
      std::fprintf(stderr,
                   "hostlbctl: fleet apply: etcd refuses a transaction of %zu operations: start "
                   "etcd with a larger --max-txn-ops (and --max-request-bytes); nothing was "
                   "written\n",
                   write.puts.size() + write.deletes.size());
    return failed("apply", result.failure);
  }
  if (!result.value->succeeded) {
    std::fprintf(stderr,
                 "hostlbctl: fleet apply: the fleet changed after revision %lld (another writer); "
                 "nothing was written; run it again\n",
                 static_cast<long long>(current.revision));
    return kExitRefused;
  }
  out["written_revision"] = result.value->revision;
  if (settings.as_json)
    std::printf("%s\n", out.dump(2).c_str());
  else
    std::printf("written at revision %lld: %zu keys put, %zu deleted\n",
                static_cast<long long>(result.value->revision), write.puts.size(),
                write.deletes.size());
  return kExitOk;
}

int fleet_status(const FleetCommandSettings& settings) {
  FleetSession session(settings.etcd);
  const FleetLayout layout(settings.prefix);
  int rc = kExitOk;
  auto current = read_current(session, layout, "status", &rc);
  if (!current) return rc;
  auto reports = session.read(layout.status(), etcd::prefix_end(layout.status()));
  if (!reports.ok()) return failed("status", reports.failure);
  const std::string digest = digest_text(fleet_digest(layout, current->keys));
  const FleetRead read = read_fleet(layout, current->keys, settings.document);
  const int64_t now = SystemClock().unix_seconds();

  auto members = session.read(layout.watchers(), etcd::prefix_end(layout.watchers()));
  if (!members.ok()) return failed("status", members.failure);
  json machines = json::array();
  std::set<std::string> reporting;
  for (const auto& kv : reports.value->kvs) {
    reporting.insert(kv.key.substr(layout.status().size()));
    json report = json::parse(kv.value, nullptr, false);
    if (report.is_discarded() || !report.is_object())
      report = {{"name", kv.key.substr(layout.status().size())}, {"unreadable", true}};
    report["converged"] = report.value("digest", std::string()) == digest &&
                          report.value("apply_error", json()).is_null();
    machines.push_back(std::move(report));
  }
  // A member without a report: its lease expired (the gateways count its
  // backends out).
  for (const auto& kv : members.value->kvs) {
    const std::string id = kv.key.substr(layout.watchers().size());  // ROLE/NAME
    if (reporting.count(id)) continue;
    const size_t slash = id.find('/');
    machines.push_back({{"role", id.substr(0, slash)},
                        {"name", slash == std::string::npos ? id : id.substr(slash + 1)},
                        {"expired", true},
                        {"converged", false}});
  }
  if (settings.as_json) {
    json errors = json::array();
    for (const auto& e : read.errors) errors.push_back({{"key", e.key}, {"reason", e.reason}});
    std::printf("%s\n", json{{"prefix", layout.prefix()},
                             {"revision", current->revision},
                             {"digest", digest},
                             {"backends", read.state.backends.size()},
                             {"services", read.state.services.size()},
                             {"bad_keys", errors},
                             {"machines", machines}}
                            .dump(2)
                            .c_str());
    return kExitOk;
  }
  std::printf("fleet %s at revision %lld: %zu backends, %zu services, digest %s\n",
              layout.prefix().c_str(), static_cast<long long>(current->revision),
              read.state.backends.size(), read.state.services.size(), digest.c_str());
  for (const auto& e : read.errors)
    std::printf("bad key %s: %s\n", e.key.c_str(), e.reason.c_str());
  std::printf("%-8s %-20s %-9s %-9s %-9s %-8s %s\n", "ROLE", "NAME", "APPLIED", "CONVERGED",
              "REPORTED", "BAD_KEYS", "ERROR");
  for (const auto& m : machines) {
    const auto text = [&](const char* field) {
      const json& v = m.value(field, json());
      return v.is_null() ? std::string("-") : v.is_string() ? v.get<std::string>() : v.dump();
    };
    const int64_t reported = m.value("reported_at", int64_t{0});
    std::string age = "-";
    if (m.value("expired", false))
      age = "expired";  // its lease: the machine is gone
    else if (reported > 0)
      age = std::to_string(std::max<int64_t>(0, now - reported)) + "s ago";
    std::printf("%-8s %-20s %-9s %-9s %-9s %-8s %s\n", text("role").c_str(), text("name").c_str(),
                text("revision").c_str(), m["converged"].get<bool>() ? "yes" : "no", age.c_str(),
                text("bad_keys").c_str(), text("apply_error").c_str());
  }
  if (machines.empty())
    std::printf("no machine reports (none follows this prefix, or none is up)\n");
  return kExitOk;
}

}  // namespace hostlb
