// The state directory: the persisted state (written atomically: temporary
// file, fsync, rename, fsync of the directory) and a lock that keeps two
// daemons from sharing one directory.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "hostlb/policies/persisted_state.h"

namespace hostlb {

class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class StateStore {
 public:
  // Creates the directory if needed and takes its lock. Throws StoreError,
  // also when another hostlbd holds the lock.
  explicit StateStore(std::string directory);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // nullopt if nothing was persisted yet. Throws StoreError for an unreadable
  // or corrupt file (the daemon must not guess).
  std::optional<PersistedState> load() const;
  void save(const PersistedState& state) const;

  const std::string& directory() const { return directory_; }
  std::string state_path() const { return directory_ + "/state.json"; }

 private:
  std::string directory_;
  int lock_fd_ = -1;
};

// Reads a whole file; throws StoreError naming the path.
std::string read_file(const std::string& path);

}  // namespace hostlb
