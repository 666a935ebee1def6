// The fast path of parse_state_document: a single pass over the text
// straight into the model, for documents that are plainly valid. It builds
// no JSON tree (the strict path spends most of its time allocating one) and
// gives up, returning nullopt, on anything unusual: an escape sequence or
// a byte outside printable ASCII in a string, a number that is not a plain
// port-sized integer, true/false/null, an unknown or repeated field, any
// error at all. The strict path then decides, and explains an error with its
// exact path and reason, so the two never disagree about what a document
// means (a fuzz target checks that they do not).
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "hostlb/policies/selection.h"
#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

class FastParser {
 public:
  FastParser(std::string_view text, const DocumentOptions& options)
      : p_(text.data()), end_(text.data() + text.size()), options_(options) {
    expected_services_ = text.size() / 64;  // a service takes about 100 bytes
  }

  std::optional<State> document() {
    State state;
    state.services.reserve(expected_services_);
    bool version = false, services = false;
    if (!small_object({"version", "backends", "services"}, [&](unsigned field) {
          if (field == 0) {
            uint32_t v = 0;
            return version = integer(v) && v == kStateDocumentVersion;
          }
          // Services are checked against the backends: those must come first.
          if (field == 1) return !services && array([&] { return backend(state); });
          services = true;
          return array([&] { return service(state); });
        }))
      return std::nullopt;
    skip_space();
    if (!version || p_ != end_) return std::nullopt;
    return state;
  }

 private:
  // Members of one object whose keys are among `keys` (at most a few), each
  // at most once: `member` reads the value of the key with that index and
  // says whether it was acceptable.
  template <typename Member>
  bool small_object(std::initializer_list<std::string_view> keys, Member&& member) {
    if (!consume('{')) return false;
    unsigned seen = 0;
    skip_space();
    if (p_ < end_ && *p_ == '}') return ++p_, true;
    for (;;) {
      std::string_view key;
      if (!string(key) || !consume(':')) return false;
      unsigned index = 0;
      for (auto k : keys) {
        if (k == key) break;
        ++index;
      }
      if (index == keys.size() || (seen & (1u << index)) != 0) return false;
      seen |= 1u << index;
      if (!member(index)) return false;
      skip_space();
      if (p_ >= end_) return false;
      if (*p_ == '}') return ++p_, true;
      if (*p_++ != ',') return false;
    }
  }

  template <typename Element>
  bool array(Element&& element) {
    if (!consume('[')) return false;
    skip_space();
    if (p_ < end_ && *p_ == ']') return ++p_, true;
    for (;;) {
      if (!element()) return false;
      skip_space();
      if (p_ >= end_) return false;
      if (*p_ == ']') return ++p_, true;
      if (*p_++ != ',') return false;
    }
  }

  // A string of printable ASCII without escapes (all that valid names,
  // addresses and MACs need).
  bool string(std::string_view& out) {
    if (!consume('"')) return false;
    const auto* close = static_cast<const char*>(std::memchr(p_, '"', end_ - p_));
    if (close == nullptr) return false;
    for (const char* c = p_; c < close; ++c) {
      const auto byte = static_cast<unsigned char>(*c);
      if (byte == '\\' || byte < 0x20 || byte >= 0x7f) return false;
    }
    out = std::string_view(p_, static_cast<size_t>(close - p_));
    p_ = close + 1;
    return true;
  }

  // A plain integer: digits only, no leading zero, at most five of them.
  bool integer(uint32_t& out) {
    skip_space();
    const char* start = p_;
    uint32_t value = 0;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9' && p_ - start < 6)
      value = value * 10 + (*p_++ - '0');
    const auto digits = p_ - start;
    if (digits == 0 || digits > 5 || (digits > 1 && *start == '0')) return false;
    // A fraction or an exponent makes it another kind of number.
    if (p_ < end_ && (*p_ == '.' || *p_ == 'e' || *p_ == 'E' || (*p_ >= '0' && *p_ <= '9')))
      return false;
    out = value;
    return true;
  }

  bool port(uint16_t& out) {
    uint32_t value = 0;
    if (!integer(value) || value < 1 || value > 65535) return false;
    out = static_cast<uint16_t>(value);
    return true;
  }

  bool backend(State& state) {
    Backend b;
    bool name = false, mac = false, bridge = false;
    const bool ok =
        small_object({"name", "mac", "ipv4", "ipv6", "bridge", "host"}, [&](unsigned field) {
          std::string_view text;
          if (!string(text)) return false;
          switch (field) {
            case 0:
              b.name = text;
              return name = is_valid_backend_name(text);
            case 1: {
              auto parsed = MacAddress::parse(text);
              if (!parsed || parsed->is_multicast() || parsed->is_zero()) return false;
              b.mac = *parsed;
              return mac = true;
            }
            case 2:
              b.ipv4 = IpAddress::parse_v4(text);
              return b.ipv4 && b.ipv4->is_usable_unicast();
            case 3:
              b.ipv6 = IpAddress::parse_v6(text);
              return b.ipv6 && b.ipv6->is_usable_unicast();
            case 4:
              b.bridge = text;
              return bridge = is_valid_interface_name(text);
            default:
              b.host = text;
              return is_valid_host_name(text);
          }
        });
    if (!ok || !name || !mac || (!b.ipv4 && !b.ipv6)) return false;
    if (!bridge) {
      if (options_.default_bridge.empty() || !is_valid_interface_name(options_.default_bridge))
        return false;
      b.bridge = options_.default_bridge;
    }
    if (!names_.emplace(b.name, state.backends.size()).second || !macs_.insert(b.mac).second)
      return false;
    for (const auto* addr : {&b.ipv4, &b.ipv6})
      if (*addr && !addresses_.insert(**addr).second) return false;
    state.backends.push_back(std::move(b));
    return true;
  }

