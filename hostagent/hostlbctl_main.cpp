// hostlbctl: the command line for hostlbd's control socket. Every command is
// one JSON-RPC request; see hostlbctl(8) for the protocol and exit codes.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "doctor.h"
#include "fleet_command.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/netlink/routes.h"
#include "hostlb/netlink/sysctl.h"
#include "hostlb/netlink/system.h"
#include "hostlb/policies/config_files.h"
#include "hostlb/policies/control_protocol.h"
#include "hostlb/policies/control_requests.h"
#include "hostlb/policies/etcd_protocol.h"
#include "hostlb/policies/persisted_state.h"
#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"
#include "hostlb/version.h"
#include "state_store.h"

namespace {

using hostlb::DaemonSettings;
using hostlb::DocumentError;
using hostlb::fleet_apply;
using hostlb::fleet_diff;
using hostlb::fleet_status;
using hostlb::FleetCommandSettings;
using hostlb::parse_daemon_settings;
using nlohmann::json;
namespace etcd = hostlb::etcd;

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

struct Unreachable : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Connection {
 public:
  Connection(const std::string& path, int timeout_ms) : timeout_ms_(timeout_ms) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) throw UsageError("--socket: path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw Unreachable(std::string("socket: ") + std::strerror(errno));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw Unreachable("cannot reach hostlbd at " + path + ": " + std::strerror(errno));
  }
  ~Connection() { ::close(fd_); }

  hostlb::control::Response call(const std::string& method, const json& params) {
    return call(method, params, [](const json&) {});
  }

  // Notifications that come before the answer (parts of a long one) go to
  // `on_notification` line by line, as they arrive.
  // `document`: raw bytes sent after the request line (params announce them).
  hostlb::control::Response call(const std::string& method, const json& params,
                                 const std::function<void(const json&)>& on_notification,
                                 std::string_view document = {}) {
    // The daemon may have answered and closed before reading (it refuses
    // some peers at once): its answer is still worth reading.
    if (send_all(hostlb::control::encode_request(1, method, params))) send_all(document);
    std::string pending;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
    char buf[65536];
    for (;;) {
      for (size_t nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
        const std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        json message = json::parse(line, nullptr, false);
        if (hostlb::control::is_notification(message)) {
          on_notification(message);
          continue;
        }
        return hostlb::control::decode_response(line);
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      pollfd pfd{fd_, POLLIN, 0};
      if (left <= 0 || ::poll(&pfd, 1, static_cast<int>(left)) == 0)
        throw Unreachable("hostlbd did not answer within " + std::to_string(timeout_ms_) + " ms");
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Unreachable("hostlbd closed the connection without an answer");
      pending.append(buf, static_cast<size_t>(n));
    }
  }

 private:
  // False if the daemon closed the connection first.
  bool send_all(std::string_view bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EPIPE || errno == ECONNRESET) return false;
        throw Unreachable(std::string("sending the request: ") + std::strerror(errno));
      }
      done += static_cast<size_t>(n);
    }
    return true;
  }

  int fd_ = -1;
  int timeout_ms_;
};

std::string read_input(const std::string& file) {
  if (file == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) throw UsageError("cannot read " + file + ": " + std::strerror(errno));
  std::string text;
  struct stat st {};
  if (::fstat(::fileno(f), &st) == 0 && st.st_size > 0)
    text.reserve(static_cast<size_t>(st.st_size));  // one allocation for a large document
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw UsageError("cannot read " + file + ": " + std::strerror(errno));
  return text;
}

// "NAME:PORT" -> {"name": NAME, "port": PORT}; the daemon validates both.
json backend_ref(const std::string& text, const std::string& what) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    throw UsageError(what + " \"" + text + "\": expected NAME:PORT");
  const std::string port = text.substr(colon + 1);
  if (port.size() > 9 || port.find_first_not_of("0123456789") != std::string::npos)
    throw UsageError(what + " \"" + text + "\": the port must be a number");
  return {{"name", text.substr(0, colon)}, {"port", std::stol(port)}};
}

std::string cell(const json& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    std::printf("%s\n", out.c_str());
  };
  line(header);
  for (const auto& row : rows) line(row);
}

void print_changes(const json& result) {
  const auto& changes = result.at("changes");
  if (changes.empty()) {
    std::printf("no change\n");
  } else {
    for (const auto& c : changes) std::printf("%s\n", c.get<std::string>().c_str());
  }
  if (result.value("dry_run", false)) std::printf("(dry run: nothing was changed)\n");
  if (const size_t flushed = result.value("flushed", size_t{0}); flushed > 0)
    std::printf("flushed %zu connection%s\n", flushed, flushed == 1 ? "" : "s");
  if (const size_t draining = result.value("draining", size_t{0}); draining > 0)
    std::printf("%zu binding%s draining (no new connections; what is left is flushed at the end)\n",
                draining, draining == 1 ? "" : "s");
}

// "203.0.113.10:80/tcp 25s 3 conns" for each draining binding.
std::string draining_text(const json& list, bool with_backend) {
  std::string out;
  for (const auto& d : list) {
    if (!out.empty()) out += ", ";
    if (with_backend) out += cell(d["backend"]) + " on ";
    out += cell(d["service"]) + " " + cell(d["remaining_seconds"]) + "s left " +
           cell(d["connections"]) + " conns";
  }
  return out;
}

