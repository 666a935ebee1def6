// hostlbd: turns VIP frames delivered by MAC into local connections.
// Flags and process lifecycle only; the work is in Agent and Reconciler.
#include <malloc.h>
#include <signal.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <system_error>
#include <vector>

#include "agent.h"
#include "chainer.h"
#include "clock.h"
#include "control_handler.h"
#include "control_server.h"
#include "event_loop.h"
#include "fleet_follower.h"
#include "gateway_agent.h"
#include "gateway_control.h"
#include "health_monitor.h"
#include "hostlb/netlink/chaining.h"
#include "hostlb/netlink/conntrack_events.h"
#include "hostlb/netlink/error.h"
#include "hostlb/netlink/etcd.h"
#include "hostlb/netlink/gateway.h"
#include "hostlb/netlink/host_bpf.h"
#include "hostlb/netlink/system.h"
#include "hostlb/policies/config_files.h"
#include "hostlb/policies/control_protocol.h"
#include "hostlb/policies/state_document.h"
#include "hostlb/version.h"
#include "loop_io.h"
#include "maintenance.h"
#include "stats_keeper.h"

namespace {

using namespace hostlb;

// Exit codes (documented in hostlbd(8)).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  // the kernel or the state directory refused
constexpr int kExitUsage = 2;    // bad flags or a state document that is not valid

struct Flags {
  std::string daemon_config = "/etc/hostlb/hostlbd.conf";
  std::string services_dir = "/etc/hostlb/services.d";
  std::string config;
  std::string socket = "/run/hostlb/hostlbd.sock";
  std::string socket_group = "hostlb";
  std::string state_dir = "/var/lib/hostlb";
  std::string log_level = "info";
  std::string default_bridge;
  std::string host_name;  // empty: the system's
  std::string role = "host";
  std::string client_interface;
  std::string fabric_interface;
  std::string gateway_mac;  // empty: the fabric interface's
  std::string gateway_datapath = "bpf";
  std::string host_datapath = "nft";
  uint32_t track_timeout = 300;
  uint32_t track_size = 262144;
  uint32_t drain_warmup = 60;
  std::string ct_mark_mask = "0xfffff000";
  std::string refuse_policy = "reject";
  std::string miss_policy = "reset";
  uint32_t refuse_seconds = 60;
  AdmissionLimits admission;
  std::string metrics_file;
  uint32_t event_queue_kb = 8192;
  uint32_t metrics_interval = 15;
  std::string health_source_ipv4;
  std::string health_source_ipv6;
  std::string chain_uplink;
  std::string chain_gateways;  // MACs, comma-separated
  uint32_t chain_window = 600;
  std::string etcd_endpoints;
  std::string etcd_prefix = "/hostlb/";
  std::string etcd_ca_file;
  std::string etcd_cert_file;
  std::string etcd_key_file;
  bool no_manage_sysctls = false;
  bool no_tracking = false;
  bool cleanup = false;
  bool check = false;
};

std::optional<uint32_t> parse_mask(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long value = std::strtoul(text.c_str(), &end, 0);
  if (errno != 0 || *end != '\0' || value > 0xffffffffUL || text.front() == '-')
    return std::nullopt;
  return static_cast<uint32_t>(value);
}

// The desired state from the files provisioning writes: --config first,
// then services.d/*.json in name order. nullopt when there is no such file
// (hostlbd then keeps what it persisted: hostlbctl drives it).
struct Desired {
  State state;
  std::string sources;  // for log lines
};
std::optional<Desired> read_desired(const Flags& flags, const DocumentOptions& options) {
  std::vector<SourceFile> files;
  if (!flags.config.empty()) files.push_back({flags.config, read_file(flags.config)});
  if (!flags.services_dir.empty()) {
    std::error_code ec;
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(flags.services_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 5 && name.ends_with(".json") && name.front() != '.' &&
          entry.is_regular_file())
        names.push_back(entry.path().string());
    }
    if (ec && ec != std::errc::no_such_file_or_directory)
      throw StoreError("reading " + flags.services_dir + ": " + ec.message());
    std::sort(names.begin(), names.end());
    for (const auto& name : names) files.push_back({name, read_file(name)});
  }
  if (files.empty()) return std::nullopt;
  Desired out{merge_state_files(files, options), ""};
  for (const auto& f : files) out.sources += (out.sources.empty() ? "" : ", ") + f.name;
  return out;
}

// SIGHUP: the files are read again and applied by `change` (either role's).
void reload(const std::function<void(const State&)>& change, ControlHandlerBase& control,
            const Flags& flags, const DocumentOptions& doc_options) {
  sd_notify(0, "RELOADING=1");
  try {
    auto desired = read_desired(flags, doc_options);
    if (!desired) {
      spdlog::info("SIGHUP: no --config file and no services.d file to re-read; nothing to do");
    } else {
      change(desired->state);
      spdlog::info("reloaded {}", desired->sources);
    }
  } catch (const DocumentError& e) {
    spdlog::error("reload refused, not valid: {}; keeping the current state", e.what());
    control.note_error(std::string("reload: ") + e.what());
  } catch (const std::exception& e) {
    spdlog::error("reload failed: {}; keeping the current state", e.what());
    control.note_error(std::string("reload: ") + e.what());
  }
  sd_notify(0, "READY=1");
}