  bool service(State& state) {
    Service s;
    bool vip = false, port_seen = false, protocol = false;
    const bool ok =
        small_object({"vip", "port", "protocol", "backends", "rows"}, [&](unsigned field) {
          std::string_view text;
          switch (field) {
            case 0: {
              if (!string(text)) return false;
              auto parsed = IpAddress::parse(text);
              if (!parsed || !parsed->is_usable_unicast()) return false;
              s.key.vip = *parsed;
              return vip = true;
            }
            case 1:
              return port_seen = port(s.key.port);
            case 2: {
              if (!string(text)) return false;
              auto parsed = parse_protocol(text);
              if (!parsed) return false;
              s.key.protocol = *parsed;
              return protocol = true;
            }
            case 4: {
              uint32_t rows = 0;
              if (!integer(rows) || rows < kMinRows || rows > kMaxRows) return false;
              s.rows = rows;
              return true;
            }
            default:
              return array([&] {
                BackendRef ref;
                bool name = false, ref_port = false;
                if (!small_object({"name", "port", "weight", "state"}, [&](unsigned f) {
                      if (f == 1) return ref_port = port(ref.port);
                      if (f == 2)
                        return integer(ref.weight) && ref.weight >= 1 && ref.weight <= kMaxWeight;
                      std::string_view n;
                      if (f == 3) {
                        if (!string(n)) return false;
                        auto parsed = parse_binding_state(n);
                        if (parsed) ref.state = *parsed;
                        return parsed.has_value();
                      }
                      if (!string(n)) return false;
                      ref.name = n;
                      return name = true;
                    }))
                  return false;
                if (!name || !ref_port) return false;
                s.backends.push_back(std::move(ref));
                return true;
              });
          }
        });
    if (!ok || !vip || !port_seen || !protocol) return false;
    // Checked once the whole object is read: the strict path checks the VIP
    // against the backends before it reads the references.
    if (addresses_.count(s.key.vip) != 0) return false;  // a backend's own address
    for (const auto& ref : s.backends) {
      auto it = names_.find(ref.name);
      if (it == names_.end()) return false;
      if (!state.backends[it->second].address_for(s.key.vip.family())) return false;
    }
    if (listed_twice(s.backends)) return false;
    if (!keys_.insert(s.key, state.services)) return false;
    state.services.push_back(std::move(s));
    return true;
  }

  // A service lists a few backends: pairs are compared, not hashed (a set
  // per service cost two allocations each).
  static bool listed_twice(const std::vector<BackendRef>& refs) {
    if (refs.size() > 32) {
      std::vector<std::string_view> names;
      names.reserve(refs.size());
      for (const auto& ref : refs) names.push_back(ref.name);
      std::sort(names.begin(), names.end());
      return std::adjacent_find(names.begin(), names.end()) != names.end();
    }
    for (size_t i = 0; i < refs.size(); ++i)
      for (size_t j = i + 1; j < refs.size(); ++j)
        if (refs[i].name == refs[j].name) return true;
    return false;
  }

  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\t' || *p_ == '\r')) ++p_;
  }
  bool consume(char c) {
    skip_space();
    if (p_ >= end_ || *p_ != c) return false;
    ++p_;
    return true;
  }

  const char* p_;
  const char* end_;
  const DocumentOptions& options_;
  std::unordered_map<std::string, size_t> names_;  // backend name -> index
  std::unordered_set<MacAddress, MacAddressHash> macs_;
  std::unordered_set<IpAddress, IpAddressHash> addresses_;
  // Service keys seen, for duplicates: open addressing over the services'
  // indices, one allocation for all instead of one per key.
  class KeySet {
   public:
    // False if `key` is already the key of one of `services`.
    bool insert(const ServiceKey& key, const std::vector<Service>& services) {
      if ((services.size() + 1) * 2 > slots_.size()) grow(services);
      const size_t mask = slots_.size() - 1;
      for (size_t i = ServiceKeyHash()(key) & mask;; i = (i + 1) & mask) {
        if (slots_[i] == 0) {
          slots_[i] = static_cast<uint32_t>(services.size() + 1);  // the index it will have
          return true;
        }
        if (services[slots_[i] - 1].key == key) return false;
      }
    }

   private:
    void grow(const std::vector<Service>& services) {
      size_t size = 64;
      while (size < (services.size() + 1) * 4) size *= 2;
      slots_.assign(size, 0);
      for (size_t n = 0; n < services.size(); ++n) {
        for (size_t i = ServiceKeyHash()(services[n].key) & (size - 1);; i = (i + 1) & (size - 1)) {
          if (slots_[i] == 0) {
            slots_[i] = static_cast<uint32_t>(n + 1);
            break;
          }
        }
      }
    }
    std::vector<uint32_t> slots_;
  };
  size_t expected_services_ = 0;
  KeySet keys_;
};

}  // namespace

std::optional<State> parse_state_document_fast(std::string_view text,
                                               const DocumentOptions& options) {
  return FastParser(text, options).document();
}

}  // namespace hostlb
