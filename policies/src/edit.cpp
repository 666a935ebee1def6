#include "hostlb/policies/edit.h"

#include <algorithm>

#include "hostlb/policies/selection.h"

namespace hostlb {

Edit Edit::add_backend(Backend backend) {
  Edit e;
  e.kind = Kind::kAddBackend;
  e.backend = std::move(backend);
  return e;
}
Edit Edit::remove_backend(std::string name) {
  Edit e;
  e.kind = Kind::kRemoveBackend;
  e.ref.name = std::move(name);
  return e;
}
Edit Edit::add_service(Service service) {
  Edit e;
  e.kind = Kind::kAddService;
  e.service = std::move(service);
  return e;
}
Edit Edit::remove_service(ServiceKey key) {
  Edit e;
  e.kind = Kind::kRemoveService;
  e.service.key = key;
  return e;
}
Edit Edit::attach(ServiceKey key, BackendRef ref) {
  Edit e;
  e.kind = Kind::kAttach;
  e.service.key = key;
  e.ref = std::move(ref);
  return e;
}
Edit Edit::set_rows(ServiceKey key, std::optional<uint32_t> rows) {
  Edit e;
  e.kind = Kind::kSetRows;
  e.service.key = key;
  e.service.rows = rows;
  return e;
}

Edit Edit::set_health(ServiceKey key, std::optional<HealthCheck> health) {
  Edit e;
  e.kind = Kind::kSetHealth;
  e.service.key = key;
  e.service.health = std::move(health);
  return e;
}

Edit Edit::set_state(ServiceKey key, std::string name, BindingState state) {
  Edit e;
  e.kind = Kind::kSetState;
  e.service.key = key;
  e.ref.name = std::move(name);
  e.ref.state = state;
  return e;
}

Edit Edit::detach(ServiceKey key, std::string name) {
  Edit e;
  e.kind = Kind::kDetach;
  e.service.key = key;
  e.ref.name = std::move(name);
  return e;
}

namespace {

const Service* find_service(const State& state, const ServiceKey& key) {
  for (const auto& s : state.services)
    if (s.key == key) return &s;
  return nullptr;
}

void check_serves(const Backend& backend, const IpAddress& vip, const std::string& path) {
  if (!backend.address_for(vip.family()))
    throw DocumentError(path, "backend \"" + backend.name + "\" has no " +
                                  std::string(family_name(vip.family())) + " address for VIP " +
                                  vip.str());
}

void check_add_backend(const State& state, const Backend& b) {
  if (state.find_backend(b.name))
    throw DocumentError("name", "backend \"" + b.name + "\" already exists");
  for (const auto& other : state.backends) {
    if (other.mac == b.mac)
      throw DocumentError(
          "mac", "MAC " + b.mac.str() + " is already used by backend \"" + other.name + "\"");
    for (const auto* addr : {&b.ipv4, &b.ipv6}) {
      if (*addr && (other.ipv4 == *addr || other.ipv6 == *addr))
        throw DocumentError(
            (*addr)->is_v4() ? "ipv4" : "ipv6",
            "address " + (*addr)->str() + " is already used by backend \"" + other.name + "\"");
    }
  }
  for (const auto& service : state.services) {
    for (const auto* addr : {&b.ipv4, &b.ipv6}) {
      if (*addr && service.key.vip == **addr)
        throw DocumentError((*addr)->is_v4() ? "ipv4" : "ipv6",
                            (*addr)->str() + " is the VIP of " + service.key.str() +
                                "; a VIP must not be a backend's own address");
    }
  }
}

void check_add_service(const State& state, const Service& service) {
  if (find_service(state, service.key))
    throw DocumentError("service", "service " + service.key.str() + " already exists");
  for (const auto& backend : state.backends) {
    if (backend.address_for(service.key.vip.family()) == service.key.vip)
      throw DocumentError("service", service.key.vip.str() + " is the address of backend \"" +
                                         backend.name +
                                         "\"; a VIP must not be a backend's own address");
  }
  if (service.health) check_health_check(*service.health, "health", service.key.protocol);
  for (size_t i = 0; i < service.backends.size(); ++i) {
    const std::string path = "backends[" + std::to_string(i) + "].name";
    const auto& ref = service.backends[i];
    const Backend* backend = state.find_backend(ref.name);
    if (!backend) throw DocumentError(path, "unknown backend \"" + ref.name + "\"");
    check_serves(*backend, service.key.vip, path);
    for (size_t j = 0; j < i; ++j)
      if (service.backends[j].name == ref.name)
        throw DocumentError(path, "backend \"" + ref.name + "\" is listed twice (also backends[" +
                                      std::to_string(j) + "])");
  }
}

}  // namespace

void check_edit(const State& state, const Edit& edit) {
  const ServiceKey& key = edit.service.key;
  switch (edit.kind) {
    case Edit::Kind::kAddBackend:
      return check_add_backend(state, edit.backend);
    case Edit::Kind::kRemoveBackend:
      if (!state.find_backend(edit.ref.name))
        throw DocumentError("name", "no backend \"" + edit.ref.name + "\"");
      return;
    case Edit::Kind::kAddService:
      return check_add_service(state, edit.service);
    case Edit::Kind::kRemoveService:
      if (!find_service(state, key)) throw DocumentError("service", "no service " + key.str());
      return;
    case Edit::Kind::kAttach: {
      if (!find_service(state, key)) throw DocumentError("service", "no service " + key.str());
      const Backend* backend = state.find_backend(edit.ref.name);
      if (!backend) throw DocumentError("backend", "no backend \"" + edit.ref.name + "\"");
      check_serves(*backend, key.vip, "backend");
      return;
    }
    case Edit::Kind::kDetach:
    case Edit::Kind::kSetState: {
      const Service* service = find_service(state, key);
      if (!service) throw DocumentError("service", "no service " + key.str());
      for (const auto& ref : service->backends)
        if (ref.name == edit.ref.name) return;
      throw DocumentError("backend",
                          "backend \"" + edit.ref.name + "\" does not serve " + key.str());
    }
    case Edit::Kind::kSetRows:
      if (!find_service(state, key)) throw DocumentError("service", "no service " + key.str());
      if (edit.service.rows && (*edit.service.rows < kMinRows || *edit.service.rows > kMaxRows))
        throw DocumentError("rows", std::to_string(*edit.service.rows) +
                                        " is not a whole number from " + std::to_string(kMinRows) +
                                        " to " + std::to_string(kMaxRows));
      return;
    case Edit::Kind::kSetHealth: {
      const Service* service = find_service(state, key);
      if (!service) throw DocumentError("service", "no service " + key.str());
      if (edit.service.health)
        check_health_check(*edit.service.health, "health", service->key.protocol);
      return;
    }
  }
}

void apply_edit(State& state, const Edit& edit) {
  const ServiceKey& key = edit.service.key;
  auto service_it = [&] {
    return std::find_if(state.services.begin(), state.services.end(),
                        [&](const Service& s) { return s.key == key; });
  };
  switch (edit.kind) {
    case Edit::Kind::kAddBackend:
      state.backends.push_back(edit.backend);
      return;
    case Edit::Kind::kRemoveBackend:
      std::erase_if(state.backends, [&](const Backend& b) { return b.name == edit.ref.name; });
      for (auto& service : state.services)
        std::erase_if(service.backends,
                      [&](const BackendRef& r) { return r.name == edit.ref.name; });
      return;
    case Edit::Kind::kAddService:
      state.services.push_back(edit.service);
      return;
    case Edit::Kind::kRemoveService:
      state.services.erase(service_it());
      return;
    case Edit::Kind::kAttach: {
      auto& refs = service_it()->backends;
      for (auto& ref : refs) {
        if (ref.name == edit.ref.name) {
          ref = edit.ref;
          return;
        }
      }
      refs.push_back(edit.ref);
      return;
    }
    case Edit::Kind::kDetach:
      std::erase_if(service_it()->backends,
                    [&](const BackendRef& r) { return r.name == edit.ref.name; });
      return;
    case Edit::Kind::kSetRows:
      service_it()->rows = edit.service.rows;
      return;
    case Edit::Kind::kSetHealth:
      service_it()->health = edit.service.health;
      return;
    case Edit::Kind::kSetState:
      for (auto& ref : service_it()->backends)
        if (ref.name == edit.ref.name) ref.state = edit.ref.state;
      return;
  }
}

State edited(const State& state, const Edit& edit) {
  check_edit(state, edit);
  State out = state;
  apply_edit(out, edit);
  return out;
}

}  // namespace hostlb
