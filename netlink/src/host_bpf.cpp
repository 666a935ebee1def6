#include "hostlb/netlink/host_bpf.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "bpf_map_read.h"
#include "bpf_service_key.h"
#include "hostlb/netlink/error.h"
#include "tc_ingress.h"

namespace hostlb {

extern const uint8_t kHostBpfObject[];
extern const size_t kHostBpfObject_size;

namespace {

// The program's map layouts (netlink/bpf/host.bpf.c).
struct DeliveryKeyBpf {
  uint8_t mac[6];
  uint8_t proto;
  uint8_t family;
  uint16_t port;  // network order
  uint16_t pad;
  uint8_t addr[16];
  auto operator<=>(const DeliveryKeyBpf& o) const { return std::memcmp(this, &o, sizeof o) <=> 0; }
  bool operator==(const DeliveryKeyBpf& o) const { return std::memcmp(this, &o, sizeof o) == 0; }
};
static_assert(sizeof(DeliveryKeyBpf) == 28);

constexpr uint8_t kKindBinding = 1, kKindRefused = 2;
constexpr uint8_t kMacBackend = 1, kMacKeys = 2;  // backend_macs' values: what a MAC is

struct KeyValueBpf {
  uint8_t target[16];
  uint16_t target_port;  // host order
  uint8_t kind;
  uint8_t pad;
  uint32_t mark;
  uint64_t refused;
  uint64_t misses;
  uint64_t opened;
  // What hostlbd writes (the counters are the program's).
  bool same_entry(const KeyValueBpf& o) const {
    return std::memcmp(target, o.target, sizeof target) == 0 && target_port == o.target_port &&
           kind == o.kind && mark == o.mark;
  }
};
static_assert(sizeof(KeyValueBpf) == 48);

struct SettingsBpf {
  uint32_t mark_mask;
  uint8_t refuse_reject;
  uint8_t miss;
  uint16_t pad;
  uint32_t tcp_embryonic, tcp_established, tcp_closing, tcp_close;
  uint32_t udp_embryonic, udp_replied, udp_stream;
  uint64_t new_interval_ns;
  uint64_t burst_ns;
};

struct AddrKeyBpf {
  uint8_t addr[16];
  uint8_t family;
  uint8_t pad[3];
  auto operator<=>(const AddrKeyBpf& o) const { return std::memcmp(this, &o, sizeof o) <=> 0; }
  bool operator==(const AddrKeyBpf& o) const { return std::memcmp(this, &o, sizeof o) == 0; }
};

struct RateBpf {
  uint64_t next_ns;
  uint64_t limited;
};

enum Total : uint32_t { kGuardDrops, kMisses, kLimited, kNoEntry, kOpened, kRefused, kTotals = 8 };

// Below the chaining program (priority 1) on a host's uplink: a chained
// frame leaves before the host program would call it a miss.
constexpr uint32_t kHandle = 0x686c6268;  // "hlbh"
constexpr uint32_t kPriority = 2;
constexpr const char* kWhat = "hostlb's host program";

[[noreturn]] void fail(const std::string& what, int error) { throw KernelError(what, error); }

// Removes `key` from a map; one that is not there is gone already.
void erase(int fd, const void* key, const std::string& what) {
  if (bpf_map_delete_elem(fd, key) != 0 && errno != ENOENT)
    fail("removing " + what + " from the host program", errno);
}

uint8_t proto_of(Protocol protocol) {
  return protocol == Protocol::kTcp ? IPPROTO_TCP : IPPROTO_UDP;
}

DeliveryKeyBpf delivery_key(const MacAddress& mac, const IpAddress& addr, Protocol protocol,
                            uint16_t port) {
  DeliveryKeyBpf out{};
  std::memcpy(out.mac, mac.bytes().data(), 6);
  out.proto = proto_of(protocol);
  out.family = addr.is_v4() ? 4 : 6;
  out.port = htons(port);
  std::memcpy(out.addr, addr.bytes().data(), addr.size());
  return out;
}

AddrKeyBpf addr_key(const IpAddress& addr) {
  AddrKeyBpf out{};
  std::memcpy(out.addr, addr.bytes().data(), addr.size());
  out.family = addr.is_v4() ? 4 : 6;
  return out;
}

std::optional<DeliveryKey> delivery_of(const DeliveryKeyBpf& k) {
  std::array<uint8_t, 6> mac{};
  std::memcpy(mac.data(), k.mac, 6);
  if (k.family != 4 && k.family != 6) return std::nullopt;
  const auto addr = IpAddress::from_bytes(k.family == 4 ? IpFamily::kV4 : IpFamily::kV6, k.addr);
  return DeliveryKey{
      MacAddress(mac),
      {addr, ntohs(k.port), k.proto == IPPROTO_TCP ? Protocol::kTcp : Protocol::kUdp}};
}

// What the maps must hold for a datapath.
struct Contents {
  std::map<DeliveryKeyBpf, KeyValueBpf> keys;
  std::set<DeliveryKeyBpf> endpoints;
  std::map<MacAddress, uint8_t> macs;  // kMacBackend | kMacKeys
  std::set<AddrKeyBpf> vips;
};

Contents contents_of(const Datapath& dp, const MarkLayout& marks) {
  Contents out;
  for (const auto& b : dp.bindings) {
    KeyValueBpf v{};
    if (b.serving) {
      v.kind = kKindBinding;
      std::memcpy(v.target, b.target.bytes().data(), b.target.size());
      v.target_port = b.target_port;
      v.mark = marks.mark_for(b.id);
    } else {
      v.kind = kKindRefused;
    }
    out.keys[delivery_key(b.mac, b.key.service.vip, b.key.service.protocol, b.key.service.port)] =
        v;
    out.macs[b.mac] |= kMacKeys;
    // Established connections of a binding that no longer serves are still
    // answered through it.
    out.endpoints.insert(delivery_key(b.mac, b.target, b.key.service.protocol, b.target_port));
  }
  for (const auto& k : dp.refused) {
    KeyValueBpf v{};
    v.kind = kKindRefused;
    out.keys[delivery_key(k.mac, k.service.vip, k.service.protocol, k.service.port)] = v;
    out.macs[k.mac] |= kMacKeys;
  }
  for (const auto& mac : dp.guard_macs) out.macs[mac] |= kMacBackend;
  for (const auto& vip : dp.guard_vips) out.vips.insert(addr_key(vip));
  return out;
}

// The ports of a bridge, as sysfs lists them (in the caller's namespace).
std::set<std::string> ports_of(const std::string& bridge) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator("/sys/class/net/" + bridge + "/brif", ec))
    out.insert(entry.path().filename().string());
  return out;
}