std::string duration_text(long seconds) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%ldd %02ld:%02ld:%02ld", seconds / 86400, seconds / 3600 % 24,
                seconds / 60 % 60, seconds % 60);
  return buf;
}

void print_status(const json& s) {
  std::printf("hostlbd %s, up %s\n", s.at("version").get<std::string>().c_str(),
              duration_text(s.at("uptime_seconds").get<long>()).c_str());
  std::printf("backends %zu, services %zu, bindings %zu\n", s.at("backends").get<size_t>(),
              s.at("services").get<size_t>(), s.at("bindings").get<size_t>());
  std::printf("state dir %s, socket %s, host name %s\n",
              s.at("state_dir").get<std::string>().c_str(),
              s.at("socket").get<std::string>().c_str(), s.value("host", "").c_str());
  if (s.value("role", "") == "gateway")
    std::printf("gateway %s -> %s, source MAC %s, datapath %s\n",
                cell(s.at("client_interface")).c_str(), cell(s.at("fabric_interface")).c_str(),
                cell(s.at("gateway_mac")).c_str(), cell(s.value("datapath", json())).c_str());
  std::printf("kernel prerequisites:\n");
  if (s.at("prerequisites").empty()) std::printf("  (none: no backends)\n");
  for (const auto& p : s.at("prerequisites"))
    std::printf("  %-4s %s: %s\n", p.at("ok").get<bool>() ? "ok" : "FAIL",
                p.at("check").get<std::string>().c_str(),
                p.at("detail").get<std::string>().c_str());
  if (!s.at("draining").empty())
    std::printf("draining: %s\n", draining_text(s.at("draining"), true).c_str());
  std::printf("refused keys (removed or draining bindings): %zu\n",
              s.at("refused_keys").get<size_t>());
  if (const auto c = s.value("chaining", json()); c.is_object())
    std::printf(
        "chaining on %s: %s services, %s rows chain to their previous owner now "
        "(window %ss), %s packets chained\n",
        cell(c.at("uplink")).c_str(), cell(c.at("services")).c_str(), cell(c.at("rows")).c_str(),
        cell(c.at("window")).c_str(), cell(c.at("chained")).c_str());
  if (const auto t = s.value("tracking", json()); t.is_object() && !t.value("enabled", true))
    std::printf("tracking: off (stateless selection only)\n");
  else if (t.is_object())
    std::printf(
        "tracking: %s flows (%.1f%% of rows tracked), %s added, %s failed (map full); drains "
        "warming %s, moved %s\n",
        cell(t.at("flows")).c_str(), 100.0 * t.at("tracked_row_fraction").get<double>(),
        cell(t.at("added")).c_str(), cell(t.at("failed")).c_str(),
        cell(t.at("drains_warming")).c_str(), cell(t.at("drains_moved")).c_str());
  if (const auto h = s.value("health", json()); h.is_object())
    std::printf("health checks: %s bindings, %s up, %s down, %s not yet checked; %s not serving\n",
                cell(h.at("checked")).c_str(), cell(h.at("up")).c_str(), cell(h.at("down")).c_str(),
                cell(h.at("unknown")).c_str(), cell(h.at("not_serving")).c_str());
  const auto& err = s.at("last_error");
  if (err.is_null())
    std::printf("last error: none\n");
  else
    std::printf("last error: %s %s\n", err.at("time").get<std::string>().c_str(),
                err.at("message").get<std::string>().c_str());
}

