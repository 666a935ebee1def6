// The event loop as libcurl's driver: the HTTP client's sockets and its one
// timer become the loop's watches and a Timer.
#pragma once

#include "event_loop.h"
#include "hostlb/netlink/http.h"

namespace hostlb {

class LoopIo final : public IoDriver {
 public:
  explicit LoopIo(EventLoop& loop)
      : loop_(loop), timer_(loop, [this] {
          if (client_ != nullptr) client_->on_timer();
        }) {}
  // The client it drives (created after its driver).
  void attach(HttpClient* client) { client_ = client; }

  void watch_socket(int fd, short events) override {
    if (events == 0) {
      loop_.unwatch(fd);
      return;
    }
    loop_.watch(fd, events, [this, fd](short revents) {
      if (client_ != nullptr) client_->on_socket(fd, revents);
    });
  }
  void set_timer(std::optional<std::chrono::milliseconds> delay) override {
    if (delay)
      timer_.arm_in(*delay);
    else
      timer_.disarm();
  }

 private:
  EventLoop& loop_;
  Timer timer_;
  HttpClient* client_ = nullptr;
};

}  // namespace hostlb