std::vector<std::string> all_bridges() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/sys/class/net", ec))
    if (std::filesystem::exists(entry.path() / "brif", ec))
      out.push_back(entry.path().filename().string());
  return out;
}

class BpfHostRuleset final : public NftRuleset {
 public:
  BpfHostRuleset(RulesetPolicies policies, ConntrackTimeouts timeouts)
      : policies_(policies), timeouts_(timeouts) {}
  ~BpfHostRuleset() override {
    if (object_) bpf_object__close(object_);
  }

  NftRunStats replace(const Datapath& datapath, const MarkLayout& marks) override {
    load();
    write_settings(marks);
    current_ = datapath;
    sync(marks);
    attach_ports();
    return {};
  }

  void apply(const DatapathDiff& diff, const MarkLayout& marks) override {
    load();
    current_ = patch_datapath(current_, diff);
    sync(marks);
    attach_ports();
  }

  void remove() override {
    remove_bpf_host_datapath();
    attached_.clear();
  }

  Inventory inventory() override {
    Inventory out;
    if (!object_) return out;
    out.table = !attached_.empty();
    for (const auto& [k, v] : read_map<DeliveryKeyBpf, KeyValueBpf>(keys_)) {
      auto key = delivery_of(k);
      if (!key) continue;
      if (v.kind == kKindBinding) {
        out.targets.insert(*key);
        out.identities.insert(*key);
      } else {
        out.refused.insert(*key);
      }
    }
    return out;
  }

