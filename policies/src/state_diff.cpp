#include "hostlb/policies/state_diff.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <set>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "hostlb/policies/selection.h"

namespace hostlb {
namespace {

std::string describe_backend(const Backend& b) {
  std::string out = "backend " + b.name + " mac " + b.mac.str();
  if (b.ipv4) out += " ipv4 " + b.ipv4->str();
  if (b.ipv6) out += " ipv6 " + b.ipv6->str();
  return out + " bridge " + b.bridge;
}

}  // namespace

namespace {

std::vector<Edit> edits_between_slices(const State& before, const State& after);
std::vector<std::string> describe_slices(const State& before, const State& after);

}  // namespace

// Both functions below keep the relative order of what they are given, and
// the services left out yield no edit and no line: their answers for the
// parts are their answers for the whole states.
StateChanges changed_parts(const State& before, const State& after) {
  std::unordered_map<std::string_view, const Backend*> old_backends;
  for (const auto& b : before.backends) old_backends.emplace(b.name, &b);
  std::unordered_set<std::string_view> changed_backends;
  for (const auto& b : after.backends) {
    auto it = old_backends.find(b.name);
    if (it != old_backends.end() && !(*it->second == b)) changed_backends.insert(b.name);
  }
  auto uses_changed = [&](const Service& s) {
    return std::any_of(s.backends.begin(), s.backends.end(),
                       [&](const BackendRef& r) { return changed_backends.count(r.name) != 0; });
  };
  const auto& old_list = before.services;
  const auto& new_list = after.services;
  // same_old[i] / same_new[j]: the service is in both, equal, and uses no
  // changed backend.
  std::vector<bool> same_old(old_list.size(), false), same_new(new_list.size(), false);
  auto pair_up = [&](size_t i, size_t j) {
    if (old_list[i] == new_list[j] && !uses_changed(new_list[j])) same_old[i] = same_new[j] = true;
  };
  // A document applied again mostly keeps its order: the common beginning
  // and end are paired by position, the middle by key.
  size_t first = 0, old_end = old_list.size(), new_end = new_list.size();
  for (; first < old_end && first < new_end && old_list[first].key == new_list[first].key; ++first)
    pair_up(first, first);
  for (;
       old_end > first && new_end > first && old_list[old_end - 1].key == new_list[new_end - 1].key;
       --old_end, --new_end)
    pair_up(old_end - 1, new_end - 1);
  if (first < old_end && first < new_end) {
    std::unordered_map<ServiceKey, size_t, ServiceKeyHash> middle;
    middle.reserve(old_end - first);
    for (size_t i = first; i < old_end; ++i) middle.emplace(old_list[i].key, i);
    for (size_t j = first; j < new_end; ++j)
      if (auto it = middle.find(new_list[j].key); it != middle.end()) pair_up(it->second, j);
  }

  StateChanges out;
  out.before.backends = before.backends;
  out.after.backends = after.backends;
  for (size_t i = 0; i < old_list.size(); ++i)
    if (!same_old[i]) out.before.services.push_back(old_list[i]);
  for (size_t j = 0; j < new_list.size(); ++j)
    if (!same_new[j]) out.after.services.push_back(new_list[j]);
  return out;
}

std::vector<Edit> edits_between(const StateChanges& changes) {
  return edits_between_slices(changes.before, changes.after);
}

std::vector<Edit> edits_between(const State& before, const State& after) {
  return edits_between(changed_parts(before, after));
}

namespace {

std::vector<Edit> edits_between_slices(const State& before, const State& after) {
  std::unordered_map<std::string_view, const Backend*> old_backends, new_backends;
  for (const auto& b : before.backends) old_backends[b.name] = &b;
  for (const auto& b : after.backends) new_backends[b.name] = &b;
  auto changed_backend = [&](const std::string& name) {
    auto o = old_backends.find(name);
    auto n = new_backends.find(name);
    return o != old_backends.end() && n != new_backends.end() && !(*o->second == *n->second);
  };
  std::map<ServiceKey, const Service*> old_services, new_services;
  for (const auto& s : before.services) old_services.emplace(s.key, &s);
  for (const auto& s : after.services) new_services.emplace(s.key, &s);

  std::vector<Edit> edits;
  // 1. Services that go, and bindings that go from services that stay.
  for (const auto& [key, s] : old_services) {
    auto it = new_services.find(key);
    if (it == new_services.end()) {
      edits.push_back(Edit::remove_service(key));
      continue;
    }
    for (const auto& ref : s->backends) {
      const auto& refs = it->second->backends;
      const bool kept = std::any_of(refs.begin(), refs.end(),
                                    [&](const BackendRef& r) { return r.name == ref.name; });
      if (!kept && !changed_backend(ref.name) && new_backends.count(ref.name))
        edits.push_back(Edit::detach(key, ref.name));
    }
  }
  // 2. Backends that go or change (a changed one is removed and added again,
  // which detaches it everywhere; step 5 attaches it where it belongs).
  for (const auto& b : before.backends)
    if (!new_backends.count(b.name) || changed_backend(b.name))
      edits.push_back(Edit::remove_backend(b.name));
  // 3. Backends that come.
  for (const auto& b : after.backends)
    if (!old_backends.count(b.name) || changed_backend(b.name))
      edits.push_back(Edit::add_backend(b));
  // 4. Services that come, with their backends.
  for (const auto& s : after.services)
    if (!old_services.count(s.key)) edits.push_back(Edit::add_service(s));
  // 5. Bindings that come or change in services that stay.
  for (const auto& [key, s] : new_services) {
    auto it = old_services.find(key);
    if (it == old_services.end()) continue;
    for (const auto& ref : s->backends) {
      const auto& refs = it->second->backends;
      auto old_ref = std::find_if(refs.begin(), refs.end(),
                                  [&](const BackendRef& r) { return r.name == ref.name; });
      if (old_ref == refs.end() || !(*old_ref == ref) || changed_backend(ref.name))
        edits.push_back(Edit::attach(key, ref));
    }
    // 6. The gateways' row count of services that stay.
    if (it->second->rows != s->rows) edits.push_back(Edit::set_rows(key, s->rows));
    // 7. Their health checks.
    if (it->second->health != s->health) edits.push_back(Edit::set_health(key, s->health));
  }
  return edits;
}

}  // namespace

std::vector<std::string> describe_edit(const State& before, const Edit& edit) {
  // An edit touches one backend or one service: describe that slice.
  State slice_before, slice_after;
  const ServiceKey& key = edit.service.key;
  const bool backend_edit =
      edit.kind == Edit::Kind::kAddBackend || edit.kind == Edit::Kind::kRemoveBackend;
  const std::string backend_name =
      edit.kind == Edit::Kind::kAddBackend ? edit.backend.name : edit.ref.name;
  for (const auto& b : before.backends)
    if (backend_edit && b.name == backend_name) slice_before.backends.push_back(b);
  for (const auto& s : before.services) {
    if (backend_edit) {
      Service only{s.key, {}};
      for (const auto& r : s.backends)
        if (r.name == backend_name) only.backends.push_back(r);
      if (!only.backends.empty()) slice_before.services.push_back(only);
    } else if (s.key == key) {
      slice_before.services.push_back(s);
    }
  }
  slice_after = slice_before;
  if (edit.kind == Edit::Kind::kRemoveBackend) {
    slice_after.backends.clear();
    for (auto& s : slice_after.services) s.backends.clear();
  } else {
    // The slice holds every object the edit names, so applying it to the
    // slice is the edit's effect; backends it references come along.
    for (const auto& b : before.backends)
      if (!slice_after.find_backend(b.name) && edit.kind != Edit::Kind::kAddBackend)
        slice_after.backends.push_back(b), slice_before.backends.push_back(b);
    apply_edit(slice_after, edit);
  }
  return describe_changes(slice_before, slice_after);
}

std::vector<std::string> describe_changes(const StateChanges& changes) {
  return describe_slices(changes.before, changes.after);
}

std::vector<std::string> describe_changes(const State& before, const State& after) {
  return describe_changes(changed_parts(before, after));
}

namespace {

std::vector<std::string> describe_slices(const State& before, const State& after) {
  std::vector<std::string> lines;
  // Sorted views and merges rather than maps: this runs on every apply of a
  // whole document.
  auto sorted_backends = [](const State& s) {
    std::vector<const Backend*> v;
    for (const auto& b : s.backends) v.push_back(&b);
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->name < b->name; });
    return v;
  };
  const auto ob = sorted_backends(before), nb = sorted_backends(after);
  auto find_backend = [](const std::vector<const Backend*>& v, const std::string& name) {
    auto it = std::lower_bound(v.begin(), v.end(), name,
                               [](const Backend* b, const std::string& n) { return b->name < n; });
    return it != v.end() && (*it)->name == name ? *it : nullptr;
  };
  for (const Backend* b : ob) {
    const Backend* n = find_backend(nb, b->name);
    if (!n || !(*n == *b)) lines.push_back("- " + describe_backend(*b));
  }
  for (const Backend* b : nb) {
    const Backend* o = find_backend(ob, b->name);
    if (!o || !(*o == *b)) lines.push_back("+ " + describe_backend(*b));
  }

