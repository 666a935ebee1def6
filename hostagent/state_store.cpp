#include "state_store.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "hostlb/policies/state_document.h"

namespace hostlb {
namespace {

std::string errno_text() { return std::strerror(errno); }

void make_directories(const std::string& path) {
  std::string partial;
  std::stringstream parts(path);
  std::string part;
  if (!path.empty() && path.front() == '/') partial = "/";
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    partial += part;
    if (::mkdir(partial.c_str(), 0750) != 0 && errno != EEXIST)
      throw StoreError("creating directory " + partial + ": " + errno_text());
    partial += "/";
  }
}

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw StoreError("writing " + path + ": " + errno_text());
    }
    done += static_cast<size_t>(n);
  }
}

}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw StoreError("cannot read " + path + ": " + errno_text());
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) throw StoreError("reading " + path + ": " + errno_text());
  return out.str();
}

StateStore::StateStore(std::string directory) : directory_(std::move(directory)) {
  make_directories(directory_);
  const std::string lock_path = directory_ + "/lock";
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) throw StoreError("opening " + lock_path + ": " + errno_text());
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const bool busy = errno == EWOULDBLOCK;
    const std::string why = errno_text();
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (busy) throw StoreError("another hostlbd uses the state directory " + directory_);
    throw StoreError("locking " + lock_path + ": " + why);
  }
}

StateStore::~StateStore() {
  if (journal_fd_ >= 0) ::close(journal_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::string StateStore::journal_path(uint64_t generation) const {
  return directory_ + "/journal-" + std::to_string(generation) + ".jsonl";
}

std::optional<PersistedState> StateStore::load_replayed() {
  auto loaded = load();
  if (!loaded) return std::nullopt;
  for (size_t i = 0; i < loaded->journal.size(); ++i) {
    try {
      replay_journal_record(loaded->snapshot, loaded->journal[i]);
    } catch (const DocumentError& e) {
      throw StoreError("journal record " + std::to_string(i + 1) + " of " + directory_ +
                       " does not apply: " + e.what());
    }
  }
  return std::move(loaded->snapshot);
}

std::optional<StateStore::Loaded> StateStore::load() {
  const std::string path = state_path();
  if (::access(path.c_str(), F_OK) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw StoreError("cannot access " + path + ": " + errno_text());
  }
  Loaded loaded;
  try {
    loaded.snapshot = persisted_state_from_text(read_file(path));
  } catch (const DocumentError& e) {
    throw StoreError(path + " is corrupt: " + e.what());
  }
  generation_ = loaded.snapshot.generation;
  const std::string journal = journal_path(generation_);
  if (::access(journal.c_str(), F_OK) == 0) {
    const std::string text = read_file(journal);
    size_t start = 0;
    while (start < text.size()) {
      const size_t nl = text.find('\n', start);
      if (nl == std::string::npos) {
        spdlog::warn("{}: dropping an incomplete last record (a crash while writing it)", journal);
        if (::truncate(journal.c_str(), static_cast<off_t>(start)) != 0)
          throw StoreError("truncating " + journal + ": " + errno_text());
        break;
      }
      try {
        loaded.journal.push_back(
            journal_record_from_line(std::string_view(text).substr(start, nl - start)));
      } catch (const DocumentError& e) {
        throw StoreError(journal + " is corrupt: record " +
                         std::to_string(loaded.journal.size() + 1) + " (at byte " +
                         std::to_string(start) + "): " + e.what());
      }
      start = nl + 1;
    }
  }
  journal_length_ = loaded.journal.size();
  // Journals of other generations were folded into a snapshot already (a
  // crash came between writing the snapshot and removing them).
  for (const auto& entry : std::filesystem::directory_iterator(directory_)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("journal-", 0) == 0 && entry.path().string() != journal)
      std::filesystem::remove(entry.path());
  }
  return loaded;
}

namespace {

// Temporary file, fsync, rename, fsync of the directory: a crash leaves
// the old file or the new one, never a part.
void write_atomically(const std::string& directory, const std::string& path,
                      const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) throw StoreError("creating " + tmp + ": " + errno_text());
  try {
    write_all(fd, text, tmp);
    if (::fsync(fd) != 0) throw StoreError("syncing " + tmp + ": " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw StoreError("renaming " + tmp + " to " + path + ": " + why);
  }
  const int dir = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);  // makes the rename durable; a failure here loses nothing already applied
    ::close(dir);
  }
}

}  // namespace

void StateStore::save_health(const std::string& text) {
  write_atomically(directory_, health_path(), text);
}

std::optional<std::string> StateStore::load_health() const {
  if (!std::filesystem::exists(health_path())) return std::nullopt;
  return read_file(health_path());
}

void StateStore::save_chaining(const std::string& text) {
  write_atomically(directory_, chaining_path(), text);
}

std::optional<std::string> StateStore::load_chaining() const {
  if (!std::filesystem::exists(chaining_path())) return std::nullopt;
  return read_file(chaining_path());
}

void StateStore::save(PersistedState& state) {
  state.generation = generation_ + 1;
  write_atomically(directory_, state_path(), persisted_state_to_text(state));
  // The new snapshot contains everything the old journal said.
  if (journal_fd_ >= 0) ::close(journal_fd_);
  journal_fd_ = -1;
  ::unlink(journal_path(generation_).c_str());
  generation_ = state.generation;
  journal_length_ = 0;
}

void StateStore::append(const JournalRecord& record) {
  const std::string path = journal_path(generation_);
  if (journal_fd_ < 0) {
    journal_fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (journal_fd_ < 0) throw StoreError("opening " + path + ": " + errno_text());
  }
  write_all(journal_fd_, journal_record_to_line(record) + "\n", path);
  if (::fdatasync(journal_fd_) != 0) throw StoreError("syncing " + path + ": " + errno_text());
  ++journal_length_;
}

}  // namespace hostlb