// The desired state: from the daemon if it answers, else from the
// snapshot in the state directory.
int run_doctor(const std::string& socket, int timeout_s, const std::string& state_dir,
               bool as_json) {
  using hostlb::Finding;
  hostlb::State state;
  std::string host = hostlb::system_host_name();
  bool daemon_reachable = false;
  std::optional<hostlb::AdmissionLimits> admission;
  hostlb::HostDatapathKind datapath = hostlb::HostDatapathKind::kNft;
  std::string daemon_detail, desired_source;
  try {
    Connection connection(socket, timeout_s * 1000);
    const auto status = connection.call("status", json::object());
    const auto got = connection.call("get", json::object());
    if (!status.ok || !got.ok)
      throw Unreachable("hostlbd refused: " + (status.ok ? got : status).error.message);
    state = hostlb::state_from_json(got.result);
    host = status.result.value("host", host);
    if (const auto a = status.result.value("admission", json()); a.is_object())
      admission =
          hostlb::AdmissionLimits{a.value("embryonic_timeout", 0u), a.value("service_new_rate", 0u),
                                  a.value("service_new_burst", 0u)};
    if (auto kind = hostlb::parse_host_datapath(status.result.value("datapath", "nft")))
      datapath = *kind;
    daemon_reachable = true;
    daemon_detail =
        "hostlbd " + status.result.at("version").get<std::string>() + " answers on " + socket;
    desired_source = "desired state from hostlbd";
  } catch (const std::exception& e) {
    daemon_detail = e.what();
    try {
      state = hostlb::persisted_state_from_text(hostlb::read_file(state_dir + "/state.json")).state;
      desired_source = "desired state from the snapshot in " + state_dir;
    } catch (const std::exception& e2) {
      desired_source = std::string("no desired state: ") + e2.what();
    }
  }
  const hostlb::MarkLayout marks(hostlb::MarkLayout::kDefaultMask);
  const hostlb::Datapath desired = hostlb::compile_datapath(state, {}, marks, host);
  auto routes = hostlb::make_libnl_route_table();
  auto sysctls = hostlb::make_procfs_sysctls();
  auto nft = hostlb::make_kernel_ruleset();
  // libbpf's own complaints (a port without a clsact qdisc) are not findings.
  hostlb::send_bpf_library_messages_to(nullptr);
  hostlb::HostFacts facts = hostlb::gather_facts(desired, *routes, *sysctls, *nft);
  facts.daemon_reachable = daemon_reachable;
  facts.admission = admission;
  facts.datapath = datapath;
  facts.daemon_detail = daemon_detail;
  facts.desired_source = desired_source;
  const auto findings = hostlb::diagnose(desired, facts);
  bool failed = false;
  json out = json::array();
  for (const auto& f : findings) {
    const char* level = f.level == Finding::Level::kPass   ? "pass"
                        : f.level == Finding::Level::kWarn ? "warn"
                                                           : "fail";
    failed |= f.level == Finding::Level::kFail;
    if (as_json) {
      out.push_back({{"level", level}, {"check", f.check}, {"detail", f.detail}, {"fix", f.fix}});
      continue;
    }
    std::printf("%-4s %s: %s%s\n", level, f.check.c_str(), f.detail.c_str(),
                f.fix.empty() ? "" : ("\n     fix: " + f.fix).c_str());
  }
  if (as_json) std::printf("%s\n", out.dump(2).c_str());
  return failed ? kExitRefused : kExitOk;
}

// What the command line asks for: one request, and how to print its answer.
struct Invocation {
  std::string method;
  json params = json::object();
  std::string document;  // sent raw after the request line
  std::function<void(const json&)> print = print_changes;
  std::function<void(const json&)> on_batch = [](const json&) {};
  std::function<int()> local;  // a command that is not one request (doctor)
};

struct GlobalOptions {
  std::string socket = "/run/hostlb/hostlbd.sock";
  bool as_json = false;
  int timeout_s = 60;
};

// Each command keeps its option values in storage its callback owns: CLI11
// writes them during parsing, the callback turns them into the request.
template <typename T>
std::shared_ptr<T> storage() {
  return std::make_shared<T>();
}

void add_drain_option(CLI::App* cmd, uint32_t& drain) {
  cmd->add_option("--drain", drain,
                  "Seconds the removed bindings' established connections may continue "
                  "(new ones are refused); what is left is flushed at the end. "
                  "Default 0: flush at once")
      ->check(CLI::Range(0u, hostlb::control::kMaxDrainSeconds));
}

json with_drain(json params, uint32_t drain) {
  if (drain > 0) params["drain"] = drain;
  return params;
}

void print_json(const json& r) { std::printf("%s\n", r.dump(2).c_str()); }

void print_backend_list(const json& r) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& b : r) {
    std::string services;
    for (const auto& s : b.at("services")) services += (services.empty() ? "" : ",") + cell(s);
    const std::string draining = draining_text(b.at("draining"), false);
    rows.push_back({cell(b["name"]), cell(b["mac"]), cell(b["ipv4"]), cell(b["ipv6"]),
                    cell(b["bridge"]), services.empty() ? "-" : services,
                    draining.empty() ? "-" : draining});
  }
  print_table({"NAME", "MAC", "IPV4", "IPV6", "BRIDGE", "SERVICES", "DRAINING"}, rows);
}

void print_service_list(const json& r) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& s : r) {
    std::string backends;
    for (const auto& b : s.at("backends"))
      backends += (backends.empty() ? "" : ",") + cell(b["name"]) + ":" + cell(b["port"]) +
                  (b.contains("state") ? " (" + cell(b["state"]) + ")" : "");
    rows.push_back({cell(s["service"]), backends.empty() ? "-" : backends});
  }
  print_table({"SERVICE", "BACKENDS"}, rows);
}

