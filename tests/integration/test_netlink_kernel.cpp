// hostlb's netlink classes used directly in a lab namespace: what the
// daemon-level tests cannot see from outside.
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <sys/socket.h>

#include "hostlb/netlink/conntrack.h"
#include "hostlb/netlink/error.h"
#include "hostlb/netlink/netlink_socket.h"
#include "hostlb/netlink/nft.h"
#include "hostlb/policies/datapath.h"
#include "hostlb/policies/state_document.h"
#include "lab_fixture.h"

namespace hostlb {
namespace {

using lab::Lab;

State services(int count) {
  std::string doc =
      R"({"version":1,"backends":[{"name":"web-1","mac":"02:00:00:00:01:11","ipv4":"198.18.1.11","bridge":"br0"}],"services":[)";
  for (int i = 0; i < count; ++i)
    doc += std::string(i ? "," : "") + R"({"vip":"203.0.113.10","port":)" +
           std::to_string(1000 + i) +
           R"(,"protocol":"tcp","backends":[{"name":"web-1","port":80}]})";
  return parse_state_document(doc + "]}");
}

// The daemon checks its table only when someone else committed: its own
// changes must not count, anyone else's commit (any table) must.
TEST(NetlinkKernel, OnlyOtherProcessesCommitsCountAsChangesByOthers) {
  Lab lab;
  Lab::Entered in_hv(lab, "hv");
  const MarkLayout marks(MarkLayout::kDefaultMask);
  auto ruleset = make_kernel_ruleset();
  Datapath before = compile_datapath(services(1), {}, marks);
  ruleset->replace(before, marks);
  EXPECT_FALSE(ruleset->changed_by_others()) << "its own whole-table replacement";

  for (int n = 2; n <= 6; ++n) {
    Datapath after = compile_datapath(services(n), before.ids(), marks);
    ruleset->apply(diff_datapath(before, after), marks);
    before = std::move(after);
  }
  EXPECT_FALSE(ruleset->changed_by_others()) << "five changes of its own";

  ASSERT_EQ(lab.in("hv", "nft add table inet somebody-else").exit_code, 0);
  EXPECT_TRUE(ruleset->changed_by_others()) << "another process's commit";
  EXPECT_FALSE(ruleset->changed_by_others()) << "seen once";

  // Interleaved: one own change, one foreign commit, one own change.
  Datapath after = compile_datapath(services(7), before.ids(), marks);
  ruleset->apply(diff_datapath(before, after), marks);
  ASSERT_EQ(lab.in("hv", "nft delete table inet somebody-else").exit_code, 0);
  ruleset->apply(diff_datapath(after, before), marks);
  EXPECT_TRUE(ruleset->changed_by_others());

  EXPECT_FALSE(ruleset->difference(before, marks)) << "the table is what it applied";
  ruleset->remove();
  EXPECT_FALSE(ruleset->changed_by_others()) << "its own removal";
}

// A batch the kernel refuses names the operation that failed, keeps the
// errno for callers to decide on, and carries what the kernel said about it.
TEST(NetlinkKernel, ARefusedBatchNamesTheOperationAndTheKernelsAnswer) {
  Lab lab;
  Lab::Entered in_hv(lab, "hv");
  const MarkLayout marks(MarkLayout::kDefaultMask);
  auto ruleset = make_kernel_ruleset();
  Datapath before = compile_datapath(services(1), {}, marks);
  ruleset->replace(before, marks);
  ASSERT_EQ(lab.in("hv", "nft delete table inet hostlb").exit_code, 0);
  Datapath after = compile_datapath(services(2), before.ids(), marks);
  try {
    ruleset->apply(diff_datapath(before, after), marks);
    FAIL() << "the kernel accepted a change to a table that is gone";
  } catch (const KernelError& e) {
    EXPECT_TRUE(e.is_not_found()) << e.what();
    const std::string text = e.what();
    RecordProperty("message", text);
    EXPECT_NE(text.find("203.0.113.10"), std::string::npos) << "names the element: " << text;
    EXPECT_NE(text.find("No such file or directory"), std::string::npos) << text;
    EXPECT_NE(text.find("the kernel says: "), std::string::npos) << text;
  }
  // The socket is still good for the next change.
  ruleset->replace(after, marks);
  EXPECT_FALSE(ruleset->difference(after, marks));
}

// A ctnetlink request the kernel refuses: the errno comes back as a fact.
TEST(NetlinkKernel, ARefusedConntrackRequestKeepsTheKernelsErrno) {
  Lab lab;
  Lab::Entered in_hv(lab, "hv");
  netlink::Socket socket(NETLINK_NETFILTER, "test");
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;  // a get without a tuple
  nlh->nlmsg_seq = socket.next_seq();
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = AF_INET;
  nfg->version = NFNETLINK_V0;
  try {
    socket.request("getting a conntrack entry without a tuple", {buf.data(), nlh->nlmsg_len},
                   nlh->nlmsg_seq, [](const nlmsghdr*) { return true; });
    FAIL() << "the kernel answered a get without a tuple";
  } catch (const KernelError& e) {
    EXPECT_EQ(e.error(), EINVAL) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("getting a conntrack entry without a tuple: ", 0), 0u)
        << e.what();
  }
  // The same request, its errno tolerated: returned, not thrown.
  nlh->nlmsg_seq = socket.next_seq();
  EXPECT_EQ(socket.request(
                "again", {buf.data(), nlh->nlmsg_len}, nlh->nlmsg_seq,
                [](const nlmsghdr*) { return true; }, EINVAL),
            EINVAL);
}

// Many bindings' connections flushed in one walk: exactly the entries whose
// mark under the mask is one of the given values go, whatever their family,
// protocol or zone, and nothing else.
TEST(NetlinkKernel, FlushingSeveralMarksDeletesExactlyTheirEntries) {
  Lab lab;
  int port = 40000;
  auto insert = [&](const std::string& proto, const std::string& src, const std::string& dst,
                    const std::string& mark, const std::string& extra = "") {
    const std::string state = proto == "tcp" ? " --state ESTABLISHED" : "";
    const auto r = lab.in("hv", "conntrack -I -p " + proto + " -s " + src + " -d " + dst +
                                    " --sport " + std::to_string(++port) + " --dport 80" + state +
                                    " -t 300 -m " + mark + extra);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  };
  for (int i = 0; i < 3; ++i) insert("tcp", "198.18.0.1", "203.0.113.10", "0x100");
  insert("udp", "198.18.0.1", "203.0.113.10", "0x100", " -w 5");  // another zone
  insert("tcp", "2001:db8::1", "2001:db8:f00::10", "0x200");
  insert("udp", "198.18.0.2", "203.0.113.20", "0x201");  // 0x200 under the mask
  insert("tcp", "198.18.0.1", "203.0.113.30", "0x300");  // a mark not flushed
  insert("tcp", "198.18.0.2", "203.0.113.30", "0x1");    // someone else's mark only
  insert("tcp", "198.18.0.2", "203.0.113.40", "0");      // no mark

  Lab::Entered in_hv(lab, "hv");
  auto table = make_ctnetlink_table();
  const auto gone = table->flush_marks({0x100, 0x200, 0x900}, 0xff00);
  EXPECT_EQ(gone, (std::map<uint32_t, size_t>{{0x100, 4}, {0x200, 2}}));
  EXPECT_EQ(table->count(0x100, 0xff00), 0u);
  EXPECT_EQ(table->count(0x200, 0xff00), 0u);
  EXPECT_EQ(table->count(0x300, 0xff00), 1u);
  EXPECT_EQ(table->count(0, 0xff00), 2u) << "the unmarked and the foreign-marked entries";
  EXPECT_EQ(table->flush_marks({0x100}, 0xff00), (std::map<uint32_t, size_t>{}));
}

// One binding's connections: with few, one walk deletes them as the dump
// delivers them; with more than a thousand, the kernel's filtered delete
// takes the rest. Either way exactly those go, and the count is right.
TEST(NetlinkKernel, FlushingOneMarkDeletesExactlyItsEntriesFewOrMany) {
  Lab lab;
  auto fill = [&](int count, const std::string& mark, int first_port) {
    const auto r =
        lab.in("hv", "sh -c 'for p in $(seq " + std::to_string(first_port) + " " +
                         std::to_string(first_port + count - 1) +
                         "); do conntrack -I -p udp -s 198.18.0.1 -d 203.0.113.10 --sport $p "
                         "--dport 53 -t 300 -m " +
                         mark + " 2>/dev/null || exit 1; done'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  };
  fill(3, "0x100", 20000);
  fill(2, "0x200", 21000);
  ASSERT_EQ(lab.in("hv",
                   "conntrack -I -p udp -s 198.18.0.1 -d 203.0.113.10 --sport 22000 "
                   "--dport 53 -t 300 -m 0x100 -w 7")
                .exit_code,
            0);
  {
    Lab::Entered in_hv(lab, "hv");
    auto table = make_ctnetlink_table();
    EXPECT_EQ(table->flush(0x100, 0xff00), 4u);
    EXPECT_EQ(table->count(0x100, 0xff00), 0u);
    EXPECT_EQ(table->count(0x200, 0xff00), 2u);
  }
  fill(1100, "0x300", 30000);
  Lab::Entered in_hv(lab, "hv");
  auto table = make_ctnetlink_table();
  EXPECT_EQ(table->flush(0x300, 0xff00), 1100u);
  EXPECT_EQ(table->count(0x300, 0xff00), 0u);
  EXPECT_EQ(table->count(0x200, 0xff00), 2u);
  EXPECT_EQ(table->flush(0x300, 0xff00), 0u);
}

}  // namespace
}  // namespace hostlb