  std::optional<std::string> difference(const Datapath& desired, const MarkLayout& marks) override {
    if (!object_) return std::string("the host program is not loaded");
    for (const auto& bridge : desired.bridges)
      for (const auto& port : ports_of(bridge))
        if (!TcIngress(port, kHandle, kPriority).attached_id())
          return "port " + port + " of " + bridge + " has no host program";
    const Contents want = contents_of(desired, marks);
    const auto keys = read_map<DeliveryKeyBpf, KeyValueBpf>(keys_);
    size_t missing = 0, wrong = 0, extra = 0;
    for (const auto& [k, v] : want.keys) {
      auto it = keys.find(k);
      if (it == keys.end())
        ++missing;
      else if (!it->second.same_entry(v))
        ++wrong;
    }
    for (const auto& [k, v] : keys) extra += !want.keys.count(k);
    if (missing || wrong || extra)
      return "keys: " + std::to_string(missing) + " missing, " + std::to_string(wrong) +
             " with other data, " + std::to_string(extra) + " not hostlbd's";
    std::set<DeliveryKeyBpf> endpoints;
    for (const auto& [k, v] : read_map<DeliveryKeyBpf, uint8_t>(endpoints_)) endpoints.insert(k);
    if (endpoints != want.endpoints) return std::string("endpoints differ");
    std::map<MacAddress, uint8_t> macs;
    for (const auto& [k, v] : read_map<std::array<uint8_t, 6>, uint8_t>(macs_))
      macs[MacAddress(k)] = v;
    if (macs != want.macs) return std::string("MACs differ");
    std::set<AddrKeyBpf> vips;
    for (const auto& [k, v] : read_map<AddrKeyBpf, uint8_t>(vips_)) vips.insert(k);
    if (vips != want.vips) return std::string("guarded VIPs differ");
    return std::nullopt;
  }

  Counters counters() override {
    Counters out;
    if (!object_) return out;
    PercpuSums totals;
    out.guard_drops = totals.sum(totals_, uint32_t{kGuardDrops});
    out.misses = totals.sum(totals_, uint32_t{kMisses});
    out.limited = totals.sum(totals_, uint32_t{kLimited});
    for (const auto& [k, v] : read_map<DeliveryKeyBpf, KeyValueBpf>(keys_)) {
      auto key = delivery_of(k);
      if (!key) continue;
      if (v.kind == kKindRefused) out.refused[*key] = v.refused;
      if (v.misses) out.misses_by_key[*key] = v.misses;
      if (v.opened) out.opened_by_key[*key] = v.opened;
    }
    each_entry<ServiceKeyBpf, RateBpf>(rates_, [&](const ServiceKeyBpf& k, const RateBpf& v) {
      if (!v.limited || (k.family != 4 && k.family != 6)) return;
      const auto vip = IpAddress::from_bytes(k.family == 4 ? IpFamily::kV4 : IpFamily::kV6, k.vip);
      out.limited_by_service[{vip, ntohs(k.port),
                              k.proto == IPPROTO_TCP ? Protocol::kTcp : Protocol::kUdp}] =
          v.limited;
    });
    return out;
  }

  bool sends_conntrack_events() const override { return false; }

  // Polled every 200 ms: the upkeep of the ports. A port that joined one of
  // the bridges (a VM started) gets the program here; nothing else can
  // change the maps behind hostlbd's back short of a BPF tool.
  bool changed_by_others() override {
    if (!object_) return false;
    try {
      attach_ports(true);
    } catch (const KernelError& e) {
      spdlog::warn("{}", e.what());
      return true;
    }
    return false;
  }