void print_stats(const json& r) {
  if (r.value("role", "") == "gateway") {
    const auto& t = r.at("tracking");
    std::printf("tracking %s: %s flows, %s attempts, %s added, %s failed (map full)\n",
                t.at("enabled").get<bool>() ? "on" : "off", cell(t.at("flows")).c_str(),
                cell(t.at("attempts")).c_str(), cell(t.at("added")).c_str(),
                cell(t.at("failed")).c_str());
    std::printf(
        "tracked rows %s (%.1f%%); rows changed by the last change %s; drains warming "
        "%s, moved %s; repairs %s\n",
        cell(t.at("tracked_rows")).c_str(), 100.0 * t.at("tracked_row_fraction").get<double>(),
        cell(t.at("rows_changed_last")).c_str(), cell(t.at("drains_warming")).c_str(),
        cell(t.at("drains_moved")).c_str(), cell(r.at("repairs")).c_str());
    return;
  }
  const std::vector<std::string> figures{"active",  "opened",    "closed", "flushed",
                                         "refused", "unhealthy", "misses"};
  for (const std::string scope : {"service", "backend"}) {
    // Rate limits are per service: backends have no LIMITED column.
    std::vector<std::string> columns = figures;
    if (scope == "service") columns.insert(columns.end(), {"limited", "chained"});
    std::vector<std::vector<std::string>> rows;
    for (const auto& entry : r.at(scope + "s")) {
      std::vector<std::string> row{cell(entry.at(scope))};
      for (const auto& f : columns) row.push_back(cell(entry.value(f, json())));
      rows.push_back(std::move(row));
    }
    std::vector<std::string> header{scope == "service" ? "SERVICE" : "BACKEND"};
    for (const auto& f : columns) {
      std::string upper = f;
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      header.push_back(upper);
    }
    print_table(header, rows);
    std::printf("\n");
  }
  const auto& e = r.at("events");
  std::printf("conntrack events %s, losses %s, resyncs %s; guard drops %s; misses %s; limited %s\n",
              cell(e.at("received")).c_str(), cell(e.at("losses")).c_str(),
              cell(e.at("resyncs")).c_str(), cell(r.at("guard_drops")).c_str(),
              cell(r.at("misses")).c_str(), cell(r.value("limited", json())).c_str());
  if (const auto h = r.value("health", json()); h.is_object())
    std::printf("health probes %s, failed %s\n", cell(h.at("probes")).c_str(),
                cell(h.at("failed_probes")).c_str());
  const auto& ct = r.at("conntrack");
  std::printf("conntrack table %s of %s entries%s; repairs %s\n", cell(ct.at("count")).c_str(),
              cell(ct.at("max")).c_str(), ct.at("full").get<bool>() ? " (FULL)" : "",
              cell(r.at("repairs")).c_str());
}

void print_health(const json& r) {
  std::vector<std::vector<std::string>> rows;
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (const auto& b : r.at("bindings")) {
    const int64_t since = b.value("since_ms", int64_t{0});
    const std::string age =
        since > 0 ? std::to_string(std::max<int64_t>(0, (now_ms - since) / 1000)) + "s" : "-";
    const json& last = b.at("last");
    rows.push_back(
        {cell(b["service"]), cell(b["backend"]), cell(b["check"]), cell(b["state"]), age,
         b.value("serving", false) ? "yes" : "no", last.is_null() ? "-" : cell(last["detail"]),
         last.is_null() ? "-" : cell(last["latency_ms"]) + "ms", cell(b["transitions"])});
  }
  print_table({"SERVICE", "BACKEND", "CHECK", "STATE", "SINCE", "SERVING", "LAST", "LATENCY",
               "TRANSITIONS"},
              rows);
  std::printf("probes %s, failed %s; went up %s, went down %s\n", cell(r.at("probes")).c_str(),
              cell(r.at("failed_probes")).c_str(), cell(r.at("went_up")).c_str(),
              cell(r.at("went_down")).c_str());
}

// Prints one streamed batch of connections (a table, with its header once).
class ConnectionPrinter {
 public:
  explicit ConnectionPrinter(bool as_json) : as_json_(as_json) {}
  void batch(const json& message) {
    for (const auto& c : message.at("params").at("connections")) {
      if (as_json_) {
        std::printf("%s\n", c.dump().c_str());
        continue;
      }
      if (!header_printed_) {
        std::printf("%-5s %-24s %-24s %-12s %-24s %-12s %s\n", "PROTO", "CLIENT", "VIP", "BACKEND",
                    "BACKEND ADDRESS", "STATE", "AGE");
        header_printed_ = true;
      }
      std::printf("%-5s %-24s %-24s %-12s %-24s %-12s %s\n", cell(c.at("protocol")).c_str(),
                  cell(c.at("client")).c_str(), cell(c.at("vip")).c_str(),
                  cell(c.at("backend")).c_str(), cell(c.at("backend_address")).c_str(),
                  cell(c.at("state")).c_str(),
                  c.at("age_seconds").is_null() ? "-" : (cell(c.at("age_seconds")) + "s").c_str());
    }
  }

 private:
  bool as_json_;
  bool header_printed_ = false;
};

void add_state_commands(CLI::App& app, Invocation& run) {
  app.add_subcommand("status", "Version, uptime, counts, kernel prerequisites, last error")
      ->callback([&run] {
        run.method = "status";
        run.print = print_status;
      });
  app.add_subcommand("health",
                     "Health of each checked binding: state, since when, whether it serves, the "
                     "last probe")
      ->callback([&run] {
        run.method = "health";
        run.print = print_health;
      });
  app.add_subcommand("get", "Print the current state document")->callback([&run] {
    run.method = "get";
    run.print = print_json;
  });
  struct Apply {
    std::string file;
    bool dry_run = false;
    uint32_t drain = 0;
  };
  auto o = storage<Apply>();
  auto* apply = app.add_subcommand("apply", "Replace the whole desired state with a document");
  apply->add_option("-f,--file", o->file, "State document, or - for standard input")->required();
  apply->add_flag("--dry-run", o->dry_run, "Print what would change; change nothing");
  add_drain_option(apply, o->drain);
  apply->callback([&run, o] {
    run.method = "apply";
    // Sent raw after the request line: no escaping here, no second parse
    // in the daemon.
    run.document = read_input(o->file);
    run.params =
        with_drain({{"document_bytes", run.document.size()}, {"dry_run", o->dry_run}}, o->drain);
  });
}

