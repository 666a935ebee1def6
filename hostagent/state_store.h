// The state directory: a snapshot of the persisted state (written
// atomically: temporary file, fsync, rename, fsync of the directory), a
// journal of the edits made since (one JSON line each, appended and
// fdatasync'ed: a change costs the same whatever the size of the state),
// and a lock that keeps two daemons from sharing one directory.
//
// The snapshot names its journal by generation (journal-G.jsonl); writing a
// snapshot starts a new generation and removes the old journal, so a crash
// between the two never replays a journal onto a snapshot that contains it.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "hostlb/policies/journal.h"
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

  struct Loaded {
    PersistedState snapshot;
    std::vector<JournalRecord> journal;  // complete records, oldest first
  };
  // nullopt if nothing was persisted yet. Throws StoreError for an unreadable
  // or corrupt snapshot or journal record (the daemon must not guess). A
  // torn last journal line (a crash mid-append) is dropped with a warning.
  std::optional<Loaded> load();
  // The snapshot with its journal replayed on it: each record's edits and
  // the identities, retirements and gateway indexes it gave. Throws
  // StoreError as load(), or naming the record that does not apply.
  std::optional<PersistedState> load_replayed();
  // Writes a snapshot (a new generation) and starts an empty journal.
  void save(PersistedState& state);
  // Appends one record to the current journal. Throws StoreError.
  void append(const JournalRecord& record);
  size_t journal_length() const { return journal_length_; }

  const std::string& directory() const { return directory_; }
  std::string state_path() const { return directory_ + "/state.json"; }

  // The health monitor's record of each binding's last known health
  // (health.h): written whole at each transition, read at start-up;
  // nullopt if there is none. Throws StoreError.
  void save_health(const std::string& text);
  std::optional<std::string> load_health() const;
  std::string health_path() const { return directory_ + "/health.json"; }
  // Chaining's rows and windows (chaining.h), written at each change of
  // them, read at start-up. Throws StoreError.
  void save_chaining(const std::string& text);
  std::optional<std::string> load_chaining() const;
  std::string chaining_path() const { return directory_ + "/chaining.json"; }

 private:
  std::string journal_path(uint64_t generation) const;

  std::string directory_;
  int lock_fd_ = -1;
  uint64_t generation_ = 0;
  int journal_fd_ = -1;
  size_t journal_length_ = 0;
};

// Reads a whole file; throws StoreError naming the path.
std::string read_file(const std::string& path);

}  // namespace hostlb