 private:
  void load() {
    if (object_) return;
    LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "hostlb_host");
    object_ = bpf_object__open_mem(kHostBpfObject, kHostBpfObject_size, &open_opts);
    if (!object_) fail("opening the host program", errno);
    if (int e = bpf_object__load(object_); e != 0) {
      bpf_object__close(object_);
      object_ = nullptr;
      fail("loading the host program into the kernel (BPF verifier or conntrack kfuncs)", -e);
    }
    program_ = bpf_object__find_program_by_name(object_, "hostlb_host");
    if (!program_) fail("finding the host program in its object", ENOENT);
    for (auto [name, fd] : {std::pair{"settings", &settings_}, std::pair{"keys", &keys_},
                            std::pair{"endpoints", &endpoints_}, std::pair{"backend_macs", &macs_},
                            std::pair{"guard_vips", &vips_}, std::pair{"rates", &rates_},
                            std::pair{"totals", &totals_}}) {
      *fd = bpf_object__find_map_fd_by_name(object_, name);
      if (*fd < 0) fail(std::string("finding the host program's map ") + name, ENOENT);
    }
    written_ = {};
    attached_.clear();
  }

  void write_settings(const MarkLayout& marks) {
    SettingsBpf s{};
    s.mark_mask = marks.mask();
    s.refuse_reject = policies_.refuse == RefusePolicy::kReject;
    s.miss = policies_.miss == MissPolicy::kReset ? 0 : policies_.miss == MissPolicy::kDrop ? 1 : 2;
    const auto& limits = policies_.admission;
    const uint32_t embryonic = limits.embryonic_seconds;
    auto ms = [](uint64_t seconds) {
      return static_cast<uint32_t>(std::min<uint64_t>(seconds * 1000, UINT32_MAX));
    };
    s.tcp_embryonic =
        ms(embryonic ? std::min(embryonic, timeouts_.tcp_syn_sent) : timeouts_.tcp_syn_sent);
    s.tcp_established = ms(timeouts_.tcp_established);
    s.tcp_closing = ms(timeouts_.tcp_fin_wait);
    s.tcp_close = ms(timeouts_.tcp_close);
    s.udp_embryonic = ms(embryonic ? std::min(embryonic, timeouts_.udp) : timeouts_.udp);
    s.udp_replied = ms(timeouts_.udp);
    s.udp_stream = ms(timeouts_.udp_stream);
    if (limits.new_per_second) {
      s.new_interval_ns = 1000000000ull / limits.new_per_second;
      s.burst_ns = s.new_interval_ns * limits.burst;
    }
    const uint32_t zero = 0;
    if (bpf_map_update_elem(settings_, &zero, &s, BPF_ANY) != 0)
      fail("writing the host program's settings", errno);
  }

  // Writes what differs between the maps and current_, nothing else.
  void sync(const MarkLayout& marks) {
    Contents want = contents_of(current_, marks);
    const uint8_t one = 1;
    for (const auto& [k, v] : written_.keys)
      if (!want.keys.count(k)) erase(keys_, &k, "a key");
    for (auto& [k, v] : want.keys) {
      auto it = written_.keys.find(k);
      if (it != written_.keys.end() && it->second.same_entry(v)) continue;
      KeyValueBpf old{};
      if (bpf_map_lookup_elem(keys_, &k, &old) == 0) {  // the program's counts carry on
        v.refused = old.refused;
        v.misses = old.misses;
        v.opened = old.opened;
      }
      if (bpf_map_update_elem(keys_, &k, &v, BPF_ANY) != 0) {
        const auto key = delivery_of(k);
        fail("writing key " + (key ? key->mac.str() + " " + key->service.str() : "?") +
                 " to the host program",
             errno);
      }
    }
    for (const auto& k : written_.endpoints)
      if (!want.endpoints.count(k)) erase(endpoints_, &k, "a backend endpoint");
    for (const auto& k : want.endpoints)
      if (!written_.endpoints.count(k) && bpf_map_update_elem(endpoints_, &k, &one, BPF_ANY) != 0)
        fail("writing a backend endpoint to the host program", errno);
    for (const auto& [mac, what] : written_.macs)
      if (!want.macs.count(mac)) erase(macs_, mac.bytes().data(), "MAC " + mac.str());
    for (const auto& [mac, what] : want.macs) {
      auto it = written_.macs.find(mac);
      if (it != written_.macs.end() && it->second == what) continue;
      if (bpf_map_update_elem(macs_, mac.bytes().data(), &what, BPF_ANY) != 0)
        fail("writing MAC " + mac.str() + " to the host program", errno);
    }
    for (const auto& k : written_.vips)
      if (!want.vips.count(k)) erase(vips_, &k, "a guarded VIP");
    for (const auto& k : want.vips)
      if (!written_.vips.count(k) && bpf_map_update_elem(vips_, &k, &one, BPF_ANY) != 0)
        fail("writing a guarded VIP to the host program", errno);
    written_ = std::move(want);
  }

  void attach_ports(bool log_new_ports = false) {
    for (const auto& bridge : current_.bridges)
      for (const auto& port : ports_of(bridge)) {
        const unsigned index = if_nametoindex(port.c_str());
        if (index == 0) continue;  // gone since the listing
        auto it = attached_.find(port);
        if (it != attached_.end() && it->second == index) continue;
        TcIngress(port, kHandle, kPriority).attach(bpf_program__fd(program_), kWhat);
        if (log_new_ports)
          spdlog::info("host program attached to {} port {} of {}",
                       it == attached_.end() ? "new" : "re-created", port, bridge);
        attached_[port] = index;
      }
  }

  RulesetPolicies policies_;
  ConntrackTimeouts timeouts_;
  bpf_object* object_ = nullptr;
  bpf_program* program_ = nullptr;
  int settings_ = -1, keys_ = -1, endpoints_ = -1, macs_ = -1, vips_ = -1, rates_ = -1,
      totals_ = -1;
  Datapath current_;
  Contents written_;
  std::map<std::string, unsigned> attached_;  // port -> its ifindex when attached
};

}  // namespace

std::string_view host_datapath_name(HostDatapathKind kind) {
  return kind == HostDatapathKind::kNft ? "nft" : "bpf";
}