  auto sorted_services = [](const State& s) {
    std::vector<const Service*> v;
    for (const auto& x : s.services) v.push_back(&x);
    std::sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->key < b->key; });
    return v;
  };
  const auto os = sorted_services(before), ns = sorted_services(after);
  auto find_service = [](const std::vector<const Service*>& v, const ServiceKey& key) {
    auto it = std::lower_bound(v.begin(), v.end(), key,
                               [](const Service* s, const ServiceKey& k) { return s->key < k; });
    return it != v.end() && (*it)->key == key ? *it : nullptr;
  };
  for (const Service* s : os)
    if (!find_service(ns, s->key)) lines.push_back("- service " + s->key.str());
  for (const Service* s : ns)
    if (!find_service(os, s->key)) lines.push_back("+ service " + s->key.str());
  auto rows_text = [](const Service& s) {
    return s.rows ? std::to_string(*s.rows) : "default (" + std::to_string(kDefaultRows) + ")";
  };
  for (const Service* s : ns)
    if (const Service* o = find_service(os, s->key); o && o->rows != s->rows)
      lines.push_back("~ service " + s->key.str() + " rows " + rows_text(*o) + " -> " +
                      rows_text(*s));
  auto health_text = [](const Service& s) {
    return s.health ? health_check_to_json(*s.health).dump() : std::string("none");
  };
  for (const Service* s : ns)
    if (const Service* o = find_service(os, s->key); o && o->health != s->health)
      lines.push_back("~ service " + s->key.str() + " health " + health_text(*o) + " -> " +
                      health_text(*s));

  using BindingLine = std::tuple<ServiceKey, std::string, uint16_t, uint32_t, BindingState>;
  auto bindings = [](const std::vector<const Service*>& services) {
    std::vector<BindingLine> out;
    for (const Service* s : services)
      for (const auto& ref : s->backends)
        out.emplace_back(s->key, ref.name, ref.port, ref.weight, ref.state);
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto old_bindings = bindings(os), new_bindings = bindings(ns);
  std::vector<BindingLine> gone, come;
  std::set_difference(old_bindings.begin(), old_bindings.end(), new_bindings.begin(),
                      new_bindings.end(), std::back_inserter(gone));
  std::set_difference(new_bindings.begin(), new_bindings.end(), old_bindings.begin(),
                      old_bindings.end(), std::back_inserter(come));
  auto line = [](char sign, const BindingLine& b) {
    return std::string(1, sign) + " binding " + std::get<0>(b).str() + " -> " + std::get<1>(b) +
           ":" + std::to_string(std::get<2>(b)) +
           (std::get<3>(b) == 1 ? "" : " weight " + std::to_string(std::get<3>(b))) +
           (std::get<4>(b) == BindingState::kActive
                ? ""
                : " " + std::string(binding_state_name(std::get<4>(b))));
  };
  for (const auto& b : gone) lines.push_back(line('-', b));
  for (const auto& b : come) lines.push_back(line('+', b));
  return lines;
}

}  // namespace

}  // namespace hostlb
