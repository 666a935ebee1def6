#include "hostlb/policies/state_edit.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

namespace hostlb {
namespace {

std::vector<Service>::iterator find_service(State& state, const ServiceKey& key) {
  return std::find_if(state.services.begin(), state.services.end(),
                      [&](const Service& s) { return s.key == key; });
}

std::string describe_backend(const Backend& b) {
  std::string out = "backend " + b.name + " mac " + b.mac.str();
  if (b.ipv4) out += " ipv4 " + b.ipv4->str();
  if (b.ipv6) out += " ipv6 " + b.ipv6->str();
  return out + " bridge " + b.bridge;
}

}  // namespace

State add_backend(const State& state, const Backend& backend) {
  if (state.find_backend(backend.name))
    throw DocumentError("name", "backend \"" + backend.name + "\" already exists");
  State out = state;
  out.backends.push_back(backend);
  return out;
}

State remove_backend(const State& state, const std::string& name) {
  if (!state.find_backend(name)) throw DocumentError("name", "no backend \"" + name + "\"");
  State out = state;
  std::erase_if(out.backends, [&](const Backend& b) { return b.name == name; });
  for (auto& service : out.services)
    std::erase_if(service.backends, [&](const BackendRef& r) { return r.name == name; });
  return out;
}

State add_service(const State& state, const Service& service) {
  State out = state;
  if (find_service(out, service.key) != out.services.end())
    throw DocumentError("service", "service " + service.key.str() + " already exists");
  out.services.push_back(service);
  return out;
}

State remove_service(const State& state, const ServiceKey& key) {
  State out = state;
  auto it = find_service(out, key);
  if (it == out.services.end()) throw DocumentError("service", "no service " + key.str());
  out.services.erase(it);
  return out;
}

State attach_backend(const State& state, const ServiceKey& key, const BackendRef& ref) {
  State out = state;
  auto it = find_service(out, key);
  if (it == out.services.end()) throw DocumentError("service", "no service " + key.str());
  if (!out.find_backend(ref.name))
    throw DocumentError("backend", "no backend \"" + ref.name + "\"");
  for (auto& existing : it->backends) {
    if (existing.name == ref.name) {
      existing.port = ref.port;
      return out;
    }
  }
  it->backends.push_back(ref);
  return out;
}

State detach_backend(const State& state, const ServiceKey& key, const std::string& name) {
  State out = state;
  auto it = find_service(out, key);
  if (it == out.services.end()) throw DocumentError("service", "no service " + key.str());
  const auto before = it->backends.size();
  std::erase_if(it->backends, [&](const BackendRef& r) { return r.name == name; });
  if (it->backends.size() == before)
    throw DocumentError("backend", "backend \"" + name + "\" does not serve " + key.str());
  return out;
}

void validate_state(const State& state) { state_from_json(nlohmann::json(state_to_json(state))); }

std::vector<std::string> describe_changes(const State& before, const State& after) {
  std::vector<std::string> lines;
  std::map<std::string, const Backend*> old_backends, new_backends;
  for (const auto& b : before.backends) old_backends[b.name] = &b;
  for (const auto& b : after.backends) new_backends[b.name] = &b;
  for (const auto& [name, b] : old_backends) {
    auto it = new_backends.find(name);
    if (it == new_backends.end() || !(*it->second == *b))
      lines.push_back("- " + describe_backend(*b));
  }
  for (const auto& [name, b] : new_backends) {
    auto it = old_backends.find(name);
    if (it == old_backends.end() || !(*it->second == *b))
      lines.push_back("+ " + describe_backend(*b));
  }

  std::map<ServiceKey, const Service*> old_services, new_services;
  for (const auto& s : before.services) old_services[s.key] = &s;
  for (const auto& s : after.services) new_services[s.key] = &s;
  for (const auto& [key, s] : old_services)
    if (!new_services.count(key)) lines.push_back("- service " + key.str());
  for (const auto& [key, s] : new_services)
    if (!old_services.count(key)) lines.push_back("+ service " + key.str());

  auto bindings = [](const std::map<ServiceKey, const Service*>& services) {
    std::map<std::pair<ServiceKey, std::string>, uint16_t> out;
    for (const auto& [key, s] : services)
      for (const auto& ref : s->backends) out[{key, ref.name}] = ref.port;
    return out;
  };
  const auto old_bindings = bindings(old_services);
  const auto new_bindings = bindings(new_services);
  auto line = [](char sign, const std::pair<ServiceKey, std::string>& key, uint16_t port) {
    return std::string(1, sign) + " binding " + key.first.str() + " -> " + key.second + ":" +
           std::to_string(port);
  };
  for (const auto& [key, port] : old_bindings) {
    auto it = new_bindings.find(key);
    if (it == new_bindings.end() || it->second != port) lines.push_back(line('-', key, port));
  }
  for (const auto& [key, port] : new_bindings) {
    auto it = old_bindings.find(key);
    if (it == old_bindings.end() || it->second != port) lines.push_back(line('+', key, port));
  }
  return lines;
}

}  // namespace hostlb
