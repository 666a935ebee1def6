// ConnectionStats fed by hand: attribution of events to services and
// backends, flushes that are not closes, resyncs that neither lose nor
// double-count, kernel counter readings turned into monotonic totals.
#include <arpa/inet.h>
#include <endian.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#include <vector>

#include "hostlb/netlink/conntrack_events.h"
#include "hostlb/policies/connection_stats.h"

namespace hostlb {
namespace {

const MarkLayout kMarks(MarkLayout::kDefaultMask);

class StatsTest : public ::testing::Test {
 protected:
  StatsTest()
      : web10_{*parse_service_key("203.0.113.10:80/tcp"), "web-1"},
        web20_{*parse_service_key("203.0.113.20:80/tcp"), "web-1"},
        other10_{*parse_service_key("203.0.113.10:80/tcp"), "web-2"},
        stats_(kMarks, [this](uint32_t id) -> const BindingKey* {
          auto it = owners_.find(id);
          return it == owners_.end() ? nullptr : &it->second;
        }) {
    owners_ = {{1, web10_}, {2, web20_}, {3, other10_}};
  }

  StatFigures service(const std::string& key) { return stats_.report().services[key]; }
  StatFigures backend(const std::string& name) { return stats_.report().backends[name]; }

  BindingKey web10_, web20_, other10_;
  std::map<uint32_t, BindingKey> owners_;
  ConnectionStats stats_;
};

TEST_F(StatsTest, EventsAreAttributedToTheServiceAndBackendOfTheirIdentity) {
  stats_.on_new(kMarks.mark_for(1));
  stats_.on_new(kMarks.mark_for(1));
  stats_.on_new(kMarks.mark_for(2));
  stats_.on_new(kMarks.mark_for(3) | 0x1);  // other bits of the mark do not matter
  stats_.on_new(kMarks.mark_for(9));        // no binding: ignored
  stats_.on_destroy(kMarks.mark_for(1));
  EXPECT_EQ(service("203.0.113.10:80/tcp"), (StatFigures{2, 3, 1, 0, 0, 0}));
  EXPECT_EQ(service("203.0.113.20:80/tcp"), (StatFigures{1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(backend("web-1"), (StatFigures{2, 3, 1, 0, 0, 0}));
  EXPECT_EQ(backend("web-2"), (StatFigures{1, 1, 0, 0, 0, 0}));
}

// The BPF host datapath: no events; opened from its counters, closed from
// what each dump no longer holds.
TEST_F(StatsTest, WithoutEventsDumpsSettleWhatClosed) {
  const DeliveryKey key10{*MacAddress::parse("02:00:00:00:01:11"), web10_.service};
  auto reading = [&](uint64_t opened) {
    ConnectionStats::KernelReading r;
    r.opened_by_key[key10] = opened;
    return r;
  };
  auto binding_for = [&](const DeliveryKey& k) -> std::optional<BindingKey> {
    if (k == key10) return web10_;
    return std::nullopt;
  };
  auto dump = [](uint64_t active) {
    ConnectionStats::Dump d;
    if (active) d.active_by_id[1] = active;
    return d;
  };
  stats_.observe(reading(5), binding_for);
  stats_.settle(dump(5));
  EXPECT_EQ(service("203.0.113.10:80/tcp"), (StatFigures{5, 5, 0, 0, 0, 0}));
  // 3 more open, 4 end on their own, hostlbd flushes 2.
  stats_.observe(reading(8), binding_for);
  stats_.on_flush(web10_, 1, 2);
  stats_.settle(dump(2));
  EXPECT_EQ(service("203.0.113.10:80/tcp"), (StatFigures{2, 8, 4, 2, 0, 0}));
  // One opens after the reading, before the dump: counted once, not closed.
  stats_.settle(dump(3));
  EXPECT_EQ(service("203.0.113.10:80/tcp"), (StatFigures{3, 8, 4, 2, 0, 0}));
  stats_.observe(reading(9), binding_for);
  stats_.settle(dump(3));
  EXPECT_EQ(service("203.0.113.10:80/tcp"), (StatFigures{3, 9, 4, 2, 0, 0}));
  stats_.observe(reading(9), binding_for);
  stats_.settle(dump(0));
  EXPECT_EQ(backend("web-1"), (StatFigures{0, 9, 7, 2, 0, 0}));
}

TEST_F(StatsTest, AFlushIsCountedOnceAndItsDestroyEventsAreNotCloses) {
  for (int i = 0; i < 3; ++i) stats_.on_new(kMarks.mark_for(1));
  stats_.on_flush(web10_, 1, 3);
  owners_.erase(1);  // the binding is gone by the time its events arrive
  for (int i = 0; i < 3; ++i) stats_.on_destroy(kMarks.mark_for(1));
  const auto f = backend("web-1");
  EXPECT_EQ(f.flushed, 3u);
  EXPECT_EQ(f.closed, 0u);
  EXPECT_EQ(f.active, 0u);
}

TEST_F(StatsTest, AResyncReplacesCountsAndSkipsEventsTheDumpAlreadyHas) {
  stats_.on_new(kMarks.mark_for(1));  // lost events follow; counts are wrong
  stats_.on_loss();
  ConnectionStats::Dump dump;
  dump.active_by_id = {{1, 4}, {2, 1}, {7, 5}};  // 7: not hostlb's any more
  dump.started_ns = 1000;
  dump.created_during_dump = {42};
  stats_.resync(dump, /*after_loss=*/true);
  stats_.on_new(kMarks.mark_for(1), 41, 900);   // committed before the dump: in it
  stats_.on_new(kMarks.mark_for(1), 42, 1100);  // committed during it, dumped
  stats_.on_new(kMarks.mark_for(1), 43, 1200);  // committed during it, not dumped
  stats_.on_destroy(kMarks.mark_for(2), 950);   // gone before the dump: not in it
  stats_.on_destroy(kMarks.mark_for(2), 1300);  // in the dump, now gone
  EXPECT_EQ(service("203.0.113.10:80/tcp").active, 5u);
  EXPECT_EQ(service("203.0.113.20:80/tcp").active, 0u);
  EXPECT_EQ(service("203.0.113.20:80/tcp").closed, 1u);
  const auto report = stats_.report();
  EXPECT_EQ(report.event_losses, 1u);
  EXPECT_EQ(report.resyncs, 1u);
}

TEST_F(StatsTest, KernelCountersBecomeMonotonicTotalsEvenWhenTheirKeysGo) {
  const DeliveryKey k10{*MacAddress::parse("02:00:00:00:01:11"), web10_.service};
  auto binding_for = [&](const DeliveryKey& k) -> std::optional<BindingKey> {
    if (k == k10) return web10_;
    return std::nullopt;
  };
  stats_.observe({5, 2, {{k10, 3}}, {{k10, 2}}}, binding_for);
  EXPECT_EQ(service("203.0.113.10:80/tcp").refused, 3u);
  EXPECT_EQ(service("203.0.113.10:80/tcp").misses, 2u);
  stats_.observe({6, 2, {{k10, 4}}, {{k10, 2}}}, binding_for);
  EXPECT_EQ(service("203.0.113.10:80/tcp").refused, 4u);
  stats_.observe({6, 2, {}, {{k10, 2}}}, binding_for);  // the refusal ended
  EXPECT_EQ(service("203.0.113.10:80/tcp").refused, 4u) << "kept";
  stats_.observe({6, 2, {{k10, 1}}, {{k10, 2}}}, binding_for);  // refused again, a new element
  EXPECT_EQ(service("203.0.113.10:80/tcp").refused, 5u);
  EXPECT_EQ(stats_.report().guard_drops, 6u);
}

TEST_F(StatsTest, LimitedAttemptsAreCountedPerServiceOnlyAndShownAsMetrics) {
  const ServiceKey web10 = web10_.service;
  auto no_binding = [](const DeliveryKey&) -> std::optional<BindingKey> { return std::nullopt; };
  ConnectionStats::KernelReading reading;
  reading.limited = 7;
  reading.limited_by_service = {{web10, 7}};
  stats_.observe(reading, no_binding);
  reading.limited = 9;
  reading.limited_by_service = {{web10, 9}};
  stats_.observe(reading, no_binding);
  EXPECT_EQ(service("203.0.113.10:80/tcp").limited, 9u);
  // The meter's set was rebuilt (a lower count): all of it is new.
  reading.limited = 11;
  reading.limited_by_service = {{web10, 2}};
  stats_.observe(reading, no_binding);
  const auto report = stats_.report();
  EXPECT_EQ(report.services.at("203.0.113.10:80/tcp").limited, 11u);
  EXPECT_EQ(report.limited, 11u);
  for (const auto& [name, figures] : report.backends) EXPECT_EQ(figures.limited, 0u) << name;
  const std::string text = render_prometheus(report);
  EXPECT_NE(
      text.find("hostlb_service_connections_limited_total{service=\"203.0.113.10:80/tcp\"} 11\n"),
      std::string::npos)
      << text;
  EXPECT_EQ(text.find("hostlb_backend_connections_limited_total"), std::string::npos)
      << "a rate is a service's, not a backend's";
  EXPECT_NE(text.find("hostlb_connections_limited_all_total 11\n"), std::string::npos) << text;
}

TEST_F(StatsTest, RefusalsOfDownBindingsCountAsUnhealthyAndHealthIsAMetric) {
  const DeliveryKey down{*MacAddress::parse("02:00:00:00:01:11"),
                         *parse_service_key("203.0.113.10:80/tcp")};
  const DeliveryKey removed{*MacAddress::parse("02:00:00:00:01:12"), down.service};
  ConnectionStats::KernelReading reading;
  reading.refused = {{down, 4}, {removed, 3}};
  reading.unhealthy = {down};
  stats_.observe(reading, [](const DeliveryKey& k) -> std::optional<BindingKey> {
    return BindingKey{k.service, k.mac.str().back() == '1' ? "web-1" : "web-2"};
  });
  StatsReport report = stats_.report();
  EXPECT_EQ(report.services.at("203.0.113.10:80/tcp").unhealthy, 4u);
  EXPECT_EQ(report.services.at("203.0.113.10:80/tcp").refused, 3u);
  EXPECT_EQ(report.backends.at("web-1").unhealthy, 4u);
  EXPECT_EQ(report.backends.at("web-1").refused, 0u);
  report.health = {{"203.0.113.10:80/tcp", "web-1", "down", 3}};
  report.health_probes = 12;
  const std::string text = render_prometheus(report);
  for (const char* line :
       {"hostlb_service_connections_refused_unhealthy_total{service=\"203.0.113.10:80/tcp\"} 4\n",
        "hostlb_binding_health{service=\"203.0.113.10:80/tcp\",backend=\"web-1\",state=\"down\"} "
        "1\n",
        "hostlb_binding_health{service=\"203.0.113.10:80/tcp\",backend=\"web-1\",state=\"up\"} 0\n",
        "hostlb_binding_health_transitions_total{service=\"203.0.113.10:80/"
        "tcp\",backend=\"web-1\"} "
        "3\n",
        "hostlb_health_probes_total 12\n"})
    EXPECT_NE(text.find(line), std::string::npos) << line << text;
}

TEST_F(StatsTest, TotalsOfForgottenServicesAndBackendsGo) {
  stats_.on_new(kMarks.mark_for(1));
  stats_.on_new(kMarks.mark_for(3));
  stats_.forget_unless([](const std::string& s) { return s == "203.0.113.10:80/tcp"; },
                       [](const std::string& b) { return b == "web-1"; });
  owners_.erase(3);
  const auto report = stats_.report();
  EXPECT_EQ(report.backends.count("web-2"), 0u);
  EXPECT_EQ(report.backends.at("web-1").opened, 1u);
}

TEST_F(StatsTest, PrometheusTextHasTypesAndEscapedLabels) {
  owners_[4] = {*parse_service_key("203.0.113.30:80/tcp"), "we\"ird\\name"};
  stats_.on_new(kMarks.mark_for(4));
  const std::string text = render_prometheus(stats_.report());
  EXPECT_NE(text.find("# TYPE hostlb_backend_connections_opened_total counter\n"),
            std::string::npos);
  EXPECT_NE(text.find("hostlb_backend_connections_opened_total{backend=\"we\\\"ird\\\\name\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE hostlb_service_connections_active gauge\n"), std::string::npos);
}

TEST(ConntrackFull, ReportedFrom99PercentUntilBelow90) {
  EXPECT_FALSE(conntrack_full(false, 980, 1000));
  EXPECT_TRUE(conntrack_full(false, 990, 1000));
  EXPECT_TRUE(conntrack_full(true, 950, 1000)) << "still near the brink: no flapping";
  EXPECT_FALSE(conntrack_full(true, 899, 1000));
  EXPECT_FALSE(conntrack_full(false, 5, 0)) << "no max read";
}

// A DESTROY event as the kernel encodes it, parsed back.
TEST(ConntrackEventParse, ReadsKindMarkIdAndTimestamps) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = AF_INET;
  mnl_attr_put_u32(nlh, CTA_MARK, htonl(0x3000));
  mnl_attr_put_u32(nlh, CTA_ID, htonl(77));
  nlattr* nest = mnl_attr_nest_start(nlh, CTA_TIMESTAMP);
  mnl_attr_put_u64(nlh, CTA_TIMESTAMP_START, htobe64(1000));
  mnl_attr_put_u64(nlh, CTA_TIMESTAMP_STOP, htobe64(2000));
  mnl_attr_nest_end(nlh, nest);
  const auto event = parse_conntrack_event(nlh);
  ASSERT_TRUE(event);
  EXPECT_EQ(event->kind, ConntrackEvent::Kind::kDestroy);
  EXPECT_EQ(event->mark, 0x3000u);
  EXPECT_EQ(event->id, 77u);
  EXPECT_EQ(event->start_ns, 1000u);
  EXPECT_EQ(event->stop_ns, 2000u);

  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  EXPECT_FALSE(parse_conntrack_event(nlh)) << "not an event";
}

}  // namespace
}  // namespace hostlb