void add_backend_commands(CLI::App& app, Invocation& run) {
  auto* backend = app.add_subcommand("backend", "Backends (local VM interfaces)");
  backend->require_subcommand(1);
  struct Backend {
    std::string name, mac, ipv4, ipv6, bridge;
    uint32_t drain = 0;
  };
  auto o = storage<Backend>();
  auto* add = backend->add_subcommand("add", "Add a backend");
  add->add_option("name", o->name, "Backend name")->required();
  add->add_option("--mac", o->mac, "The VM interface's MAC")->required();
  add->add_option("--ipv4", o->ipv4, "Its IPv4 address");
  add->add_option("--ipv6", o->ipv6, "Its IPv6 address");
  add->add_option("--bridge", o->bridge, "The bridge its port is on (default: hostlbd's)");
  add->callback([&run, o] {
    run.method = "backend.add";
    run.params = {{"name", o->name}, {"mac", o->mac}};
    if (!o->ipv4.empty()) run.params["ipv4"] = o->ipv4;
    if (!o->ipv6.empty()) run.params["ipv6"] = o->ipv6;
    if (!o->bridge.empty()) run.params["bridge"] = o->bridge;
  });
  auto* del = backend->add_subcommand("del", "Remove a backend (and detach it from its services)");
  del->add_option("name", o->name, "Backend name")->required();
  add_drain_option(del, o->drain);
  del->callback([&run, o] {
    run.method = "backend.del";
    run.params = with_drain({{"name", o->name}}, o->drain);
  });
  backend->add_subcommand("list", "List backends")->callback([&run] {
    run.method = "backend.list";
    run.print = print_backend_list;
  });
}

void add_service_commands(CLI::App& app, Invocation& run) {
  auto* service = app.add_subcommand("service", "Services (VIP:PORT/PROTO)");
  service->require_subcommand(1);
  struct Service {
    std::string key, ref, backend;
    std::vector<std::string> backends;
    uint32_t drain = 0;
    uint32_t weight = 0;  // 0: not given
    bool horizon = false;
  };
  auto o = storage<Service>();
  auto* add = service->add_subcommand("add", "Add a service");
  add->add_option("service", o->key, "VIP:PORT/PROTO, e.g. 203.0.113.10:80/tcp")->required();
  add->add_option("--backend", o->backends, "NAME:PORT of a local backend (repeatable)");
  add->callback([&run, o] {
    run.method = "service.add";
    json refs = json::array();
    for (const auto& b : o->backends) refs.push_back(backend_ref(b, "--backend"));
    run.params = {{"service", o->key}, {"backends", refs}};
  });
  auto* del = service->add_subcommand("del", "Remove a service");
  del->add_option("service", o->key, "VIP:PORT/PROTO")->required();
  add_drain_option(del, o->drain);
  del->callback([&run, o] {
    run.method = "service.del";
    run.params = with_drain({{"service", o->key}}, o->drain);
  });
  service->add_subcommand("list", "List services")->callback([&run] {
    run.method = "service.list";
    run.print = print_service_list;
  });
  auto* attach = service->add_subcommand("attach", "Let a backend serve a service");
  attach->add_option("service", o->key, "VIP:PORT/PROTO")->required();
  attach->add_option("backend", o->ref, "NAME:PORT")->required();
  attach
      ->add_option("--weight", o->weight,
                   "Its share of the gateways' choice relative to the service's other backends "
                   "(1-100, default 1)")
      ->check(CLI::Range(1u, hostlb::kMaxWeight));
  attach->add_flag("--horizon", o->horizon,
                   "Announce it without taking new connections yet (gateways track the flows "
                   "it would win; promote it later)");
  attach->callback([&run, o] {
    run.method = "service.attach";
    const json ref = backend_ref(o->ref, "backend");
    run.params = {{"service", o->key}, {"backend", ref["name"]}, {"port", ref["port"]}};
    if (o->weight != 0) run.params["weight"] = o->weight;
    if (o->horizon) run.params["state"] = "horizon";
  });
  // A binding's life at the gateways: one method, three verbs.
  for (const auto& [verb, state, help] :
       {std::tuple{"promote", "active", "Let a horizon or draining binding take new connections"},
        std::tuple{"drain", "draining",
                   "Stop sending it new connections from the gateways, keeping the ones they "
                   "track (its rows are tracked for a warm-up, then move)"},
        std::tuple{"horizon", "horizon",
                   "Put a binding back in the horizon: not chosen, its flows tracked"}}) {
    auto* sub = service->add_subcommand(verb, help);
    sub->add_option("service", o->key, "VIP:PORT/PROTO")->required();
    sub->add_option("backend", o->ref, "NAME")->required();
    sub->callback([&run, o, state = std::string(state)] {
      run.method = "service.state";
      run.params = {{"service", o->key}, {"backend", o->ref}, {"state", state}};
    });
  }
  struct Health {
    std::string key, kind, path, status, start, established;
    double interval = 0, timeout = 0;  // 0: not given
    uint32_t rise = 0, fall = 0;
    bool none = false;
  };
  auto h = storage<Health>();
  auto* health = service->add_subcommand(
      "health", "Set a service's health check (hostlbd checks each local binding), or --none");
  health->add_option("service", h->key, "VIP:PORT/PROTO")->required();
  health->add_option("--kind", h->kind, "tcp or http (TCP services), udp (UDP services)");
  health->add_option("--interval", h->interval, "Seconds between probes (0.1-3600, default 5)");
  health->add_option("--timeout", h->timeout,
                     "Seconds a probe may take (0.1 to the interval, default 2)");
  health->add_option("--rise", h->rise, "Successes in a row that bring a down binding up (1-100)");
  health->add_option("--fall", h->fall, "Failures in a row that take a binding down (1-100)");
  health->add_option("--path", h->path, "HTTP: the path of the GET (default /)");
  health->add_option("--status", h->status,
                     "HTTP: the statuses that count as up (default 200-399)");
  health->add_option("--start", h->start,
                     "down (default): a new binding serves after its first success; up: at once");
  health->add_option("--established", h->established,
                     "keep (default) or flush the connections of a binding that goes down");
  health->add_flag("--none", h->none, "Remove the check: every binding serves");
  health->callback([&run, h] {
    run.method = "service.health";
    json check = json::object();
    auto text = [&](const char* name, const std::string& value) {
      if (!value.empty()) check[name] = value;
    };
    text("kind", h->kind);
    text("path", h->path);
    text("status", h->status);
    text("start", h->start);
    text("established", h->established);
    if (h->interval != 0) check["interval"] = h->interval;
    if (h->timeout != 0) check["timeout"] = h->timeout;
    if (h->rise != 0) check["rise"] = h->rise;
    if (h->fall != 0) check["fall"] = h->fall;
    if (h->none && !check.empty()) throw UsageError("--none takes no other option");
    run.params = {{"service", h->key}, {"health", h->none ? json() : check}};
  });
  auto* detach = service->add_subcommand("detach", "Stop a backend serving a service");
  detach->add_option("service", o->key, "VIP:PORT/PROTO")->required();
  detach->add_option("backend", o->backend, "Backend name")->required();
  add_drain_option(detach, o->drain);
  detach->callback([&run, o] {
    run.method = "service.detach";
    run.params = with_drain({{"service", o->key}, {"backend", o->backend}}, o->drain);
  });
}

