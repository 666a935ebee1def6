#include "state_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

std::optional<PersistedState> StateStore::load() const {
  const std::string path = state_path();
  if (::access(path.c_str(), F_OK) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw StoreError("cannot access " + path + ": " + errno_text());
  }
  const std::string text = read_file(path);
  try {
    return persisted_state_from_text(text);
  } catch (const DocumentError& e) {
    throw StoreError(path + " is corrupt: " + e.what());
  }
}

void StateStore::save(const PersistedState& state) const {
  const std::string path = state_path();
  const std::string tmp = path + ".tmp";
  const std::string text = persisted_state_to_text(state);
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
  const int dir = ::open(directory_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);  // makes the rename durable; a failure here loses nothing already applied
    ::close(dir);
  }
}

}  // namespace hostlb