// The settings file fills in what the command line did not give.
bool apply_settings_file(const CLI::App& app, Flags& flags) {
  if (flags.daemon_config.empty()) return true;
  const bool explicit_file = app.count("--daemon-config") > 0;
  std::error_code ec;
  if (!explicit_file && !std::filesystem::exists(flags.daemon_config, ec)) return true;
  DaemonSettings settings;
  try {
    settings = parse_daemon_settings(read_file(flags.daemon_config));
  } catch (const DocumentError& e) {
    spdlog::error("{}: {}", flags.daemon_config, e.what());
    return false;
  } catch (const StoreError& e) {
    spdlog::error("{}", e.what());
    return false;
  }
  auto take = [&](const char* flag, auto& field, const auto& value) {
    if (value && app.count(flag) == 0) field = *value;
  };
  take("--config", flags.config, settings.config);
  take("--services-dir", flags.services_dir, settings.services_dir);
  take("--socket", flags.socket, settings.socket);
  take("--socket-group", flags.socket_group, settings.socket_group);
  take("--state-dir", flags.state_dir, settings.state_dir);
  take("--log-level", flags.log_level, settings.log_level);
  take("--default-bridge", flags.default_bridge, settings.default_bridge);
  take("--host-name", flags.host_name, settings.host_name);
  take("--role", flags.role, settings.role);
  take("--client-interface", flags.client_interface, settings.client_interface);
  take("--fabric-interface", flags.fabric_interface, settings.fabric_interface);
  take("--gateway-mac", flags.gateway_mac, settings.gateway_mac);
  take("--gateway-datapath", flags.gateway_datapath, settings.gateway_datapath);
  take("--host-datapath", flags.host_datapath, settings.host_datapath);
  take("--track-timeout", flags.track_timeout, settings.track_timeout);
  take("--track-size", flags.track_size, settings.track_size);
  take("--drain-warmup", flags.drain_warmup, settings.drain_warmup);
  take("--ct-mark-mask", flags.ct_mark_mask, settings.ct_mark_mask);
  take("--refuse-policy", flags.refuse_policy, settings.refuse_policy);
  take("--refuse-seconds", flags.refuse_seconds, settings.refuse_seconds);
  take("--miss-policy", flags.miss_policy, settings.miss_policy);
  take("--embryonic-timeout", flags.admission.embryonic_seconds, settings.embryonic_timeout);
  take("--service-new-rate", flags.admission.new_per_second, settings.service_new_rate);
  take("--service-new-burst", flags.admission.burst, settings.service_new_burst);
  take("--metrics-file", flags.metrics_file, settings.metrics_file);
  take("--metrics-interval", flags.metrics_interval, settings.metrics_interval);
  take("--event-queue-kb", flags.event_queue_kb, settings.event_queue_kb);
  take("--health-source-ipv4", flags.health_source_ipv4, settings.health_source_ipv4);
  take("--health-source-ipv6", flags.health_source_ipv6, settings.health_source_ipv6);
  take("--chain-uplink", flags.chain_uplink, settings.chain_uplink);
  take("--chain-gateways", flags.chain_gateways, settings.chain_gateways);
  take("--chain-window", flags.chain_window, settings.chain_window);
  take("--etcd-endpoints", flags.etcd_endpoints, settings.etcd_endpoints);
  take("--etcd-prefix", flags.etcd_prefix, settings.etcd_prefix);
  take("--etcd-ca-file", flags.etcd_ca_file, settings.etcd_ca_file);
  take("--etcd-cert-file", flags.etcd_cert_file, settings.etcd_cert_file);
  take("--etcd-key-file", flags.etcd_key_file, settings.etcd_key_file);
  if (settings.manage_sysctls && app.count("--no-manage-sysctls") == 0)
    flags.no_manage_sysctls = !*settings.manage_sysctls;
  if (settings.tracking && app.count("--no-tracking") == 0) flags.no_tracking = !*settings.tracking;
  return true;
}

// Under systemd (stderr is the journal) each line starts with its syslog
// priority and carries no timestamp of its own: the journal adds one.
class JournalPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr const char* kPriority[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", ""};
    const char* p = kPriority[std::min<size_t>(static_cast<size_t>(msg.level), 6)];
    dest.append(p, p + std::strlen(p));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JournalPriority>();
  }
};

void setup_logging() {
  auto logger = spdlog::stderr_color_mt("hostlbd");
  spdlog::set_default_logger(logger);
  if (std::getenv("JOURNAL_STREAM") != nullptr) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<JournalPriority>('*').set_pattern("%*%v");
    spdlog::set_formatter(std::move(formatter));
  } else {
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
}

// Takes off what the host datapath other than `running` left in the kernel.
void remove_other_host_datapath(HostDatapathKind running) {
  if (running == HostDatapathKind::kBpf)
    make_kernel_ruleset()->remove();
  else
    remove_bpf_host_datapath();
}