// flush and connections select bindings the same way.
struct Selection {
  std::string service, backend;
  json params() const {
    json out = json::object();
    if (!service.empty()) out["service"] = service;
    if (!backend.empty()) out["backend"] = backend;
    return out;
  }
};

void add_connection_commands(CLI::App& app, Invocation& run, const GlobalOptions& global) {
  auto f = storage<Selection>();
  auto* flush = app.add_subcommand(
      "flush",
      "Delete the live connections of a service, a backend, or both (all without options)");
  flush->add_option("--service", f->service, "VIP:PORT/PROTO");
  flush->add_option("--backend", f->backend, "Backend name");
  flush->callback([&run, f] {
    run.method = "flush";
    run.params = f->params();
    run.print = [](const json& r) {
      const size_t n = r.at("flushed").get<size_t>();
      std::printf("flushed %zu connection%s\n", n, n == 1 ? "" : "s");
    };
  });

  struct Connections {
    Selection selection;
    bool count = false;
  };
  auto c = storage<Connections>();
  auto* connections = app.add_subcommand(
      "connections", "The live connections of hostlb's services (streamed as they are read)");
  connections->add_option("--service", c->selection.service, "Only this service (VIP:PORT/PROTO)");
  connections->add_option("--backend", c->selection.backend, "Only this backend");
  connections->add_flag("--count", c->count, "Print only how many there are");
  connections->callback([&run, &global, c] {
    run.method = "connections";
    run.params = c->selection.params();
    if (c->count) run.params["count"] = true;
    auto printer = std::make_shared<ConnectionPrinter>(global.as_json);
    run.on_batch = [printer](const json& message) { printer->batch(message); };
    run.print = [&global, c](const json& r) {
      // With --json the rows were the output; the count is for people.
      if (c->count || !global.as_json)
        std::printf("%zu connection%s\n", r.at("count").get<size_t>(),
                    r.at("count").get<size_t>() == 1 ? "" : "s");
    };
  });
}

void add_stats_command(CLI::App& app, Invocation& run) {
  auto prometheus = storage<bool>();
  auto* stats = app.add_subcommand(
      "stats", "Connection counters per service and backend, event losses, guard drops, misses");
  stats->add_flag("--prometheus", *prometheus, "Print the Prometheus text format");
  stats->callback([&run, prometheus] {
    run.method = "stats";
    run.params = {{"format", *prometheus ? "prometheus" : "json"}};
    if (*prometheus)
      run.print = [](const json& r) { std::printf("%s", r.at("text").get<std::string>().c_str()); };
    else
      run.print = print_stats;
  });
}

