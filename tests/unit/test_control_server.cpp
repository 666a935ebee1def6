// Component tests: the control socket and its methods against the agent on
// stateful kernel fakes. No root: the socket lives in a temporary directory.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "control_handler.h"
#include "control_server.h"
#include "fakes/fake_kernel.h"
#include "hostlb/policies/control_protocol.h"
#include "hostlb/policies/gateway.h"

namespace hostlb {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

class Client {
 public:
  explicit Client(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("connect failed");
  }
  ~Client() { ::close(fd_); }
  void send_raw(const std::string& data) {
    ASSERT_EQ(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size()));
  }
  // The next reply line, or "" on timeout/EOF.
  std::string read_line(std::chrono::milliseconds timeout = 3s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (buffer_.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd pfd{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return "";
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return "";
      buffer_.append(buf, static_cast<size_t>(n));
    }
    const auto nl = buffer_.find('\n');
    std::string line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    return line;
  }
  control::Response call(const std::string& method, const json& params = json::object()) {
    send_raw(control::encode_request(++id_, method, params));
    return control::decode_response(read_line());
  }
  bool closed_by_peer(std::chrono::milliseconds timeout = 3s) {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK) == 0;
  }

 private:
  int fd_ = -1;
  int id_ = 0;
  std::string buffer_;
};

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("hostlb-ctl-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    store_ = std::make_unique<StateStore>((dir_ / "state").string());
    reconciler_ = std::make_unique<Reconciler>(nft_, routes_, sysctls_, ReconcilerOptions{});
    agent_ = std::make_unique<Agent>(*reconciler_, *store_, conntrack_);
    agent_->start(State{});
    handler_ = std::make_unique<ControlHandler>(*agent_, routes_, sysctls_, DocumentOptions{"br0"},
                                                DaemonInfo{"test", "dir", "sock", "hv1"});
    ControlServerOptions options;
    options.path = (dir_ / "ctl.sock").string();
    options.max_request_bytes = 64 * 1024;
    options.stall_timeout = 300ms;
    server_ = std::make_unique<ControlServer>(
        loop_, options,
        [this](const PeerCredentials& peer, std::string_view line, std::string_view document) {
          return handler_->handle(peer, line, document);
        },
        [](int code, const std::string& message) {
          return control::encode_error(nullptr, {code, message, ""});
        });
    server_->open();
    thread_ = std::thread([this] {
      while (!stop_) loop_.run_once(std::chrono::milliseconds(20));
    });
  }
  void TearDown() override {
    stop_ = true;
    thread_.join();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string path() const { return (dir_ / "ctl.sock").string(); }

  std::filesystem::path dir_;
  testing::FakeNft nft_;
  testing::FakeRoutes routes_;
  testing::FakeSysctls sysctls_;
  testing::FakeConntrack conntrack_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<Reconciler> reconciler_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<ControlHandler> handler_;
  SystemClock clock_;
  EventLoop loop_{clock_};
  std::unique_ptr<ControlServer> server_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(ControlTest, CommandsChangeTheStateAndTheKernel) {
  Client c(path());
  auto r = c.call("backend.add",
                  {{"name", "web-1"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.11"}});
  ASSERT_TRUE(r.ok) << r.error.message;
  EXPECT_EQ(r.result["changes"][0],
            "+ backend web-1 mac 02:00:00:00:01:11 ipv4 198.18.1.11 bridge br0");
  r = c.call("service.add", {{"service", "203.0.113.10:80/tcp"},
                             {"backends", {{{"name", "web-1"}, {"port", 8080}}}}});
  ASSERT_TRUE(r.ok) << r.error.message;
  EXPECT_NE(nft_.ruleset().find("203.0.113.10 . tcp . 80 : 198.18.1.11 . 8080"), std::string::npos);
  r = c.call("service.attach",
             {{"service", "203.0.113.10:80/tcp"}, {"backend", "web-1"}, {"port", 9090}});
  ASSERT_TRUE(r.ok) << r.error.message;
  EXPECT_NE(nft_.ruleset().find("203.0.113.10 . tcp . 80 : 198.18.1.11 . 9090"), std::string::npos);
  r = c.call("service.list");
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.result[0]["backends"][0]["port"], 9090);
  r = c.call("backend.list");
  EXPECT_EQ(r.result[0]["services"][0], "203.0.113.10:80/tcp:9090");
  r = c.call("get");
  EXPECT_EQ(r.result["services"][0]["vip"], "203.0.113.10");
  r = c.call("service.detach", {{"service", "203.0.113.10:80/tcp"}, {"backend", "web-1"}});
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(nft_.ruleset().find("add element inet hostlb targets4"), std::string::npos);
  EXPECT_NE(nft_.ruleset().find("add element inet hostlb guard_vips4 {\n  203.0.113.10\n}"),
            std::string::npos)
      << "the service is still there, so its VIP is still guarded";
  r = c.call("status");
  EXPECT_EQ(r.result["backends"], 1);
  EXPECT_EQ(r.result["bindings"], 0);
  EXPECT_TRUE(r.result["last_error"].is_null());
}

// A host keeps the whole fleet state: it answers `which` and `gateway
// table` from the model, and leaves the digest to gateways.
TEST_F(ControlTest, AHostAnswersWhichFromTheModel) {
  Client c(path());
  ASSERT_TRUE(c.call("backend.add",
                     {{"name", "web-1"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.11"}})
                  .ok);
  ASSERT_TRUE(c.call("backend.add", {{"name", "web-2"},
                                     {"mac", "02:00:00:00:01:12"},
                                     {"ipv4", "198.18.1.12"},
                                     {"host", "elsewhere"}})
                  .ok);
  ASSERT_TRUE(c.call("service.add", {{"service", "203.0.113.10:80/tcp"},
                                     {"backends",
                                      {{{"name", "web-1"}, {"port", 80}},
                                       {{"name", "web-2"}, {"port", 80}, {"weight", 3u}}}}})
                  .ok);
  EXPECT_EQ(nft_.ruleset().find("198.18.1.12"), std::string::npos) << "web-2 runs elsewhere";
  const auto service = *parse_service_key("203.0.113.10:80/tcp");
  for (uint16_t port : {1000, 2000, 3000}) {
    auto r = c.call("which", {{"service", "203.0.113.10:80/tcp"},
                              {"client", "198.18.0.7:" + std::to_string(port)}});
    ASSERT_TRUE(r.ok) << r.error.message;
    const auto table = *compile_gateway_service(agent_->current(), service);
    const auto choice = choose(table, *IpAddress::parse("198.18.0.7"), port);
    EXPECT_EQ(r.result["backend"], *choice.backend);
    EXPECT_EQ(r.result["row"], choice.row);
    EXPECT_FALSE(r.result.contains("kernel_mac")) << "a host has no gateway table";
  }
  auto t = c.call("gateway.table", {{"service", "203.0.113.10:80/tcp"}});
  ASSERT_TRUE(t.ok) << t.error.message;
  EXPECT_EQ(t.result["backends"][1]["weight"], 3);
  EXPECT_GT(t.result["backends"][1]["rows"].get<int>(), t.result["backends"][0]["rows"].get<int>());
  auto d = c.call("gateway.digest");
  EXPECT_FALSE(d.ok);
  EXPECT_EQ(d.error.code, control::kRefused);
  auto bad = c.call("which", {{"service", "203.0.113.10:80/tcp"}, {"client", "2001:db8::1:5"}});
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.error.path, "params.client");
}

TEST_F(ControlTest, ApplyIsIdempotentAndDryRunChangesNothing) {
  Client c(path());
  const std::string doc = R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":80}]}]})";
  auto r = c.call("apply", {{"document_text", doc}, {"dry_run", true}});
  ASSERT_TRUE(r.ok) << r.error.message;
  EXPECT_EQ(r.result["changes"].size(), 3u);
  EXPECT_EQ(agent_->current(), State{});
  const int transactions = nft_.transactions;
  r = c.call("apply", {{"document_text", doc}});
  ASSERT_TRUE(r.ok) << r.error.message;
  EXPECT_TRUE(r.result["kernel_changed"]);
  EXPECT_EQ(nft_.transactions, transactions + 1);
  r = c.call("apply", {{"document_text", doc}});
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(r.result["changes"].empty());
  EXPECT_FALSE(r.result["kernel_changed"]);
  EXPECT_EQ(nft_.transactions, transactions + 1) << "the same document twice changes nothing";
}

// hostlbctl sends a document raw after the request line: it may hold
// newlines, arrive in pieces, and be followed at once by the next request.
TEST_F(ControlTest, ADocumentAfterTheRequestLineIsReadWholeWhateverItHolds) {
  Client c(path());
  const std::string doc = R"({"version":1,
    "backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11"}],
    "services":[{"vip":"203.0.113.10","port":80,"protocol":"tcp","backends":[{"name":"web-1","port":80}]}]}
)";
  const std::string line =
      control::encode_request(7, "apply", {{"document_bytes", doc.size()}, {"dry_run", false}});
  c.send_raw(line + doc.substr(0, 40));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(c.read_line(100ms), "") << "no answer before the whole document is there";
  c.send_raw(doc.substr(40) + control::encode_request(8, "status", json::object()));
  const auto applied = control::decode_response(c.read_line());
  ASSERT_TRUE(applied.ok) << applied.error.message;
  EXPECT_EQ(applied.result["changes"].size(), 3u);
  EXPECT_EQ(agent_->current().services.size(), 1u);
  const auto status = control::decode_response(c.read_line());
  ASSERT_TRUE(status.ok) << status.error.message;
  EXPECT_EQ(status.result["services"], 1);

  // A count that is not the document's, or a document too large to take.
  auto r = c.call("apply", {{"document_bytes", -1}});
  EXPECT_EQ(r.error.code, control::kInvalidParams);
  EXPECT_EQ(r.error.path, "params.document_bytes");
  r = c.call("apply", {{"document_bytes", 0}, {"document_text", doc}});
  EXPECT_EQ(r.error.code, control::kInvalidParams);
  c.send_raw(control::encode_request(9, "apply", {{"document_bytes", 1 << 20}}));
  EXPECT_EQ(control::decode_response(c.read_line()).error.code, control::kRequestTooLarge);
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(agent_->current().services.size(), 1u);
}

TEST_F(ControlTest, BadInputIsRefusedWithItsPathAndChangesNothing) {
  Client c(path());
  ASSERT_TRUE(c.call("backend.add",
                     {{"name", "web-1"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.11"}})
                  .ok);
  const State before = agent_->current();
  const int transactions = nft_.transactions;
  struct Case {
    std::string method;
    json params;
    int code;
    std::string path;
  };
  for (const Case& k : {
           Case{"nope", json::object(), control::kMethodNotFound, ""},
           Case{"backend.add",
                {{"name", "web-2"}, {"mac", "zz"}, {"ipv4", "198.18.1.12"}},
                control::kInvalidParams,
                "params.mac"},
           Case{"backend.add",
                {{"name", "web-2"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.12"}},
                control::kInvalidParams,
                "params.mac"},
           Case{"backend.add",
                {{"name", "web-1"}, {"mac", "02:00:00:00:01:12"}, {"ipv4", "198.18.1.12"}},
                control::kInvalidParams,
                "params.name"},
           Case{"backend.add", {{"name", 5}}, control::kInvalidParams, "params.name"},
           Case{"backend.add",
                {{"name", "x"}, {"mac", "02:00:00:00:01:12"}, {"ipv4", "1.2.3.4"}, {"vlan", 1}},
                control::kInvalidParams,
                "params.vlan"},
           Case{"backend.del", {{"name", "web-9"}}, control::kInvalidParams, "params.name"},
           Case{"service.add",
                {{"service", "203.0.113.10:80"}},
                control::kInvalidParams,
                "params.service"},
           Case{"service.add",
                {{"service", "203.0.113.10:80/tcp"},
                 {"backends", {{{"name", "web-1"}, {"port", "80"}}}}},
                control::kInvalidParams,
                "params.backends[0].port"},
           Case{"service.add",
                {{"service", "[2001:db8:f00::1]:80/tcp"},
                 {"backends", {{{"name", "web-1"}, {"port", 80}}}}},
                control::kInvalidParams,
                "params.backends[0].name"},
           Case{"service.attach",
                {{"service", "203.0.113.10:80/tcp"}, {"backend", "web-1"}, {"port", 80}},
                control::kInvalidParams,
                "params.service"},
           Case{"service.detach",
                {{"service", "203.0.113.10:80/tcp"}},
                control::kInvalidParams,
                "params.backend"},
           Case{"apply",
                {{"document_text", "{\"version\":1,\"x\":1}"}},
                control::kInvalidParams,
                "params.document.x"},
           Case{"apply", {{"document", 5}}, control::kInvalidParams, "params.document"},
           Case{"apply",
                {{"document_text", "{"}, {"dry_run", "yes"}},
                control::kInvalidParams,
                "params.dry_run"},
       }) {
    auto r = c.call(k.method, k.params);
    EXPECT_FALSE(r.ok) << k.method << " " << k.params.dump();
    EXPECT_EQ(r.error.code, k.code)
        << k.method << " " << k.params.dump() << ": " << r.error.message;
    EXPECT_EQ(r.error.path, k.path)
        << k.method << " " << k.params.dump() << ": " << r.error.message;
  }
  EXPECT_EQ(agent_->current(), before);
  EXPECT_EQ(nft_.transactions, transactions);
}

TEST_F(ControlTest, AKernelFailureIsReportedAndRemembered) {
  Client c(path());
  ASSERT_TRUE(c.call("backend.add",
                     {{"name", "web-1"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.11"}})
                  .ok);
  nft_.failures_to_inject = 2;  // the change, and the whole-table fallback
  auto r = c.call("service.add", {{"service", "203.0.113.10:80/tcp"},
                                  {"backends", {{{"name", "web-1"}, {"port", 80}}}}});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error.code, control::kKernelError);
  EXPECT_NE(r.error.message.find("Operation not permitted"), std::string::npos) << r.error.message;
  EXPECT_TRUE(agent_->current().services.empty());
  r = c.call("status");
  EXPECT_NE(r.result["last_error"]["message"].get<std::string>().find("service.add"),
            std::string::npos);
}

TEST_F(ControlTest, MisbehavingClientsAreDisconnectedAndTheDaemonGoesOn) {
  {
    Client c(path());  // not JSON
    c.send_raw("{this is not json\n");
    EXPECT_EQ(control::decode_response(c.read_line()).error.code, control::kParseError);
    c.send_raw("[]\n");  // the connection stays usable after a bad request
    EXPECT_EQ(control::decode_response(c.read_line()).error.code, control::kInvalidRequest);
  }
  {
    Client c(path());  // larger than the limit, with no newline
    c.send_raw(std::string(70 * 1024, 'x'));
    EXPECT_EQ(control::decode_response(c.read_line()).error.code, control::kRequestTooLarge);
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    Client c(path());  // half a request, then silence
    c.send_raw(R"({"jsonrpc":"2.0","id":1,"meth)");
    EXPECT_EQ(control::decode_response(c.read_line(2s)).error.code, control::kTimeout);
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    Client c(path());  // half a request, then gone
    c.send_raw(R"({"jsonrpc":"2.0","id":1,"method":"backend.add","params":{"name")");
  }
  {
    Client c(path());  // several requests in one write, then shutdown of the sending side
    c.send_raw(control::encode_request(1, "status", json::object()) +
               control::encode_request(2, "get", json::object()));
    EXPECT_TRUE(control::decode_response(c.read_line()).ok);
    EXPECT_TRUE(control::decode_response(c.read_line()).ok);
  }
  Client after(path());
  EXPECT_TRUE(after.call("status").ok);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(server_->client_count(), 1u);
}

TEST_F(ControlTest, ManyClientsAtOnceAreServedOneRequestAtATime) {
  Client setup(path());
  ASSERT_TRUE(setup
                  .call("backend.add",
                        {{"name", "web-1"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.11"}})
                  .ok);
  constexpr int kClients = 8, kServices = 10;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      Client c(path());
      for (int i = 0; i < kServices; ++i) {
        const std::string key =
            "203.0.113." + std::to_string(t + 1) + ":" + std::to_string(1000 + i) + "/tcp";
        if (!c.call("service.add",
                    {{"service", key}, {"backends", {{{"name", "web-1"}, {"port", 80}}}}})
                 .ok)
          ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(agent_->current().services.size(), static_cast<size_t>(kClients * kServices));
  testing::FakeNft fresh;
  fresh.replace(agent_->datapath(), MarkLayout(MarkLayout::kDefaultMask));
  EXPECT_EQ(nft_.ruleset(), fresh.ruleset());
}

// hostlbctl connections streams: the daemon reads the kernel's listing only
// as the client reads the reply (a client that stops reading stops the
// listing), and a request sent behind it is answered after it.
TEST_F(ControlTest, ConnectionsAreProducedAsTheClientReadsThemAndRequestsBehindWait) {
  Client c(path());
  ASSERT_TRUE(c.call("backend.add",
                     {{"name", "web-1"}, {"mac", "02:00:00:00:01:11"}, {"ipv4", "198.18.1.11"}})
                  .ok);
  ASSERT_TRUE(c.call("service.add", {{"service", "203.0.113.10:80/tcp"},
                                     {"backends", {{{"name", "web-1"}, {"port", 8080}}}}})
                  .ok);
  constexpr size_t kEntries = 40000;
  const uint32_t mark = MarkLayout(MarkLayout::kDefaultMask).mark_for(1);
  // Set while no request runs: the daemon's loop reads them only for one.
  conntrack_.entries.assign(kEntries, mark);
  const size_t parts = kEntries / conntrack_.listing_part_size;

  c.send_raw(control::encode_request(7, "connections", json::object()) +
             control::encode_request(8, "status", json::object()));
  std::this_thread::sleep_for(300ms);
  EXPECT_LT(conntrack_.parts_read.load(), parts / 4)
      << "the listing went on while nobody read the reply";

  size_t listed = 0, notifications = 0;
  json result;
  for (;;) {
    const std::string line = c.read_line();
    ASSERT_FALSE(line.empty()) << "after " << listed << " entries";
    const json message = json::parse(line);
    if (message.value("method", "") == "connections.batch") {
      EXPECT_EQ(message["params"]["id"], 7);
      listed += message["params"]["connections"].size();
      ++notifications;
      continue;
    }
    result = message;
    break;
  }
  EXPECT_EQ(result["id"], 7) << result.dump();
  EXPECT_EQ(result["result"]["count"], kEntries);
  EXPECT_EQ(listed, kEntries);
  EXPECT_GE(notifications, kEntries / 1000);
  EXPECT_EQ(conntrack_.parts_read.load(), parts) << "each part read once";
  const auto status = control::decode_response(c.read_line());
  EXPECT_TRUE(status.ok) << "the request behind the stream is answered after it";
}

TEST(PeerAuthorization, RootOrTheGroup) {
  EXPECT_TRUE(peer_is_authorized({1, 0, 0, {}}, std::nullopt));
  EXPECT_FALSE(peer_is_authorized({1, 1000, 1000, {}}, std::nullopt));
  EXPECT_FALSE(peer_is_authorized({1, 1000, 1000, {27}}, 999));
  EXPECT_TRUE(peer_is_authorized({1, 1000, 999, {}}, 999));
  EXPECT_TRUE(peer_is_authorized({1, 1000, 1000, {27, 999}}, 999));
}

}  // namespace
}  // namespace hostlb
