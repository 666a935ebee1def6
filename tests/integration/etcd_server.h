// A real etcd (the Debian etcd-server package) for the fleet tests: started
// by the test inside one of its lab's namespaces, on that namespace's
// loopback, with a data directory in the lab's; stopped at the end.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "lab.h"

namespace hostlb::lab {

class EtcdServer {
 public:
  // One member `name` of a cluster whose members are `cluster`
  // ("e1=http://127.0.0.1:P1,..."; empty: a cluster of this one).
  EtcdServer(const Lab& lab, std::string role, int client_port, int peer_port,
             std::string name = "e1", std::string cluster = "")
      : lab_(lab),
        role_(std::move(role)),
        client_port_(client_port),
        peer_port_(peer_port),
        name_(std::move(name)),
        cluster_(cluster.empty() ? name_ + "=" + peer_url() : std::move(cluster)),
        data_dir_(lab.dir() + "/etcd-" + name_) {}
  ~EtcdServer() { stop(SIGKILL); }
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  std::string endpoint(const std::string& ip = "127.0.0.1") const {
    return (tls_dir_.empty() ? "http://" : "https://") + ip + ":" + std::to_string(client_port_);
  }
  // Clients over TLS with certificates: `dir` holds ca.pem, server.pem,
  // server-key.pem (for 127.0.0.1) and a client's client.pem,
  // client-key.pem, all signed by the CA.
  void use_tls(const std::string& dir) { tls_dir_ = dir; }
  // Clients may reach it at this loopback address too.
  void also_listen_on(const std::string& ip) { also_ += "," + endpoint(ip); }
  std::string peer_url() const { return "http://127.0.0.1:" + std::to_string(peer_port_); }
  // Clients in other namespaces reach it over links to its namespace.
  void listen_on_every_address() { listen_ = "0.0.0.0"; }

  // Starts it (again, on the same data) and, unless `wait` is false (a
  // member that needs its peers), waits until it answers.
  bool start(bool wait = true) {
    const std::string log = lab_.dir() + "/etcd-" + name_ + ".log";
    std::vector<std::string> argv = {
        "ip", "netns", "exec", lab_.ns(role_), "etcd", "--name", name_, "--data-dir", data_dir_,
        "--listen-client-urls", endpoint(listen_) + also_, "--advertise-client-urls", endpoint(),
        "--listen-peer-urls", peer_url(), "--initial-advertise-peer-urls", peer_url(),
        "--initial-cluster", cluster_, "--initial-cluster-state", "new",
        // A fleet-wide document is one transaction.
        "--max-txn-ops", "30000", "--max-request-bytes", "33554432", "--heartbeat-interval", "50",
        "--election-timeout", "500", "--logger", "zap", "--log-outputs", log};
    if (!tls_dir_.empty())
      argv.insert(argv.end(), {"--cert-file", tls_dir_ + "/server.pem", "--key-file",
                               tls_dir_ + "/server-key.pem", "--trusted-ca-file",
                               tls_dir_ + "/ca.pem", "--client-cert-auth"});
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      // What etcd prints outside its zap log goes beside it, not into the
      // test's output.
      const int out = ::open((log + ".stderr").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (out >= 0) {
        ::dup2(out, 1);
        ::dup2(out, 2);
      }
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      ::execvp("ip", args.data());
      ::_exit(127);
    }
    return !wait || wait_healthy();
  }

  bool wait_healthy(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (ctl("endpoint health").exit_code == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  void stop(int signo = SIGTERM) {
    if (pid_ <= 0) return;
    ::kill(pid_, signo);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  // etcdctl (API v3) against this member.
  CommandResult ctl(const std::string& args) const {
    const std::string tls = tls_dir_.empty()
                                ? ""
                                : " --cacert=" + tls_dir_ + "/ca.pem --cert=" + tls_dir_ +
                                      "/client.pem --key=" + tls_dir_ + "/client-key.pem";
    return lab_.in(role_,
                   "env ETCDCTL_API=3 etcdctl --dial-timeout=1s --command-timeout=3s "
                   "--endpoints=" +
                       endpoint() + tls + " " + args + " 2>&1");
  }

 private:
  const Lab& lab_;
  std::string role_;
  int client_port_, peer_port_;
  std::string name_;
  std::string cluster_;
  std::string data_dir_;
  std::string listen_ = "127.0.0.1";
  std::string also_;
  std::string tls_dir_;
  pid_t pid_ = -1;
};

}  // namespace hostlb::lab
