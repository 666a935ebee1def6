#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "bpf_service_key.h"
#include "hostlb/netlink/error.h"
#include "hostlb/netlink/gateway.h"
#include "tc_ingress.h"

namespace hostlb {

extern const uint8_t kGatewayBpfObject[];
extern const size_t kGatewayBpfObject_size;

namespace {

// The program's map layouts (netlink/bpf/gateway.bpf.c).
struct ServiceValueBpf {
  uint32_t index;
  uint32_t rows;
  uint32_t tracked_rows;
  uint32_t lookup_flows;
};
struct RowBpf {
  uint8_t mac[6];
  uint8_t owned;
  uint8_t tracked;
};
struct ConfigBpf {
  uint8_t gateway_mac[6];
  uint8_t has_stamp;
  uint8_t pad;
  uint32_t fabric_ifindex;
  uint32_t stamp;
  uint64_t track_timeout_ns;
  uint64_t track_end_timeout_ns;
};
struct TrackedBpf {
  uint8_t mac[6];
  uint8_t ending;
  uint8_t pad;
  uint64_t expires_ns;
};
constexpr size_t kFlow4Size = 16, kFlow6Size = 40;

// The service a tracked flow belongs to (its destination, port, protocol).
ServiceKeyBpf service_of_flow(const uint8_t* flow, bool v6) {
  ServiceKeyBpf out{};
  if (v6) {
    std::memcpy(out.vip, flow + 16, 16);
    std::memcpy(&out.port, flow + 34, 2);
    out.proto = flow[36];
    out.family = 6;
  } else {
    std::memcpy(out.vip, flow + 4, 4);
    std::memcpy(&out.port, flow + 10, 2);
    out.proto = flow[12];
    out.family = 4;
  }
  return out;
}

struct ServiceKeyHash {
  size_t operator()(const ServiceKeyBpf& k) const {
    return std::hash<std::string_view>()(
        std::string_view(reinterpret_cast<const char*>(&k), sizeof k));
  }
};

MacAddress mac_of(const uint8_t* bytes) {
  std::array<uint8_t, 6> mac{};
  std::memcpy(mac.data(), bytes, 6);
  return MacAddress(mac);
}

[[noreturn]] void fail(const std::string& what, int error) { throw KernelError(what, error); }

std::string hex_mark(uint32_t mark) {
  char out[16];
  std::snprintf(out, sizeof out, "0x%08x", mark);
  return out;
}

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

constexpr uint32_t kHandle = 0x686c6267;  // "hlbg"
constexpr const char* kProgramName = "hostlb_gw";
constexpr const char* kMapNames[] = {"services", "rows",     "track4",
                                     "track6",   "settings", "counters"};
constexpr __u32 kBatch = 1024;
constexpr const char* kEmptyRowsName = "hostlb_gw_none";

// A BPF object's fd, closed with it.
class MapFd {
 public:
  MapFd() = default;
  explicit MapFd(int fd) : fd_(fd) {}
  MapFd(MapFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  MapFd& operator=(MapFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  MapFd(const MapFd&) = delete;
  MapFd& operator=(const MapFd&) = delete;
  ~MapFd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Every element of a hash map, a batch at a time: `each(keys, values, n)`.
// Batches follow the map's buckets, so a map changed meanwhile may be seen
// with an element missing or twice (callers read differences again).
template <typename Each>
void for_each_batch(int fd, size_t key_size, size_t value_size, const std::string& what,
                    Each&& each) {
  std::vector<uint8_t> keys(key_size * kBatch), values(value_size * kBatch);
  uint32_t token = 0;
  bool first = true;
  for (;;) {
    __u32 count = kBatch;
    const int e = bpf_map_lookup_batch(fd, first ? nullptr : &token, &token, keys.data(),
                                       values.data(), &count, nullptr);
    if (e != 0 && errno != ENOENT) fail(what, errno);
    if (count > 0) each(keys.data(), values.data(), count);
    if (e != 0) return;  // ENOENT: the last batch
    first = false;
  }
}

int percpu_count() {
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) fail("counting the CPUs for the gateway's counters", -cpus);
  return cpus;
}

// One service's rows array, read whole.
std::vector<RowBpf> read_rows(int inner, uint32_t rows) {
  std::vector<RowBpf> out(rows);
  std::vector<uint32_t> keys(rows);
  uint32_t token = 0;
  __u32 done = 0;
  while (done < rows) {
    __u32 count = rows - done;
    const int e = bpf_map_lookup_batch(inner, done == 0 ? nullptr : &token, &token,
                                       keys.data() + done, out.data() + done, &count, nullptr);
    if (e != 0 && errno != ENOENT) fail("reading the rows of a gateway service", errno);
    done += count;
    if (e != 0 || count == 0) break;
  }
  if (done != rows) fail("reading the rows of a gateway service (short read)", EIO);
  return out;
}

class BpfRowScan final : public GatewayRowScan {
 public:
  // `services`: (index, rows) of each service the kernel holds.
  BpfRowScan(MapFd outer, std::vector<std::pair<uint32_t, uint32_t>> services)
      : outer_(std::move(outer)), services_(std::move(services)) {}

  // One service a part.
  bool next(const std::function<void(uint32_t, const MacAddress&)>& each) override {
    if (at_ >= services_.size()) return false;
    const auto [index, rows] = services_[at_++];
    uint32_t id = 0;
    if (bpf_map_lookup_elem(outer_.get(), &index, &id) != 0) return true;  // gone meanwhile
    MapFd inner(bpf_map_get_fd_by_id(id));
    if (!inner) return true;
    const std::vector<RowBpf> values = read_rows(inner.get(), rows);
    for (uint32_t row = 0; row < rows; ++row)
      if (values[row].owned) each(index << 16 | row, mac_of(values[row].mac));
    return true;
  }

  bool interrupted() const override { return false; }

 private:
  MapFd outer_;
  std::vector<std::pair<uint32_t, uint32_t>> services_;
  size_t at_ = 0;
};

class BpfGateway final : public GatewayRuleset {
 public:
  explicit BpfGateway(const GatewayConfig& config) : client_(config.client_interface, kHandle) {}

  ~BpfGateway() override {
    if (object_) bpf_object__close(object_);
  }

  void replace(const GatewayDatapath& datapath, const GatewayConfig& config) override {
    load(config);
    clear_stamp();
    // Each service's rows are built aside and swapped in whole: a service
    // being rebuilt keeps forwarding. Then what no service has goes.
    std::set<uint32_t> indexes;
    std::unordered_set<ServiceKeyBpf, ServiceKeyHash> keys;
    std::vector<const GatewayService*> all;
    for (const auto& s : datapath.services) {
      all.push_back(&s);
      indexes.insert(s.index);
      keys.insert(bpf_key(s.key));
    }
    put_services(all);
    for (const auto& [key, value] : kernel_services())
      if (!keys.count(key) && bpf_map_delete_elem(fd("services"), &key) != 0 && errno != ENOENT)
        fail("removing a service that the gateway no longer has", errno);
    std::vector<uint32_t> unwanted;
    for (uint32_t index = 0; index <= kMaxGatewayServices; ++index)
      if (!indexes.count(index) && holds_rows(index)) unwanted.push_back(index);
    drop_rows(unwanted);
    // Last: maps with a stamp are complete.
    set_stamp(gateway_stamp(datapath));
  }

  void apply(const GatewayDiff& diff, const GatewayConfig& config, uint32_t new_stamp) override {
    load(config);
    if (diff.empty()) {
      set_stamp(new_stamp);
      return;
    }
    // No stamp while the maps change: a crash halfway leaves maps that a
    // restart builds again rather than trusts.
    clear_stamp();
    std::unordered_set<ServiceKeyBpf, ServiceKeyHash> rebuilt;
    std::set<uint32_t> kept_indexes;
    for (const auto& s : diff.services_added) {
      rebuilt.insert(bpf_key(s.key));
      kept_indexes.insert(s.index);
    }
    for (const auto& s : diff.services_removed) {
      const ServiceKeyBpf k = bpf_key(s.key);
      if (!rebuilt.count(k) && bpf_map_delete_elem(fd("services"), &k) != 0 && errno != ENOENT)
        fail("removing service " + s.key.str() + " from the gateway", errno);
    }
    // An added service (or one whose row count or index changed) is built
    // aside and takes over in one write.
    std::vector<const GatewayService*> added;
    for (const auto& s : diff.services_added) added.push_back(&s);
    put_services(added);
    std::vector<uint32_t> dropped;
    for (const auto& s : diff.services_removed)
      if (!kept_indexes.count(s.index)) dropped.push_back(s.index);
    drop_rows(dropped);
    change_rows(diff);
    set_stamp(new_stamp);
  }

  void remove() override {
    detach();
    if (object_) {
      bpf_object__close(object_);
      object_ = nullptr;
    }
    fds_.fill(-1);  // the maps go with the program
    attached_id_.reset();
  }

  std::optional<uint32_t> stamp() override {
    if (!attached_program()) return std::nullopt;
    MapFd config = map_of("settings");
    if (!config) return std::nullopt;
    ConfigBpf c{};
    const uint32_t zero = 0;
    if (bpf_map_lookup_elem(config.get(), &zero, &c) != 0)
      fail("reading the gateway's stamp", errno);
    if (!c.has_stamp) return std::nullopt;
    return c.stamp;
  }

  bool changed_by_others() override {
    const std::optional<uint32_t> now = attached_id();
    if (!baseline_taken_) {
      baseline_taken_ = true;
      attached_id_ = now;
      return false;
    }
    if (now == attached_id_) return false;
    attached_id_ = now;
    return true;
  }

  std::optional<MacAddress> row(uint32_t mark) override {
    MapFd outer = map_of("rows");
    if (!outer) return std::nullopt;
    MapFd inner = inner_map(outer.get(), mark >> 16);
    if (!inner) return std::nullopt;
    const uint32_t at = mark & 0xffff;
    RowBpf r{};
    if (bpf_map_lookup_elem(inner.get(), &at, &r) != 0) {
      if (errno == ENOENT) return std::nullopt;  // past the service's rows
      fail("reading gateway row " + hex_mark(mark), errno);
    }
    if (!r.owned) return std::nullopt;
    return mac_of(r.mac);
  }

  std::unique_ptr<GatewayRowScan> scan_rows() override {
    std::vector<std::pair<uint32_t, uint32_t>> services;
    for (const auto& [key, value] : kernel_services())
      services.emplace_back(value.index, value.rows);
    std::sort(services.begin(), services.end());
    return std::make_unique<BpfRowScan>(map_of("rows"), std::move(services));
  }

  TrackStats track_stats() override {
    TrackStats out;
    const uint64_t now = monotonic_ns();
    for_each_tracked_flow([&](const uint8_t*, bool, const TrackedBpf& t) {
      if (t.expires_ns > now) ++out.entries;
    });
    MapFd counters = map_of("counters");
    if (counters) {
      std::vector<uint64_t> per_cpu(static_cast<size_t>(percpu_count()));
      for (uint32_t which : {0U, 1U}) {
        if (bpf_map_lookup_elem(counters.get(), &which, per_cpu.data()) != 0)
          fail("reading the gateway's tracking counters", errno);
        uint64_t total = 0;
        for (auto v : per_cpu) total += v;
        (which == 0 ? out.attempts : out.added) = total;
      }
    }
    return out;
  }

  std::vector<uint32_t> tracked_rows() override {
    std::vector<uint32_t> out;
    MapFd outer = map_of("rows");
    if (!outer) return out;
    for (const auto& [key, value] : kernel_services()) {
      MapFd inner = inner_map(outer.get(), value.index);
      if (!inner) continue;
      const std::vector<RowBpf> values = read_rows(inner.get(), value.rows);
      for (uint32_t row = 0; row < value.rows; ++row)
        if (values[row].tracked) out.push_back(value.index << 16 | row);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  size_t sweep_tracked() override {
    if (!object_) return 0;  // nothing loaded by this process yet
    size_t removed = 0;
    std::unordered_set<ServiceKeyBpf, ServiceKeyHash> with_flows;
    for (const auto& [map_name, is_v6] : {std::pair{"track4", false}, std::pair{"track6", true}}) {
      const char* name = map_name;
      const bool v6 = is_v6;
      const int map = fd(name);
      const size_t key_size = v6 ? kFlow6Size : kFlow4Size;
      std::vector<uint8_t> expired;
      const uint64_t now = monotonic_ns();
      for_each_batch(map, key_size, sizeof(TrackedBpf), "reading the gateway's tracked flows",
                     [&](const uint8_t* keys, const uint8_t* values, size_t n) {
                       for (size_t i = 0; i < n; ++i) {
                         TrackedBpf t{};
                         std::memcpy(&t, values + i * sizeof t, sizeof t);
                         const uint8_t* flow = keys + i * key_size;
                         if (t.expires_ns <= now)
                           expired.insert(expired.end(), flow, flow + key_size);
                         else
                           with_flows.insert(service_of_flow(flow, v6));
                       }
                     });
      for (size_t at = 0; at < expired.size(); at += key_size) {
        // A packet may have renewed it since it was read: read it again.
        TrackedBpf t{};
        if (bpf_map_lookup_elem(map, expired.data() + at, &t) != 0) continue;
        if (t.expires_ns > monotonic_ns()) {
          with_flows.insert(service_of_flow(expired.data() + at, v6));
          continue;
        }
        if (bpf_map_delete_elem(map, expired.data() + at) == 0) ++removed;
      }
    }
    // Services with neither tracked rows nor tracked flows stop looking
    // flows up. (Flows are added only for tracked rows, and only hostlbd,
    // this thread, makes rows tracked: none can appear meanwhile.)
    for (auto [key, value] : kernel_services()) {
      if (!value.lookup_flows || value.tracked_rows > 0 || with_flows.count(key)) continue;
      value.lookup_flows = 0;
      if (bpf_map_update_elem(fd("services"), &key, &value, BPF_EXIST) != 0 && errno != ENOENT)
        fail("updating a gateway service's flag for tracked flows", errno);
    }
    return removed;
  }

  size_t max_audited_rows() const override { return std::numeric_limits<size_t>::max(); }

 private:
  int fd(const char* name) const {
    for (size_t i = 0; i < std::size(kMapNames); ++i)
      if (std::strcmp(kMapNames[i], name) == 0) return fds_[i];
    return -1;
  }

  // A map of the program this process loaded, or else of the one attached
  // at hostlb's place (a previous run's); none without either.
  MapFd map_of(const char* name) const {
    if (object_) {
      const int f = ::dup(fd(name));
      if (f < 0) fail(std::string("duplicating the gateway's map ") + name, errno);
      return MapFd(f);
    }
    return attached_map(name);
  }

  // The program at hostlb's place, if it is hostlb's gateway program.
  MapFd attached_hostlb_program() const {
    const auto id = attached_id();
    if (!id) return MapFd();
    MapFd program(bpf_prog_get_fd_by_id(*id));
    if (!program) return MapFd();
    bpf_prog_info info{};
    __u32 len = sizeof info;
    if (bpf_obj_get_info_by_fd(program.get(), &info, &len) != 0 ||
        std::strcmp(info.name, kProgramName) != 0)
      return MapFd();
    return program;
  }

  MapFd attached_map(const char* name) const {
    const MapFd program = attached_hostlb_program();
    if (!program) return MapFd();
    std::array<__u32, 16> ids{};
    bpf_prog_info info{};
    info.nr_map_ids = ids.size();
    info.map_ids = reinterpret_cast<uintptr_t>(ids.data());
    __u32 len = sizeof info;
    if (bpf_obj_get_info_by_fd(program.get(), &info, &len) != 0)
      fail("reading the attached gateway program's maps", errno);
    for (__u32 i = 0; i < std::min<__u32>(info.nr_map_ids, ids.size()); ++i) {
      MapFd map(bpf_map_get_fd_by_id(ids[i]));
      if (!map) continue;
      bpf_map_info map_info{};
      __u32 map_len = sizeof map_info;
      if (bpf_obj_get_info_by_fd(map.get(), &map_info, &map_len) == 0 &&
          std::strcmp(map_info.name, name) == 0)
        return map;
    }
    return MapFd();
  }

  // The rows array of service `index`; none if it has none.
  static MapFd inner_map(int outer, uint32_t index) {
    uint32_t id = 0;
    if (bpf_map_lookup_elem(outer, &index, &id) != 0) {
      if (errno == ENOENT) return MapFd();
      fail("reading the rows of gateway service " + std::to_string(index), errno);
    }
    const int f = bpf_map_get_fd_by_id(id);
    if (f < 0) {
      if (errno == ENOENT) return MapFd();  // replaced meanwhile
      fail("opening the rows of gateway service " + std::to_string(index), errno);
    }
    return MapFd(f);
  }

  // Every service the kernel holds (this process may
  // not have loaded anything yet).
  std::vector<std::pair<ServiceKeyBpf, ServiceValueBpf>> kernel_services() const {
    std::vector<std::pair<ServiceKeyBpf, ServiceValueBpf>> out;
    MapFd map = map_of("services");
    if (!map) return out;
    for_each_batch(map.get(), sizeof(ServiceKeyBpf), sizeof(ServiceValueBpf),
                   "reading the gateway's services",
                   [&](const uint8_t* keys, const uint8_t* values, size_t n) {
                     for (size_t i = 0; i < n; ++i) {
                       auto& [k, v] = out.emplace_back();
                       std::memcpy(&k, keys + i * sizeof k, sizeof k);
                       std::memcpy(&v, values + i * sizeof v, sizeof v);
                     }
                   });
    return out;
  }

  template <typename Each>
  void for_each_tracked_flow(Each&& each) const {
    for (const auto& [map_name, is_v6] : {std::pair{"track4", false}, std::pair{"track6", true}}) {
      const char* name = map_name;
      const bool v6 = is_v6;
      MapFd map = map_of(name);
      if (!map) continue;
      const size_t key_size = v6 ? kFlow6Size : kFlow4Size;
      for_each_batch(map.get(), key_size, sizeof(TrackedBpf), "reading the gateway's tracked flows",
                     [&](const uint8_t* keys, const uint8_t* values, size_t n) {
                       for (size_t i = 0; i < n; ++i) {
                         TrackedBpf t{};
                         std::memcpy(&t, values + i * sizeof t, sizeof t);
                         each(keys + i * key_size, v6, t);
                       }
                     });
    }
  }

  // Builds each service's rows in a new array and puts it in place: the
  // rows first, then the service's entry (a new service takes no frame
  // before its rows are in). The kernel waits for the programs running
  // after each write of the array of arrays (an RCU grace period, ~10 ms):
  // services go a batch at a time, one wait a batch.
  void put_services(const std::vector<const GatewayService*>& services) {
    constexpr size_t kServicesPerBatch = 256;  // fds held open at once
    for (size_t begin = 0; begin < services.size(); begin += kServicesPerBatch) {
      const size_t end = std::min(services.size(), begin + kServicesPerBatch);
      std::vector<MapFd> arrays;
      std::vector<uint32_t> indexes;
      std::vector<int> fds;
      std::vector<ServiceKeyBpf> keys;
      std::vector<ServiceValueBpf> values;
      for (size_t i = begin; i < end; ++i) {
        const GatewayService& s = *services[i];
        arrays.push_back(rows_array(s));
        indexes.push_back(s.index);
        fds.push_back(arrays.back().get());
        const ServiceKeyBpf key = bpf_key(s.key);
        const auto tracked = static_cast<uint32_t>(s.tracked.size());
        // Flows tracked before (a rebuild keeps them) are still looked up
        // until a sweep finds none.
        ServiceValueBpf value{s.index, s.rows, tracked, 1};
        ServiceValueBpf old{};
        if (bpf_map_lookup_elem(fd("services"), &key, &old) == 0 && !old.lookup_flows &&
            tracked == 0)
          value.lookup_flows = 0;
        keys.push_back(key);
        values.push_back(value);
      }
      update_batch(
          fd("rows"), indexes.data(), fds.data(), indexes.size(),
          "putting the rows of " + std::to_string(indexes.size()) + " gateway services in place");
      update_batch(fd("services"), keys.data(), values.data(), keys.size(),
                   "adding " + std::to_string(keys.size()) + " services to the gateway");
    }
  }

  static MapFd rows_array(const GatewayService& s) {
    if (s.rows == 0) fail("building gateway service " + s.key.str() + " without rows", EINVAL);
    LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_INNER_MAP);
    const int created = bpf_map_create(BPF_MAP_TYPE_ARRAY, "hostlb_gw_rows", sizeof(uint32_t),
                                       sizeof(RowBpf), s.rows, &opts);
    if (created < 0) fail("creating the rows of gateway service " + s.key.str(), errno);
    MapFd inner(created);
    std::vector<uint32_t> keys(s.rows);
    std::vector<RowBpf> values(s.rows);
    for (uint32_t row = 0; row < s.rows; ++row) {
      keys[row] = row;
      if (!s.owner.empty()) {
        std::memcpy(values[row].mac, s.macs[s.owner[row]].bytes().data(), 6);
        values[row].owned = 1;
      }
    }
    for (uint32_t row : s.tracked) values[row].tracked = 1;
    update_batch(inner.get(), keys.data(), values.data(), s.rows,
                 "writing the rows of gateway service " + s.key.str());
    return inner;
  }

  // Frees the rows arrays of services gone. Deleting from the array of
  // arrays waits for the programs once per element (no batch delete there),
  // so the slots are pointed at one shared empty array instead, a batch at
  // a time, one wait a batch; no service entry leads to them.
  void drop_rows(const std::vector<uint32_t>& indexes) {
    if (indexes.empty()) return;
    const std::vector<int> empty(indexes.size(), empty_rows_.get());
    update_batch(fd("rows"), indexes.data(), empty.data(), indexes.size(),
                 "freeing the rows of " + std::to_string(indexes.size()) + " gateway services");
  }

  // Whether the slot of `index` holds a service's rows (not the shared
  // empty array, of this run or an earlier one).
  bool holds_rows(uint32_t index) const {
    uint32_t id = 0;
    if (bpf_map_lookup_elem(fd("rows"), &index, &id) != 0) return false;
    const MapFd inner(bpf_map_get_fd_by_id(id));
    if (!inner) return false;
    bpf_map_info info{};
    __u32 len = sizeof info;
    return bpf_obj_get_info_by_fd(inner.get(), &info, &len) == 0 &&
           std::strcmp(info.name, kEmptyRowsName) != 0;
  }

  // Rows of services in both that change owner or become tracked (or no
  // longer): each row is one write of its final value, so a row never
  // changes owner untracked when it should be tracked. The service looks
  // flows up before any of its rows is tracked.
  void change_rows(const GatewayDiff& diff) {
    struct Change {
      std::optional<std::optional<MacAddress>> owner;
      std::optional<bool> tracked;
    };
    std::map<uint32_t, Change> changes;
    for (const auto& r : diff.rows) changes[r.mark].owner = r.after;
    for (uint32_t mark : diff.track_added) changes[mark].tracked = true;
    for (uint32_t mark : diff.track_removed) changes[mark].tracked = false;
    if (changes.empty()) return;
    std::map<uint32_t, int> tracked_delta;
    for (uint32_t mark : diff.track_added) ++tracked_delta[mark >> 16];
    for (uint32_t mark : diff.track_removed) --tracked_delta[mark >> 16];
    std::map<uint32_t, std::pair<ServiceKeyBpf, ServiceValueBpf>> by_index;
    for (const auto& [key, value] : kernel_services()) by_index[value.index] = {key, value};
    for (const auto& [index, delta] : tracked_delta) {
      auto it = by_index.find(index);
      if (it == by_index.end()) continue;
      auto& [key, value] = it->second;
      value.tracked_rows =
          static_cast<uint32_t>(std::max<int64_t>(0, int64_t{value.tracked_rows} + delta));
      if (value.tracked_rows > 0) value.lookup_flows = 1;
      if (bpf_map_update_elem(fd("services"), &key, &value, BPF_EXIST) != 0)
        fail("updating the tracked rows of gateway service " + std::to_string(index), errno);
    }
    MapFd inner;
    uint32_t inner_index = 0;
    for (const auto& [mark, change] : changes) {
      const uint32_t index = mark >> 16, at = mark & 0xffff;
      if (!inner || inner_index != index) {
        inner = inner_map(fd("rows"), index);
        inner_index = index;
        if (!inner)
          fail("changing gateway row " + hex_mark(mark) + " of a service it has not", ENOENT);
      }
      RowBpf r{};
      if (bpf_map_lookup_elem(inner.get(), &at, &r) != 0)
        fail("reading gateway row " + hex_mark(mark), errno);
      if (change.owner) {
        r.owned = change.owner->has_value() ? 1 : 0;
        std::memset(r.mac, 0, 6);
        if (*change.owner) std::memcpy(r.mac, (*change.owner)->bytes().data(), 6);
      }
      if (change.tracked) r.tracked = *change.tracked ? 1 : 0;
      if (bpf_map_update_elem(inner.get(), &at, &r, BPF_ANY) != 0)
        fail("writing gateway row " + hex_mark(mark), errno);
    }
  }

  // Loads the program once, with the maps of the one attached before it
  // (hostlbd's previous run) when there is one, writes the settings and
  // attaches it; later calls write the settings only.
  void load(const GatewayConfig& config) {
    if (!object_) {
      LIBBPF_OPTS(bpf_object_open_opts, open_opts, .object_name = "hostlb_gw");
      bpf_object* object =
          bpf_object__open_mem(kGatewayBpfObject, kGatewayBpfObject_size, &open_opts);
      if (!object) fail("opening the gateway's BPF program", errno);
      std::vector<std::pair<std::string, MapFd>> resized;
      try {
        for (const char* name : {"track4", "track6"}) {
          bpf_map* map = bpf_object__find_map_by_name(object, name);
          if (!map || bpf_map__set_max_entries(map, config.track_size) != 0)
            fail(std::string("sizing the gateway's map ") + name, EINVAL);
        }
        for (const char* name : kMapNames) {
          MapFd old = attached_map(name);
          if (!old) continue;
          bpf_map* map = bpf_object__find_map_by_name(object, name);
          bpf_map_info info{};
          __u32 len = sizeof info;
          if (bpf_obj_get_info_by_fd(old.get(), &info, &len) != 0)
            fail(std::string("reading the gateway's map ") + name, errno);
          // Tracking maps of another size (a new --track-size) are made
          // anew, their flows copied over.
          if (info.max_entries != bpf_map__max_entries(map)) {
            resized.emplace_back(name, std::move(old));
            continue;
          }
          if (int e = bpf_map__reuse_fd(map, old.get()); e != 0)
            fail(std::string("taking over the gateway's map ") + name, -e);
        }
        if (int e = bpf_object__load(object); e != 0)
          fail(
              "loading the gateway's BPF program into the kernel (the verifier, or maps of "
              "another layout attached before)",
              -e);
      } catch (...) {
        bpf_object__close(object);
        throw;
      }
      object_ = object;
      for (size_t i = 0; i < std::size(kMapNames); ++i) {
        fds_[i] = bpf_object__find_map_fd_by_name(object_, kMapNames[i]);
        if (fds_[i] < 0) fail(std::string("finding the gateway's map ") + kMapNames[i], ENOENT);
      }
      for (auto& [name, old] : resized) copy_tracked(old.get(), fd(name.c_str()), name);
      LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_INNER_MAP);
      empty_rows_ = MapFd(bpf_map_create(BPF_MAP_TYPE_ARRAY, kEmptyRowsName, sizeof(uint32_t),
                                         sizeof(RowBpf), 1, &opts));
      if (!empty_rows_) fail("creating the gateway's empty rows array", errno);
    }
    const unsigned fabric = if_nametoindex(config.fabric_interface.c_str());
    if (fabric == 0) fail("finding the fabric interface " + config.fabric_interface, errno);
    ConfigBpf c = read_config();
    std::memcpy(c.gateway_mac, config.gateway_mac.bytes().data(), 6);
    c.fabric_ifindex = fabric;
    c.track_timeout_ns = uint64_t{config.track_timeout_s} * 1'000'000'000ULL;
    c.track_end_timeout_ns = uint64_t{config.track_end_timeout_s} * 1'000'000'000ULL;
    write_config(c);
    attach();
  }

  // A smaller map takes what fits; the flows it cannot take go on
  // untracked, as flows a full map refuses.
  static void copy_tracked(int from, int to, const std::string& name) {
    const size_t key_size = name == "track4" ? kFlow4Size : kFlow6Size;
    for_each_batch(from, key_size, sizeof(TrackedBpf), "reading the gateway's tracked flows",
                   [&](const uint8_t* keys, const uint8_t* values, size_t n) {
                     for (size_t i = 0; i < n; ++i)
                       bpf_map_update_elem(to, keys + i * key_size, values + i * sizeof(TrackedBpf),
                                           BPF_NOEXIST);
                   });
  }

  void attach() {
    bpf_program* program = bpf_object__find_program_by_name(object_, kProgramName);
    if (!program) fail("finding the gateway's BPF program in its object", ENOENT);
    attached_id_ = client_.attach(bpf_program__fd(program), "the gateway's BPF program");
    baseline_taken_ = true;
  }

  void detach() { client_.detach("the gateway's BPF program"); }

  // The id of the program at hostlb's place on the client interface.
  std::optional<uint32_t> attached_id() const { return client_.attached_id(); }

  // Whether hostlb's gateway program is the one attached there.
  bool attached_program() const { return static_cast<bool>(attached_hostlb_program()); }

  ConfigBpf read_config() {
    ConfigBpf c{};
    const uint32_t zero = 0;
    if (bpf_map_lookup_elem(fd("settings"), &zero, &c) != 0)
      fail("reading the gateway's settings map", errno);
    return c;
  }
  void write_config(const ConfigBpf& c) {
    const uint32_t zero = 0;
    if (bpf_map_update_elem(fd("settings"), &zero, &c, BPF_ANY) != 0)
      fail("writing the gateway's settings map", errno);
  }
  void clear_stamp() {
    ConfigBpf c = read_config();
    c.has_stamp = 0;
    write_config(c);
  }
  void set_stamp(uint32_t stamp) {
    ConfigBpf c = read_config();
    c.has_stamp = 1;
    c.stamp = stamp;
    write_config(c);
  }

  static void update_batch(int map, const void* keys, const void* values, size_t n,
                           const std::string& what) {
    if (n == 0) return;
    __u32 count = static_cast<__u32>(n);
    if (bpf_map_update_batch(map, keys, values, &count, nullptr) != 0)
      fail(what + " (" + std::to_string(count) + " of " + std::to_string(n) + " written)", errno);
  }

  TcIngress client_;
  bpf_object* object_ = nullptr;
  MapFd empty_rows_;  // what the slots of services gone point at
  std::array<int, std::size(kMapNames)> fds_{-1, -1, -1, -1, -1, -1};
  std::optional<uint32_t> attached_id_;
  bool baseline_taken_ = false;
};

}  // namespace

std::unique_ptr<GatewayRuleset> make_bpf_gateway(const GatewayConfig& config) {
  return std::make_unique<BpfGateway>(config);
}

}  // namespace hostlb