// The signals both roles handle: SIGHUP re-reads the files, SIGTERM and
// SIGINT end the loop (the kernel's tables stay in place).
bool handle_signals(EventLoop& loop, const std::function<void()>& on_hup) {
  try {
    loop.on_signal(SIGHUP, on_hup);
    for (int signo : {SIGTERM, SIGINT})
      loop.on_signal(signo, [&loop, signo] {
        spdlog::info("{} received, exiting; the datapath stays in place",
                     signo == SIGTERM ? "SIGTERM" : "SIGINT");
        sd_notify(0, "STOPPING=1");
        loop.stop(kExitOk);
      });
    return true;
  } catch (const std::system_error& e) {
    spdlog::critical("cannot set up signal handling: {}", e.what());
    return false;
  }
}

// The control socket, answered by either role's handler.
ControlServer control_server(EventLoop& loop, const Flags& flags, ControlHandlerBase& control) {
  return ControlServer(
      loop, {flags.socket, flags.socket_group},
      [&control](const PeerCredentials& peer, std::string_view line, std::string_view document) {
        return control.handle(peer, line, document);
      },
      [](int code, const std::string& message) {
        return control::encode_error(nullptr, {code, message, ""});
      });
}

// Keepalives for systemd's watchdog (WatchdogSec), at half its period.
std::unique_ptr<RepeatingTimer> watchdog_timer(EventLoop& loop) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return nullptr;
  return std::make_unique<RepeatingTimer>(loop, std::chrono::milliseconds(usec / 2000),
                                          [] { sd_notify(0, "WATCHDOG=1"); });
}

// The etcd client stack of a daemon that follows the fleet (--etcd-endpoints).
struct FleetLink {
  FleetLink(EventLoop& loop, const EtcdSettings& settings, FleetFollowerOptions options,
            FleetTarget target)
      : io(loop),
        http(io, settings.tls),
        etcd(http, settings),
        follower(loop, etcd, std::move(options), std::move(target)) {
    io.attach(&http);
  }
  LoopIo io;
  HttpClient http;
  EtcdClient etcd;
  FleetFollower follower;
};

struct FleetSettings {
  EtcdSettings etcd;
  std::string prefix;
};

// nullopt without --etcd-endpoints; exits with kExitUsage (through `rc`)
// on settings that are not valid.
std::optional<FleetSettings> fleet_settings(const Flags& flags, int* rc) {
  if (flags.etcd_endpoints.empty()) return std::nullopt;
  FleetSettings out;
  try {
    out.etcd.endpoints = etcd::parse_endpoints(flags.etcd_endpoints);
    FleetLayout layout(flags.etcd_prefix);
    out.prefix = layout.prefix();
  } catch (const std::invalid_argument& e) {
    spdlog::error("--etcd-endpoints: {}", e.what());
    *rc = kExitUsage;
    return std::nullopt;
  } catch (const DocumentError& e) {
    spdlog::error("--etcd-prefix: {}", e.reason());
    *rc = kExitUsage;
    return std::nullopt;
  }
  out.etcd.tls = {flags.etcd_ca_file, flags.etcd_cert_file, flags.etcd_key_file};
  return out;
}

std::unique_ptr<FleetLink> follow_fleet(EventLoop& loop, const FleetSettings& settings,
                                        const std::string& role, const std::string& name,
                                        const DocumentOptions& doc_options, FleetTarget target,
                                        ControlHandlerBase& control) {
  FleetFollowerOptions options;
  options.prefix = settings.prefix;
  options.name = name;
  options.role = role;
  options.document = doc_options;
  options.follow_health = role == "gateway";
  auto link = std::make_unique<FleetLink>(loop, settings.etcd, options, std::move(target));
  control.follow_fleet([&follower = link->follower] { return follower.status(); });
  link->follower.start();
  return link;
}

// --role gateway: the gateway's table from the same documents, control
// socket and state directory; no conntrack, no host routes.
// One hostlbd of a role per network namespace: two (with different state
// directories and sockets) would each rebuild the one table the other just
// replaced, for ever.
std::unique_ptr<NamespaceLock> take_namespace_lock(const std::string& role) {
  try {
    return std::make_unique<NamespaceLock>("hostlbd-" + role);
  } catch (const KernelError& e) {
    if (e.error() == EADDRINUSE)
      spdlog::error(
          "another hostlbd --role {} runs in this network namespace (it holds the "
          "abstract socket @hostlbd-{}); two would rebuild one table against each other",
          role, role);
    else
      spdlog::error("{}", e.what());
    return nullptr;
  }
}