std::optional<HostDatapathKind> parse_host_datapath(std::string_view text) {
  if (text == "nft") return HostDatapathKind::kNft;
  if (text == "bpf") return HostDatapathKind::kBpf;
  return std::nullopt;
}

ConntrackTimeouts read_conntrack_timeouts(Sysctls& sysctls) {
  ConntrackTimeouts out;
  for (auto [key, field] : {std::pair{"nf_conntrack_tcp_timeout_syn_sent", &out.tcp_syn_sent},
                            std::pair{"nf_conntrack_tcp_timeout_established", &out.tcp_established},
                            std::pair{"nf_conntrack_tcp_timeout_fin_wait", &out.tcp_fin_wait},
                            std::pair{"nf_conntrack_tcp_timeout_close", &out.tcp_close},
                            std::pair{"nf_conntrack_udp_timeout", &out.udp},
                            std::pair{"nf_conntrack_udp_timeout_stream", &out.udp_stream}}) {
    if (auto value = read_sysctl_number(sysctls, std::string("net/netfilter/") + key);
        value && *value > 0 && *value <= UINT32_MAX / 1000)
      *field = static_cast<uint32_t>(*value);
  }
  return out;
}

std::vector<std::string> bpf_datapath_problems(Sysctls& sysctls,
                                               const std::vector<std::string>& bridges) {
  std::vector<std::string> out;
  for (const char* family : {"iptables", "ip6tables"}) {
    const std::string key = std::string("net/bridge/bridge-nf-call-") + family;
    if (auto value = sysctls.read(key); value && *value != "0")
      out.push_back("sysctl " + sysctl_display_name(key) + " is " + *value +
                    ": br_netfilter hands bridged frames to netfilter, whose conntrack would "
                    "clash with the BPF datapath's entries");
  }
  for (const auto& bridge : bridges)
    for (const char* family : {"iptables", "ip6tables"}) {
      std::ifstream in("/sys/class/net/" + bridge + "/bridge/nf_call_" + family);
      std::string value;
      if (in >> value && value != "0")
        out.push_back("bridge " + bridge + " has nf_call_" + family +
                      " on: br_netfilter hands its frames to netfilter, whose conntrack would "
                      "clash with the BPF datapath's entries");
    }
  return out;
}

std::vector<std::string> tables_using_conntrack(const std::string& listing) {
  static const std::regex table_line(R"(^table (\S+) (\S+) \{)");
  static const std::regex use(
      R"re((\bct (state|status|mark|label|direction|zone|helper|count|original|reply|id|expectation|timeout)\b|\bnotrack\b|type nat hook|\bmasquerade\b|\b[sd]nat (ip6? )?to\b|\bredirect\b|xt match "(conntrack|state)"))re");
  std::vector<std::string> out;
  std::istringstream in(listing);
  std::string line, table;
  bool counted = false, relevant = false;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_search(line, m, table_line)) {
      const std::string family = m[1], name = m[2];
      table = family + " " + name;
      counted = false;
      relevant = (family == "ip" || family == "ip6" || family == "inet" || family == "bridge") &&
                 !(family == kNftFamily && name == kNftTable);
      continue;
    }
    if (!relevant || counted || !std::regex_search(line, m, use)) continue;
    out.push_back(table + " (" + m[1].str() + ")");
    counted = true;
  }
  return out;
}

std::vector<std::string> other_conntrack_users() {
  std::vector<std::string> out = tables_using_conntrack(nft_list_ruleset());
  for (const char* file : {"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"}) {
    std::ifstream in(file);
    std::string name;
    while (in >> name)
      out.push_back(std::string("iptables-legacy ") +
                    (std::string(file).find("ip6") != std::string::npos ? "ip6 " : "ip ") + name +
                    " (may use conntrack)");
  }
  return out;
}

std::vector<std::string> ports_without_host_program(const std::string& bridge) {
  std::vector<std::string> out;
  for (const auto& port : ports_of(bridge))
    if (!TcIngress(port, kHandle, kPriority).attached_id()) out.push_back(port);
  return out;
}

std::unique_ptr<NftRuleset> make_bpf_host_ruleset(RulesetPolicies policies,
                                                  ConntrackTimeouts timeouts) {
  return std::make_unique<BpfHostRuleset>(policies, timeouts);
}

void remove_bpf_host_datapath() {
  for (const auto& bridge : all_bridges())
    for (const auto& port : ports_of(bridge)) {
      const TcIngress ingress(port, kHandle, kPriority);
      if (ingress.attached_id()) ingress.detach(kWhat);
    }
}

}  // namespace hostlb
