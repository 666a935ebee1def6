// A lab of network namespaces for integration tests: the topology of
// scripts/lab.sh (clients c1 c2, hypervisor hv with br0, backends vm1 vm2)
// under a prefix unique to this test process, deleted at the end even when
// the test fails. Sockets are opened directly inside the namespaces.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hostlb/policies/control_protocol.h"

namespace hostlb::lab {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `command` with /bin/sh; the test's own helper, never given outside data.
CommandResult sh(const std::string& command);

// "ip:port" or "[ip6]:port" of a socket address.
std::string endpoint_of(const void* sockaddr);

struct VmInfo {
  const char* name;
  const char* mac;
  const char* ipv4;
  const char* ipv6;
};
inline constexpr VmInfo kVm1{"vm1", "02:00:00:00:01:11", "198.18.1.11", "2001:db8:1::11"};
inline constexpr VmInfo kVm2{"vm2", "02:00:00:00:01:12", "198.18.1.12", "2001:db8:1::12"};
inline constexpr const char* kClient1V4 = "198.18.0.1";
inline constexpr const char* kClient2V4 = "198.18.0.2";
inline constexpr const char* kClient1V6 = "2001:db8::1";

class Lab {
 public:
  // kHost: scripts/lab.sh's topology; kFleet: scripts/fleet-lab.sh's
  // (client cl, router rt, gateways gw1 gw2, fabric fab, hypervisors hv1
  // with vm1 vm2 and hv2 with vm3 vm4).
  enum class Topology { kHost, kFleet };
  explicit Lab(Topology topology = Topology::kHost);
  ~Lab();
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  // Full namespace name of a role ("hv", "c1", "vm1", ...).
  std::string ns(const std::string& role) const { return prefix_ + "-" + role; }
  const std::string& prefix() const { return prefix_; }
  const std::string& dir() const { return dir_; }

  CommandResult in(const std::string& role, const std::string& command) const;
  // Client `role` sends frames for `vip` to `mac`, as a gateway would.
  void gateway(const std::string& client, const std::string& vip, const std::string& mac) const;

  // A socket created inside the role's namespace (it stays there).
  int socket_in(const std::string& role, int domain, int type) const;

  // While it lives, the calling thread is in the role's namespace (for
  // hostlb's netlink classes, whose sockets open where they are used).
  class Entered {
   public:
    Entered(const Lab& lab, const std::string& role);
    ~Entered();
    Entered(const Entered&) = delete;
    Entered& operator=(const Entered&) = delete;

   private:
    int self_ = -1;
  };

 private:
  std::string prefix_;
  std::string dir_;
  std::string script_;
};

// A TCP and UDP server in a backend namespace. TCP: sends a banner line
// "NAME local=A peer=B", then counts bytes until EOF and answers
// "bytes=N". UDP: answers each datagram with the banner.
class BackendServer {
 public:
  BackendServer(const Lab& lab, const std::string& role, int port, bool ipv6 = false);
  ~BackendServer();

 private:
  void tcp_loop();
  void udp_loop();
  void serve(int fd);

  std::string name_;
  int tcp_fd_ = -1;
  int udp_fd_ = -1;
  int stop_pipe_[2] = {-1, -1};
  std::thread tcp_thread_, udp_thread_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
};

// A connected TCP client in a client namespace.
class TcpClient {
 public:
  // Throws std::runtime_error if the connection is not established within
  // `timeout`. `source_port` 0 lets the kernel choose.
  TcpClient(const Lab& lab, const std::string& role, const std::string& ip, int port,
            std::chrono::milliseconds timeout = std::chrono::seconds(3),
            const std::string& source_ip = "", int source_port = 0);
  ~TcpClient();
  std::string read_line(std::chrono::milliseconds timeout = std::chrono::seconds(3));
  void send_all(const std::string& data);
  void shutdown_write();
  std::string peer() const;
  std::string local() const;
  int local_port() const;

 private:
  int fd_ = -1;
};

// Sends one datagram from a connected UDP socket and returns the reply, or
// "" on timeout. A connected socket only accepts replies from the address it
// is connected to, so any reply proves it came from `ip:port`.
std::string udp_exchange(const Lab& lab, const std::string& role, const std::string& ip, int port,
                         std::chrono::milliseconds timeout = std::chrono::seconds(2));

// hostlbd running in a namespace of a lab (the hypervisor's by default).
class Hostlbd {
 public:
  Hostlbd(const Lab& lab, std::vector<std::string> args, std::string role = "hv");
  ~Hostlbd();
  // Starts and waits for READY=1 (sd_notify). Returns false if the process
  // exited first or did not become ready in time.
  bool start(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Sends `signal`, waits, returns the exit status (128+N if killed).
  int stop(int signal);
  // Runs to completion (for --check, --cleanup, refused documents).
  CommandResult run_to_exit(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  std::string log() const;
  pid_t pid() const { return pid_; }
  void signal(int signo) const;
  // Waits until the log contains `needle` `count` times.
  bool wait_for_log(const std::string& needle, int count = 1,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  void spawn();

  const Lab& lab_;
  std::vector<std::string> args_;
  std::string role_;
  std::string log_path_;
  std::string notify_path_;
  pid_t pid_ = -1;
};

// A raw JSON-RPC client of hostlbd's control socket.
class ControlClient {
 public:
  explicit ControlClient(const std::string& path);
  ~ControlClient();
  control::Response call(const std::string& method,
                         const nlohmann::json& params = nlohmann::json::object());

 private:
  int fd_ = -1;
  int id_ = 0;
  std::string buffer_;
};

// Writes `text` to a file in the lab directory and returns its path.
std::string write_lab_file(const Lab& lab, const std::string& name, const std::string& text);

}  // namespace hostlb::lab
