// Health probes as the kernel's sockets make them: one non-blocking socket
// a probe, driven by the caller's event loop (no thread, no blocking call).
#pragma once

#include <poll.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "hostlb/policies/health.h"
#include "hostlb/policies/model.h"

namespace hostlb {

struct ProbeSpec {
  // What to probe for (its kind, and for HTTP the path and the statuses
  // that count as up); its timing is the caller's.
  HealthCheck check;
  IpAddress target;
  uint16_t port = 0;
  // The address probes leave from (bound before connecting); unset: the
  // kernel's choice for the route to the target.
  std::optional<IpAddress> source{};
};

// What a probe found, without its latency (the caller times it).
struct ProbeOutcome {
  bool ok = false;
  std::string detail;
};

// One probe under way. The caller waits for events() on fd() and calls
// on_ready() until it returns an outcome, or calls on_timeout() at its
// deadline. Destroying it closes the socket (a TCP probe's connection is
// reset, so no TIME_WAIT is left on the host).
class Probe {
 public:
  virtual ~Probe() = default;
  // An outcome known at once (the socket could not even be made or the
  // connect was refused on the spot); then there is nothing to wait for.
  virtual std::optional<ProbeOutcome> finished() const = 0;
  virtual int fd() const = 0;
  virtual short events() const = 0;
  virtual std::optional<ProbeOutcome> on_ready(short revents) = 0;
  // What no answer within the timeout means: down for TCP and HTTP, up
  // for UDP (only an ICMP port unreachable says a UDP service is down).
  virtual ProbeOutcome on_timeout() = 0;
};

class Prober {
 public:
  virtual ~Prober() = default;
  virtual std::unique_ptr<Probe> start(const ProbeSpec& spec) = 0;
};

std::unique_ptr<Prober> make_socket_prober();

}  // namespace hostlb
