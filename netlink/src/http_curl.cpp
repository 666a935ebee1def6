#include <curl/curl.h>
#include <poll.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "hostlb/netlink/http.h"

namespace hostlb {

namespace {

// libcurl's global set-up is not thread-safe and must happen once; the
// process lives with it (libcurl keeps no per-use state there).
void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      throw std::runtime_error("libcurl: global initialisation failed");
  });
}

}  // namespace

struct HttpClient::Impl {
  struct Transfer {
    Id id = 0;
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string body;
    Piece piece;
    Done done;
    bool canceled = false;
  };

  IoDriver& io;
  TlsFiles tls;
  CURLM* multi = nullptr;
  std::map<Id, Transfer> transfers;
  Id next_id = 1;
  int in_curl = 0;  // inside curl_multi_socket_action: its callbacks may not add or remove handles
  std::vector<Id> to_add;  // started from such a callback: added once curl has returned

  Impl(IoDriver& driver, TlsFiles files) : io(driver), tls(std::move(files)) {}

  static int on_socket_change(CURL*, curl_socket_t fd, int what, void* self, void*) {
    auto* impl = static_cast<Impl*>(self);
    short events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= POLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= POLLOUT;
    impl->io.watch_socket(fd, what == CURL_POLL_REMOVE ? 0 : events);
    return 0;
  }

  static int on_timer_change(CURLM*, long timeout_ms, void* self) {
    auto* impl = static_cast<Impl*>(self);
    if (timeout_ms < 0)
      impl->io.set_timer(std::nullopt);
    else
      impl->io.set_timer(std::chrono::milliseconds(timeout_ms));
    return 0;
  }

  static size_t on_data(char* data, size_t size, size_t count, void* user) {
    auto* transfer = static_cast<Transfer*>(user);
    const size_t n = size * count;
    if (transfer->canceled) return 0;  // ends the transfer
    if (transfer->piece)
      transfer->piece(std::string_view(data, n));
    else
      transfer->body.append(data, n);
    return n;
  }