void add_selection_commands(CLI::App& app, Invocation& run) {
  struct Which {
    std::string service, client;
  };
  auto w = storage<Which>();
  auto* which = app.add_subcommand(
      "which",
      "The row and backend a client's flow to a service gets (on a gateway also what its "
      "kernel holds, and whether the two agree)");
  which->add_option("service", w->service, "VIP:PORT/PROTO")->required();
  which->add_option("client", w->client, "CLIENT_IP:PORT (or [IPv6]:PORT)")->required();
  which->callback([&run, w] {
    run.method = "which";
    run.params = {{"service", w->service}, {"client", w->client}};
    run.print = [](const json& r) {
      std::printf("%s from %s: row %s of %s -> %s (%s)%s\n", cell(r.at("service")).c_str(),
                  cell(r.at("client")).c_str(), cell(r.at("row")).c_str(),
                  cell(r.at("rows")).c_str(), cell(r.at("backend")).c_str(),
                  cell(r.at("mac")).c_str(),
                  r.value("tracked", false) ? ", tracked by the gateways" : "");
      if (r.contains("kernel_mac"))
        std::printf("gateway kernel: %s (%s)\n", cell(r.at("kernel_mac")).c_str(),
                    r.at("agrees").get<bool>() ? "agrees" : "DIFFERS");
    };
  });

  auto* gateway = app.add_subcommand("gateway", "The gateway's selection tables");
  gateway->require_subcommand(1);
  gateway->add_subcommand("digest", "A digest of the gateway's tables, to compare gateways")
      ->callback([&run] {
        run.method = "gateway.digest";
        run.print = [](const json& r) {
          std::printf("%s (%s services, %s rows)\n", cell(r.at("digest")).c_str(),
                      cell(r.at("services")).c_str(), cell(r.at("rows")).c_str());
        };
      });
  auto service = storage<std::string>();
  auto* table = gateway->add_subcommand("table", "Rows per backend of one service's table");
  table->add_option("service", *service, "VIP:PORT/PROTO")->required();
  table->callback([&run, service] {
    run.method = "gateway.table";
    run.params = {{"service", *service}};
    run.print = [](const json& r) {
      std::printf("%s: %s rows, %s tracked\n", cell(r.at("service")).c_str(),
                  cell(r.at("rows")).c_str(), cell(r.value("tracked_rows", json())).c_str());
      std::vector<std::vector<std::string>> rows;
      for (const auto& b : r.at("backends"))
        rows.push_back({cell(b.at("name")), cell(b.at("mac")), cell(b.at("weight")),
                        cell(b.value("state", json())), cell(b.at("rows")),
                        cell(b.value("tracked_rows", json()))});
      print_table({"BACKEND", "MAC", "WEIGHT", "STATE", "ROWS", "TRACKED"}, rows);
    };
  });
}

void add_doctor_command(CLI::App& app, Invocation& run, const GlobalOptions& global) {
  auto state_dir = std::make_shared<std::string>("/var/lib/hostlb");
  auto* doctor = app.add_subcommand(
      "doctor",
      "Check this host for hostlb: kernel features, sysctls, bridges, backends' MACs, routes, "
      "neighbours, conntrack headroom, the table against the desired state, the daemon "
      "(works without the daemon too; exit 1 if a check fails)");
  doctor
      ->add_option("--state-dir", *state_dir,
                   "Where to read the desired state when the daemon cannot be asked")
      ->capture_default_str();
  doctor->callback([&run, &global, state_dir] {
    run.local = [&global, state_dir] {
      return run_doctor(global.socket, global.timeout_s, *state_dir, global.as_json);
    };
  });
}

// The fleet commands talk to etcd, not to hostlbd: their settings come from
// the flags, else from hostlbd's settings file (as on a fleet machine).
struct FleetFlags {
  std::string daemon_config = "/etc/hostlb/hostlbd.conf";
  std::string endpoints, prefix, ca_file, cert_file, key_file, default_bridge;
  std::string file;
  bool dry_run = false;
};

FleetCommandSettings fleet_command_settings(const CLI::App& fleet, const FleetFlags& f,
                                            const GlobalOptions& global) {
  FleetFlags merged = f;
  DaemonSettings settings;
  if (!f.daemon_config.empty() && ::access(f.daemon_config.c_str(), F_OK) == 0) {
    try {
      settings = parse_daemon_settings(read_input(f.daemon_config));
    } catch (const DocumentError& e) {
      throw UsageError(f.daemon_config + ": " + e.what());
    }
  }
  auto take = [&](const char* flag, std::string& field, const std::optional<std::string>& value) {
    if (value && fleet.count(flag) == 0) field = *value;
  };
  take("--etcd-endpoints", merged.endpoints, settings.etcd_endpoints);
  take("--etcd-prefix", merged.prefix, settings.etcd_prefix);
  take("--etcd-ca-file", merged.ca_file, settings.etcd_ca_file);
  take("--etcd-cert-file", merged.cert_file, settings.etcd_cert_file);
  take("--etcd-key-file", merged.key_file, settings.etcd_key_file);
  take("--default-bridge", merged.default_bridge, settings.default_bridge);
  if (merged.endpoints.empty())
    throw UsageError("fleet: no etcd endpoint: give --etcd-endpoints (or etcd_endpoints in " +
                     f.daemon_config + ")");
  FleetCommandSettings out;
  try {
    out.etcd.endpoints = etcd::parse_endpoints(merged.endpoints);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--etcd-endpoints: ") + e.what());
  }
  out.etcd.tls = {merged.ca_file, merged.cert_file, merged.key_file};
  out.etcd.request_timeout = std::chrono::seconds(global.timeout_s);
  if (!merged.prefix.empty()) out.prefix = merged.prefix;
  if (out.prefix.front() != '/') throw UsageError("--etcd-prefix: must start with '/'");
  out.document.default_bridge = merged.default_bridge;
  out.as_json = global.as_json;
  return out;
}