int run_gateway(const Flags& flags, const std::optional<State>& config,
                const DocumentOptions& doc_options, const std::string& host_name,
                const std::optional<FleetSettings>& fleet) {
  if (!is_valid_interface_name(flags.client_interface) ||
      !is_valid_interface_name(flags.fabric_interface)) {
    spdlog::error("--role gateway needs --client-interface and --fabric-interface");
    return kExitUsage;
  }
  const auto mac = flags.gateway_mac.empty() ? interface_mac(flags.fabric_interface)
                                             : MacAddress::parse(flags.gateway_mac);
  if (!mac) {
    spdlog::error("--gateway-mac: {}", flags.gateway_mac.empty()
                                           ? "cannot read the MAC of " + flags.fabric_interface
                                           : "\"" + flags.gateway_mac + "\" is not a MAC");
    return kExitUsage;
  }
  if (flags.drain_warmup >= flags.track_timeout) {
    // A flow tracked at the start of a warm-up must still be tracked at its
    // end, or the drain moves it.
    spdlog::error("--drain-warmup ({} s) must be shorter than --track-timeout ({} s)",
                  flags.drain_warmup, flags.track_timeout);
    return kExitUsage;
  }
  GatewayConfig gateway{flags.client_interface, flags.fabric_interface, *mac};
  gateway.track_timeout_s = flags.track_timeout;
  gateway.track_size = flags.track_size;
  gateway.tracking = !flags.no_tracking;
  gateway.engine = *parse_gateway_engine(flags.gateway_datapath);
  try {
    const auto lock = take_namespace_lock("gateway");
    if (!lock) return kExitFailure;
    SystemClock clock;
    StateStore store(flags.state_dir);
    auto kernel = make_gateway(gateway);
    GatewayAgent agent(*kernel, store, gateway, clock, std::chrono::seconds(flags.drain_warmup));
    agent.load_persisted();
    // What the other datapath left (a change of --gateway-datapath) goes:
    // a tc program sees frames before a netdev table does.
    GatewayConfig other = gateway;
    other.engine =
        gateway.engine == GatewayEngine::kBpf ? GatewayEngine::kNft : GatewayEngine::kBpf;
    make_gateway(other)->remove();
    if (flags.cleanup) {
      agent.cleanup();
      return kExitOk;
    }
    EventLoop loop(clock);
    GatewayControlHandler control(
        agent, gateway, doc_options,
        {HOSTLB_VERSION, flags.state_dir, flags.socket, host_name, flags.admission});
    if (!handle_signals(loop, [&] {
          reload([&](const State& s) { agent.change(s); }, control, flags, doc_options);
        }))
      return kExitFailure;
    spdlog::info(
        "hostlbd {} starting as a gateway ({} -> {}, source MAC {}; state dir {}, "
        "control socket {})",
        HOSTLB_VERSION, gateway.client_interface, gateway.fabric_interface,
        gateway.gateway_mac.str(), flags.state_dir, flags.socket);
    ControlServer server = control_server(loop, flags, control);
    server.open();
    const GatewayReport report = agent.start(config);
    spdlog::info("gateway table {}: {} services, {} rows written, digest {}",
                 report.rebuilt ? "built" : "kept", agent.tables().services.size(),
                 report.rows_written, agent.digest());
    TrimJob trim(
        loop, [&] { return control.take_memory_to_return(); }, [] { ::malloc_trim(0); });
    // Someone deleted or rebuilt the table: it is built again; someone
    // committed anything else: the rows are audited, two parts of the map
    // (about 2,000 rows) every 50 ms, and what differs is written back.
    auto note_error = [&control](const std::string& e) { control.note_error(e); };
    SteppedJob audit(
        loop, std::chrono::milliseconds(50), [&] { return agent.audit_step(2); }, note_error);
    RepairJob repair(loop, {[&] { return kernel->changed_by_others(); },
                            [&](bool table, bool) {
                              if (!table) return;
                              agent.repair();
                              if (agent.auditing()) audit.start();
                            },
                            [] {}, note_error});
    // Drains whose warm-up is over move their rows (checked every second:
    // nothing to do costs a look at a small map).
    RepeatingTimer drains(loop, std::chrono::seconds(1), [&] {
      try {
        agent.settle_drains();
      } catch (const std::exception& e) {
        spdlog::error("ending a drain's warm-up: {}", e.what());
        note_error(std::string("drain warm-up: ") + e.what());
      }
    });
    // Tracked flows whose time is up are forgotten (the BPF datapath's maps
    // have no garbage collection of their own).
    RepeatingTimer sweep(loop, std::chrono::seconds(5), [&] {
      try {
        if (const size_t n = kernel->sweep_tracked(); n > 0)
          spdlog::debug("forgot {} tracked flows whose time was up", n);
      } catch (const std::exception& e) {
        spdlog::error("sweeping the tracked flows: {}", e.what());
        note_error(std::string("tracked flows: ") + e.what());
      }
    });
    std::optional<MetricsJob> metrics;
    if (!flags.metrics_file.empty())
      metrics.emplace(loop, std::chrono::seconds(flags.metrics_interval), [&] {
        write_metrics_file(flags.metrics_file, render_gateway_prometheus(agent.figures()));
      });
    std::unique_ptr<FleetLink> fleet_link;
    if (fleet)
      fleet_link =
          follow_fleet(loop, *fleet, "gateway", host_name, doc_options,
                       {[&agent](const State& fleet_state, const DrainedBindings& unhealthy) {
                          agent.set_unhealthy(unhealthy);
                          agent.change(fleet_state);
                        },
                        [&agent] {
                          const GatewayFigures f = agent.figures();
                          return nlohmann::json{{"services", agent.tables().services.size()},
                                                {"table_digest", agent.digest()},
                                                {"rows", f.rows},
                                                {"tracked_rows", f.tracked_rows},
                                                {"tracked_flows", f.tracked_flows},
                                                {"rows_changed_last", f.rows_changed_last}};
                        }},
                       control);
    auto watchdog = watchdog_timer(loop);
    sd_notify(0, "READY=1");
    return loop.run();
  } catch (const KernelError& e) {
    spdlog::error("{}", e.what());
  } catch (const StoreError& e) {
    spdlog::error("{}", e.what());
  } catch (const GatewayIndexExhausted& e) {
    spdlog::error("{}", e.what());
  } catch (const ControlError& e) {
    spdlog::error("{}", e.what());
  } catch (const std::system_error& e) {
    spdlog::critical("event loop: {}", e.what());
  }
  return kExitFailure;
}