  Id start(const std::string& url, const std::string& request,
           std::optional<std::chrono::milliseconds> timeout, Piece piece, Done done) {
    const Id id = next_id++;
    Transfer& t = transfers[id];
    t.id = id;
    t.piece = std::move(piece);
    t.done = std::move(done);
    t.easy = curl_easy_init();
    if (t.easy == nullptr) {
      transfers.erase(id);
      throw std::runtime_error("libcurl: cannot create a transfer for " + url);
    }
    t.headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(t.easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(t.easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.size()));
    curl_easy_setopt(t.easy, CURLOPT_COPYPOSTFIELDS, request.c_str());
    curl_easy_setopt(t.easy, CURLOPT_HTTPHEADER, t.headers);
    curl_easy_setopt(t.easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(t.easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(kConnectTimeout.count()));
    if (timeout) curl_easy_setopt(t.easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout->count()));
    curl_easy_setopt(t.easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(t.easy, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(t.easy, CURLOPT_TCP_KEEPINTVL, 2L);
    curl_easy_setopt(t.easy, CURLOPT_WRITEFUNCTION, &Impl::on_data);
    curl_easy_setopt(t.easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(t.easy, CURLOPT_PRIVATE, &t);  // a map's node: it stays where it is
    if (!tls.ca_file.empty()) curl_easy_setopt(t.easy, CURLOPT_CAINFO, tls.ca_file.c_str());
    if (!tls.cert_file.empty()) curl_easy_setopt(t.easy, CURLOPT_SSLCERT, tls.cert_file.c_str());
    if (!tls.key_file.empty()) curl_easy_setopt(t.easy, CURLOPT_SSLKEY, tls.key_file.c_str());
    if (in_curl > 0) {
      to_add.push_back(id);
      return id;
    }
    if (const CURLMcode rc = curl_multi_add_handle(multi, t.easy); rc != CURLM_OK) {
      release(t);
      transfers.erase(id);
      throw std::runtime_error(std::string("libcurl: cannot start a request to ") + url + ": " +
                               curl_multi_strerror(rc));
    }
    return id;
  }

  // The transfers started from curl's callbacks. One that curl refuses ends
  // at once with the reason, as a transfer that failed.
  void add_deferred() {
    std::vector<Id> ids;
    ids.swap(to_add);
    for (Id id : ids) {
      auto it = transfers.find(id);
      if (it == transfers.end() || it->second.canceled) continue;
      if (const CURLMcode rc = curl_multi_add_handle(multi, it->second.easy); rc != CURLM_OK) {
        Done done = std::move(it->second.done);
        release(it->second);
        transfers.erase(it);
        HttpResponse failed;
        failed.transport_error =
            std::string("cannot start the request: ") + curl_multi_strerror(rc);
        if (done) done(std::move(failed));
      }
    }
  }

  void release(Transfer& t) {
    if (t.easy != nullptr) {
      curl_multi_remove_handle(multi, t.easy);
      curl_easy_cleanup(t.easy);
      t.easy = nullptr;
    }
    curl_slist_free_all(t.headers);
    t.headers = nullptr;
  }

  void act(curl_socket_t fd, int flags) {
    int running = 0;
    ++in_curl;
    curl_multi_socket_action(multi, fd, flags, &running);
    --in_curl;
    add_deferred();
    finish();
  }

  // The transfers curl has ended (and those canceled from callbacks).
  void finish() {
    std::vector<std::pair<Done, HttpResponse>> ended;
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      void* priv = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
      auto it = transfers.find(static_cast<Transfer*>(priv)->id);
      if (it == transfers.end()) continue;
      Transfer& t = it->second;
      if (!t.canceled) {
        HttpResponse response;
        if (msg->data.result != CURLE_OK)
          response.transport_error = curl_easy_strerror(msg->data.result);
        curl_easy_getinfo(t.easy, CURLINFO_RESPONSE_CODE, &response.status);
        response.body = std::move(t.body);
        ended.emplace_back(std::move(t.done), std::move(response));
      }
      release(t);
      transfers.erase(it);
    }
    for (auto it = transfers.begin(); it != transfers.end();) {
      if (it->second.canceled) {
        release(it->second);
        it = transfers.erase(it);
      } else {
        ++it;
      }
    }
    // Last: a callback may start requests or destroy its owner's state.
    for (auto& [done, response] : ended)
      if (done) done(std::move(response));
  }
};

HttpClient::HttpClient(IoDriver& io, TlsFiles tls)
    : impl_(std::make_unique<Impl>(io, std::move(tls))) {
  global_init();
  impl_->multi = curl_multi_init();
  if (impl_->multi == nullptr) throw std::runtime_error("libcurl: cannot create a multi handle");
  curl_multi_setopt(impl_->multi, CURLMOPT_SOCKETFUNCTION, &Impl::on_socket_change);
  curl_multi_setopt(impl_->multi, CURLMOPT_SOCKETDATA, impl_.get());
  curl_multi_setopt(impl_->multi, CURLMOPT_TIMERFUNCTION, &Impl::on_timer_change);
  curl_multi_setopt(impl_->multi, CURLMOPT_TIMERDATA, impl_.get());
}

HttpClient::~HttpClient() {
  for (auto& [id, t] : impl_->transfers) impl_->release(t);
  curl_multi_cleanup(impl_->multi);
  impl_->io.set_timer(std::nullopt);
}

HttpClient::Id HttpClient::post(const std::string& url, const std::string& body,
                                std::chrono::milliseconds timeout, Done done) {
  return impl_->start(url, body, timeout, nullptr, std::move(done));
}

HttpClient::Id HttpClient::stream(const std::string& url, const std::string& body, Piece piece,
                                  Done done) {
  return impl_->start(url, body, std::nullopt, std::move(piece), std::move(done));
}

void HttpClient::cancel(Id id) {
  auto it = impl_->transfers.find(id);
  if (it == impl_->transfers.end()) return;
  it->second.canceled = true;
  if (impl_->in_curl > 0) return;  // removed once curl has returned
  impl_->release(it->second);
  impl_->transfers.erase(it);
}

void HttpClient::on_socket(int fd, short revents) {
  int flags = 0;
  if (revents & POLLIN) flags |= CURL_CSELECT_IN;
  if (revents & POLLOUT) flags |= CURL_CSELECT_OUT;
  if (revents & (POLLERR | POLLHUP)) flags |= CURL_CSELECT_ERR;
  impl_->act(fd, flags);
}

void HttpClient::on_timer() { impl_->act(CURL_SOCKET_TIMEOUT, 0); }

}  // namespace hostlb