void add_fleet_commands(CLI::App& app, Invocation& run, const GlobalOptions& global) {
  auto f = storage<FleetFlags>();
  auto* fleet = app.add_subcommand(
      "fleet",
      "The fleet's desired state in etcd (talks to etcd, not to hostlbd; see hostlb-fleet(5))");
  fleet->require_subcommand(1);
  fleet->add_option("--etcd-endpoints", f->endpoints,
                    "etcd endpoints, comma-separated http(s)://HOST:PORT (default: "
                    "etcd_endpoints of the settings file)");
  fleet->add_option("--etcd-prefix", f->prefix, "The fleet's key prefix (default: /hostlb/)");
  fleet->add_option("--etcd-ca-file", f->ca_file, "CA certificate that signs etcd's");
  fleet->add_option("--etcd-cert-file", f->cert_file, "Client certificate for etcd");
  fleet->add_option("--etcd-key-file", f->key_file, "The client certificate's key");
  fleet->add_option("--default-bridge", f->default_bridge,
                    "Bridge of backends that do not name one (default: default_bridge of the "
                    "settings file)");
  fleet
      ->add_option("--daemon-config", f->daemon_config,
                   "hostlbd's settings file, read for what the flags do not give")
      ->capture_default_str();
  auto* apply = fleet->add_subcommand(
      "apply", "Make the fleet hold a state document: one transaction of the keys that differ");
  apply->add_option("-f,--file", f->file, "State document, or - for standard input")->required();
  apply->add_flag("--dry-run", f->dry_run, "Print the keys it would write; write nothing");
  apply->callback([&run, &global, f, fleet] {
    const std::string document = read_input(f->file);
    const auto settings = fleet_command_settings(*fleet, *f, global);
    run.local = [settings, document, f] { return fleet_apply(settings, document, f->dry_run); };
  });
  auto* diff = fleet->add_subcommand("diff", "Print the keys a state document would change");
  diff->add_option("-f,--file", f->file, "State document, or - for standard input")->required();
  diff->callback([&run, &global, f, fleet] {
    const std::string document = read_input(f->file);
    const auto settings = fleet_command_settings(*fleet, *f, global);
    run.local = [settings, document] { return fleet_diff(settings, document); };
  });
  fleet
      ->add_subcommand("status",
                       "Every host and gateway that reports: the revision it applied and whether "
                       "that is the fleet as it is now")
      ->callback([&run, &global, f, fleet] {
        const auto settings = fleet_command_settings(*fleet, *f, global);
        run.local = [settings] { return fleet_status(settings); };
      });
}

int send(const Invocation& run, const GlobalOptions& global) {
  try {
    Connection connection(global.socket, global.timeout_s * 1000);
    const auto response = connection.call(run.method, run.params, run.on_batch, run.document);
    if (!response.ok) {
      std::fprintf(stderr, "hostlbctl: %s: %s%s\n", run.method.c_str(),
                   response.error.path.empty() ? "" : (response.error.path + ": ").c_str(),
                   response.error.message.c_str());
      return kExitRefused;
    }
    if (global.as_json && run.method != "connections")
      print_json(response.result);
    else
      run.print(response.result);
    return kExitOk;
  } catch (const Unreachable& e) {
    std::fprintf(stderr, "hostlbctl: %s\n", e.what());
    return kExitUnreachable;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "hostlbctl: %s\n", e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hostlbctl: %s\n", e.what());
    return kExitUnreachable;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hostlbctl - manage hostlbd through its control socket", "hostlbctl"};
  app.require_subcommand(1);
  GlobalOptions global;
  app.add_option("--socket", global.socket, "hostlbd's control socket")->capture_default_str();
  app.add_flag("--json", global.as_json, "Print the daemon's answer as JSON");
  app.add_option("--timeout", global.timeout_s, "Seconds to wait for the answer")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.set_version_flag("-V,--version", std::string("hostlbctl ") + HOSTLB_VERSION);
  app.footer(
      "Exit codes: 0 ok, 1 the daemon refused (message printed), 2 usage error, "
      "3 the daemon is unreachable.");

  Invocation run;
  add_state_commands(app, run);
  add_backend_commands(app, run);
  add_service_commands(app, run);
  add_connection_commands(app, run, global);
  add_stats_command(app, run);
  add_selection_commands(app, run);
  add_doctor_command(app, run, global);
  add_fleet_commands(app, run, global);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "hostlbctl: %s\n", e.what());
    return kExitUsage;
  }
  return run.local ? run.local() : send(run, global);
}