int run(const Flags& flags) {
  auto level = spdlog::level::from_str(flags.log_level);
  spdlog::set_level(level);
  send_bpf_library_messages_to([](const char* line) { spdlog::debug("libbpf: {}", line); });

  DocumentOptions doc_options{flags.default_bridge};
  if (!flags.default_bridge.empty() && !is_valid_interface_name(flags.default_bridge)) {
    spdlog::error("--default-bridge: \"{}\" is not a valid interface name", flags.default_bridge);
    return kExitUsage;
  }
  std::string host_name = flags.host_name.empty() ? system_host_name() : flags.host_name;
  if (!flags.host_name.empty() && !is_valid_host_name(host_name)) {
    spdlog::error("--host-name: \"{}\" is not a valid host name", host_name);
    return kExitUsage;
  }
  const auto mask = parse_mask(flags.ct_mark_mask);
  std::optional<MarkLayout> marks;
  try {
    if (!mask) throw std::invalid_argument("\"" + flags.ct_mark_mask + "\" is not a 32-bit number");
    marks.emplace(*mask);
  } catch (const std::invalid_argument& e) {
    spdlog::error("--ct-mark-mask: {}", e.what());
    return kExitUsage;
  }

  const auto refuse_policy = parse_refuse_policy(flags.refuse_policy);
  if (!refuse_policy) {
    spdlog::error("--refuse-policy: \"{}\" is neither reject nor drop", flags.refuse_policy);
    return kExitUsage;
  }
  const auto miss_policy = parse_miss_policy(flags.miss_policy);
  if (!miss_policy) {
    spdlog::error("--miss-policy: \"{}\" is not reset, drop or accept", flags.miss_policy);
    return kExitUsage;
  }
  HealthMonitorOptions health_options;
  for (const bool v4 : {true, false}) {
    const std::string& text = v4 ? flags.health_source_ipv4 : flags.health_source_ipv6;
    if (text.empty()) continue;
    const auto address = v4 ? IpAddress::parse_v4(text) : IpAddress::parse_v6(text);
    if (!address || !address->is_usable_unicast()) {
      spdlog::error("--health-source-ipv{}: \"{}\" is not a unicast IPv{} address", v4 ? 4 : 6,
                    text, v4 ? 4 : 6);
      return kExitUsage;
    }
    (v4 ? health_options.source_v4 : health_options.source_v6) = *address;
  }
  ChainOptions chain_options;
  if (!flags.chain_uplink.empty() || !flags.chain_gateways.empty()) {
    if (!is_valid_interface_name(flags.chain_uplink) || flags.chain_gateways.empty()) {
      spdlog::error("chaining needs both --chain-uplink and --chain-gateways");
      return kExitUsage;
    }
    chain_options.uplink = flags.chain_uplink;
    chain_options.window = std::chrono::seconds(flags.chain_window);
    try {
      chain_options.gateways = parse_mac_list(flags.chain_gateways, "--chain-gateways");
    } catch (const DocumentError& e) {
      spdlog::error("{}", e.what());
      return kExitUsage;
    }
  }

  // The document is validated before anything else happens, so that a
  // refused document changes nothing at all.
  std::optional<Desired> desired;
  try {
    desired = read_desired(flags, doc_options);
  } catch (const DocumentError& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  } catch (const StoreError& e) {
    spdlog::error("{}", e.what());
    return kExitUsage;
  }
  std::optional<State> config;
  if (desired) config = desired->state;
  int fleet_rc = kExitOk;
  const auto fleet = fleet_settings(flags, &fleet_rc);
  if (fleet_rc != kExitOk) return fleet_rc;
  if (fleet && desired) {
    // Two sources of one state would undo each other's changes.
    spdlog::error(
        "--etcd-endpoints and state files are not mixed on one machine: {} found; remove "
        "them (or --config) to follow the fleet in etcd, or the etcd settings to use files",
        desired->sources);
    return kExitUsage;
  }
  if (flags.check) {
    if (!desired) {
      spdlog::error("--check needs --config FILE or a services.d file");
      return kExitUsage;
    }
    std::printf("%s: valid (%zu backends, %zu services)\n", desired->sources.c_str(),
                config->backends.size(), config->services.size());
    return kExitOk;
  }
  if (flags.role == "gateway") return run_gateway(flags, config, doc_options, host_name, fleet);

  try {
    const auto lock = take_namespace_lock("host");
    if (!lock) return kExitFailure;
    SystemClock clock;
    StateStore store(flags.state_dir);
    const HostDatapathKind datapath = *parse_host_datapath(flags.host_datapath);
    const RulesetPolicies policies{*refuse_policy, *miss_policy, flags.admission};
    auto routes = make_libnl_route_table();
    auto sysctls = make_procfs_sysctls();
    auto conntrack = make_ctnetlink_table();
    auto nft = datapath == HostDatapathKind::kBpf
                   ? make_bpf_host_ruleset(policies, read_conntrack_timeouts(*sysctls))
                   : make_kernel_ruleset(policies);
    Reconciler reconciler(*nft, *routes, *sysctls, {*marks, !flags.no_manage_sysctls, datapath});
    Agent agent(reconciler, store, *conntrack, {flags.refuse_seconds, &clock, host_name});
    agent.load_persisted();
    // Before the start-up apply: a binding known to be down stays refused.
    HealthBook health = HealthMonitor::load(store);
    agent.set_health(&health);

    if (flags.cleanup) {
      agent.cleanup();
      remove_other_host_datapath(datapath);  // whichever ran before
      if (!chain_options.uplink.empty()) remove_chaining(chain_options.uplink);
      return kExitOk;
    }

    EventLoop loop(clock);
    ControlHandler control(
        agent, *routes, *sysctls, doc_options,
        {HOSTLB_VERSION, flags.state_dir, flags.socket, host_name, flags.admission, datapath});
    if (!handle_signals(loop, [&] {
          reload([&](const State& s) { agent.change(s); }, control, flags, doc_options);
        }))
      return kExitFailure;
    spdlog::info("hostlbd {} starting (state dir {}, control socket {})", HOSTLB_VERSION,
                 flags.state_dir, flags.socket);
    ControlServer server = control_server(loop, flags, control);
    // The socket first: if another daemon owns it, nothing is touched.
    server.open();
    if (!config && !agent.has_persisted())
      spdlog::info("no --config, no services.d file and no persisted state: starting empty");
    agent.start(config);
    // What the other datapath left (a change of --host-datapath) goes, once
    // this one serves.
    remove_other_host_datapath(datapath);
    ::malloc_trim(0);  // what the start-up parse and transaction freed
    if (desired)
      spdlog::info("applied {}: {} backends, {} services", desired->sources,
                   config->backends.size(), config->services.size());
    // Subscribed before its first dump; both after the start-up apply, so
    // that the dump sees the identities of the bindings just applied, and
    // before READY, so that "opened" counts every connection from then on.
    StatsKeeper stats(
        agent, *nft, *sysctls, *conntrack,
        make_ctnetlink_events(marks->mask(), static_cast<int>(flags.event_queue_kb) * 1024),
        *marks);
    control.set_stats_source([&stats] { return stats.report(); });
    loop.watch(stats.fd(), POLLIN, [&](short) {
      try {
        stats.on_readable();
      } catch (const KernelError& e) {
        // The subscription is broken: nothing after start-up should do
        // that; let systemd start a clean daemon.
        spdlog::critical("{}", e.what());
        loop.stop(kExitFailure);
      }
    });
    auto prober = make_socket_prober();
    HealthMonitor monitor(loop, agent, *prober, store, health, health_options);
    control.set_health_monitor(&monitor);
    std::unique_ptr<ChainDatapath> chain_kernel;
    std::optional<Chainer> chainer;
    if (!chain_options.uplink.empty()) {
      const auto self = interface_mac(chain_options.uplink);
      if (!self) {
        spdlog::error("--chain-uplink: cannot read the MAC of {}", chain_options.uplink);
        return kExitFailure;
      }
      chain_kernel = make_bpf_chaining();
      chainer.emplace(loop, agent, *chain_kernel, store, clock, host_name, *self, chain_options);
      control.set_chainer(&*chainer);
    }
    stats.set_health_source([&monitor, &chainer](StatsReport& report) {
      monitor.fill(report);
      if (chainer)
        for (const auto& [key, packets] : chainer->chained())
          report.services[key.str()].chained = packets;
    });
    auto note_error = [&control](const std::string& text) { control.note_error(text); };
    ExpiryJob expiry(loop,
                     {[&] { return agent.next_deadline(); }, [&] { agent.expire(); }, note_error});
    RepairJob repair(loop, {[&] { return agent.ruleset_changed_by_others(); },
                            [&](bool table, bool hosts) { agent.repair(table, hosts); },
                            [&] { stats.check_conntrack_headroom(); }, note_error});
    TrimJob trim(
        loop, [&] { return control.take_memory_to_return(); }, [] { ::malloc_trim(0); });
    std::optional<MetricsJob> metrics;
    if (!flags.metrics_file.empty())
      metrics.emplace(loop, std::chrono::seconds(flags.metrics_interval),
                      [&] { stats.write_metrics(flags.metrics_file); });
    std::unique_ptr<FleetLink> fleet_link;
    if (fleet)
      fleet_link = follow_fleet(
          loop, *fleet, "host", host_name, doc_options,
          {[&agent](const State& fleet_state, const DrainedBindings&) {
             agent.change(fleet_state);
           },
           [&agent, &monitor, &stats] {
             nlohmann::json down = nlohmann::json::array();
             for (const auto& key : monitor.down())
               down.push_back({{"service", key.service.str()}, {"backend", key.backend}});
             const auto totals = stats.connection_totals();
             return nlohmann::json{{"services", agent.current().services.size()},
                                   {"bindings", agent.datapath().bindings.size()},
                                   {"down", std::move(down)},
                                   {"connections",
                                    {{"active", totals.active},
                                     {"opened", totals.opened},
                                     {"closed", totals.closed},
                                     {"flushed", totals.flushed}}}};
           }},
          control);
    if (fleet_link)
      monitor.on_transitions([&follower = fleet_link->follower] { follower.report_soon(); });
    auto watchdog = watchdog_timer(loop);
    sd_notify(0, "READY=1");
    try {
      return loop.run();
    } catch (const std::system_error& e) {
      spdlog::critical("event loop: {}", e.what());
      return kExitFailure;
    }
  } catch (const PreconditionError& e) {
    spdlog::error("cannot apply: {}", e.what());
  } catch (const KernelError& e) {
    spdlog::error("{}", e.what());
  } catch (const StoreError& e) {
    spdlog::error("{}", e.what());
  } catch (const IdSpaceExhausted& e) {
    spdlog::error("{}", e.what());
  } catch (const ControlError& e) {
    spdlog::error("{}", e.what());
  }
  return kExitFailure;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "hostlbd - a stateless L4 load balancer whose state lives on the backends' hosts.\n"
      "On a hypervisor (--role host): frames a gateway delivers by MAC (eth.dst = backend\n"
      "MAC, ip.dst = VIP) become local connections: conntrack is committed and the VIP is\n"
      "DNATed to the backend. On a gateway (--role gateway): each VIP flow gets a backend\n"
      "by a stateless choice every gateway and host agrees on, and is delivered by MAC.",
      "hostlbd"};
  Flags flags;
  app.add_option("--daemon-config", flags.daemon_config,
                 "Settings file (key = value lines, see hostlb.conf(5)); flags given here win; "
                 "read if it exists, empty to read none")
      ->capture_default_str();
  app.add_option("--services-dir", flags.services_dir,
                 "Directory of state fragments (*.json, merged in name order after --config) "
                 "to apply at start and on SIGHUP; empty for none")
      ->capture_default_str();
  app.add_option("-c,--config", flags.config,
                 "State document (JSON) to apply at start and on SIGHUP")
      ->check(CLI::ExistingFile);
  app.add_option("--socket", flags.socket, "Control socket path (for hostlbctl)")
      ->capture_default_str();
  app.add_option("--socket-group", flags.socket_group,
                 "Group whose members may use the control socket besides root")
      ->capture_default_str();
  app.add_option("--state-dir", flags.state_dir, "Directory for persisted state")
      ->capture_default_str();
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error, critical or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->capture_default_str();
  app.add_option("--default-bridge", flags.default_bridge,
                 "Bridge for backends that do not name one");
  app.add_option("--role", flags.role,
                 "host: serve the backends on this hypervisor; gateway: choose a backend for "
                 "every VIP flow and deliver it by MAC to the fleet")
      ->check(CLI::IsMember({"host", "gateway"}))
      ->capture_default_str();
  app.add_option("--client-interface", flags.client_interface,
                 "Gateway role: the interface client frames for VIPs arrive on");
  app.add_option("--fabric-interface", flags.fabric_interface,
                 "Gateway role: the interface toward the hosts, where frames leave re-addressed");
  app.add_option("--gateway-mac", flags.gateway_mac,
                 "Gateway role: the source MAC of forwarded frames (default: the fabric "
                 "interface's)");
  app.add_option("--chain-uplink", flags.chain_uplink,
                 "Host role: the bridge port toward the gateways, where chaining sends mid-flow "
                 "packets without a connection here to their row's previous owner");
  app.add_option("--chain-gateways", flags.chain_gateways,
                 "Host role: the gateways' MACs (comma-separated): only their frames are chained");
  app.add_option("--chain-window", flags.chain_window,
                 "Host role: seconds after a change during which its moved rows are chained")
      ->check(CLI::Range(1u, 86400u));
  app.add_option("--gateway-datapath", flags.gateway_datapath,
                 "Gateway role: bpf (a tc program on the client interface) or nft (a netdev "
                 "table); the same rows, choice and tracking")
      ->check(CLI::IsMember({"bpf", "nft"}))
      ->capture_default_str();
  app.add_option("--host-datapath", flags.host_datapath,
                 "Host role: nft (hostlb's nftables table; bridged frames pass br_netfilter, "
                 "safe beside other conntrack users) or bpf (a tc program on the bridges' "
                 "ports; needs br_netfilter off, costs other traffic nothing; see hostlbctl "
                 "doctor)")
      ->check(CLI::IsMember({"nft", "bpf"}))
      ->capture_default_str();
  app.add_option("--track-timeout", flags.track_timeout,
                 "Gateway role: seconds a tracked flow is remembered without a packet")
      ->check(CLI::Range(10u, 86400u));
  app.add_option("--track-size", flags.track_size,
                 "Gateway role: flows each tracking map (IPv4, IPv6) holds at most")
      ->check(CLI::Range(1024u, 1u << 24));
  app.add_option("--drain-warmup", flags.drain_warmup,
                 "Gateway role: seconds a draining backend's rows are tracked before they move "
                 "(longer than the longest pause within a connection)")
      ->check(CLI::Range(0u, 86400u));
  app.add_flag("--no-tracking", flags.no_tracking,
               "Gateway role: track no flow (plain stateless selection: horizon backends take no "
               "part, a drain moves its rows at once)");
  app.add_option("--host-name", flags.host_name,
                 "This hypervisor's name in fleet documents (default: the system's host name); "
                 "backends whose \"host\" names another are not served here");
  app.add_option("--ct-mark-mask", flags.ct_mark_mask,
                 "Conntrack mark bits that carry hostlb's binding identity (one run of bits)")
      ->capture_default_str();
  app.add_option("--refuse-policy", flags.refuse_policy,
                 "New connections to draining or removed bindings: reject (TCP reset, ICMP "
                 "port unreachable) or drop; counted either way")
      ->capture_default_str();
  app.add_option("--miss-policy", flags.miss_policy,
                 "TCP packets for a served VIP that are not SYNs and have no conntrack entry "
                 "(a flow moved here mid-connection): reset, drop or accept; counted either way")
      ->capture_default_str();
  app.add_option("--refuse-seconds", flags.refuse_seconds,
                 "How long a removed binding's new connections are still refused after its "
                 "removal or drain")
      ->check(CLI::Range(0u, 86400u))
      ->capture_default_str();
  app.add_option("--embryonic-timeout", flags.admission.embryonic_seconds,
                 "Seconds a VIP connection's conntrack entry lives until it is answered (TCP "
                 "SYN_SENT/SYN_RECV, UDP unreplied) instead of the kernel's timeouts; 0: the "
                 "kernel's")
      ->check(CLI::Range(0u, 600u))
      ->capture_default_str();
  app.add_option("--service-new-rate", flags.admission.new_per_second,
                 "New connections a second each service may open on this host; more are "
                 "dropped and counted per service; 0: no limit")
      ->check(CLI::Range(0u, 10000000u))
      ->capture_default_str();
  app.add_option("--service-new-burst", flags.admission.burst,
                 "Connections a service may open at once beyond --service-new-rate")
      ->check(CLI::Range(1u, 10000000u))
      ->capture_default_str();
  app.add_option("--metrics-file", flags.metrics_file,
                 "Write the statistics in Prometheus text format to this file (for "
                 "node_exporter's textfile collector); off when empty");
  app.add_option("--metrics-interval", flags.metrics_interval,
                 "Seconds between two writes of --metrics-file")
      ->check(CLI::Range(1u, 3600u))
      ->capture_default_str();
  app.add_option("--event-queue-kb", flags.event_queue_kb,
                 "Receive queue of the conntrack event subscription, in KiB (events beyond it "
                 "are lost and the counts resynced from a dump)")
      ->check(CLI::Range(4u, 1u << 20))
      ->capture_default_str();
  app.add_option("--health-source-ipv4", flags.health_source_ipv4,
                 "The address IPv4 health probes leave from (one of this host's, which the "
                 "backends can answer, e.g. on the bridge); default: the kernel's choice");
  app.add_option("--health-source-ipv6", flags.health_source_ipv6,
                 "The same for IPv6 health probes");
  app.add_option("--etcd-endpoints", flags.etcd_endpoints,
                 "Follow the fleet's desired state in etcd at these endpoints (comma-separated "
                 "http(s)://HOST:PORT, tried in turn) instead of --config and services.d, and "
                 "report there (see hostlb-fleet(5))");
  app.add_option("--etcd-prefix", flags.etcd_prefix, "The fleet's key prefix in etcd")
      ->capture_default_str();
  app.add_option("--etcd-ca-file", flags.etcd_ca_file,
                 "CA certificate that signs etcd's (https endpoints; default: the system's)");
  app.add_option("--etcd-cert-file", flags.etcd_cert_file,
                 "Client certificate for etcd (with --etcd-key-file)");
  app.add_option("--etcd-key-file", flags.etcd_key_file, "The client certificate's key");
  app.add_flag("--no-manage-sysctls", flags.no_manage_sysctls,
               "Refuse to start if a needed sysctl is wrong instead of setting it");
  app.add_flag("--check", flags.check, "Validate --config and exit; changes nothing");
  app.add_flag("--cleanup", flags.cleanup,
               "Remove everything hostlbd installed (table, routes, neighbours) and exit; "
               "established connections are not flushed");
  app.set_version_flag("-V,--version", std::string("hostlbd ") + HOSTLB_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  setup_logging();
  if (!apply_settings_file(app, flags)) return kExitUsage;
  return run(flags);
}
