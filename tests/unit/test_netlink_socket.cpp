// Acknowledgements as the kernel writes them, parsed without a kernel.
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>

#include <cerrno>
#include <vector>

#include "hostlb/netlink/error.h"
#include "hostlb/netlink/netlink_socket.h"

namespace hostlb::netlink {
namespace {

// An NLMSG_ERROR for request `seq` with `error`; `echoed` bytes of the
// request's payload unless capped; then the extended attributes.
std::vector<char> error_message(uint32_t seq, int error, bool capped, size_t echoed,
                                const char* text, std::optional<uint32_t> offset) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_ERROR;
  if (capped) nlh->nlmsg_flags |= NLM_F_CAPPED;
  if (text || offset) nlh->nlmsg_flags |= NLM_F_ACK_TLVS;
  auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
  err->error = -error;
  err->msg.nlmsg_seq = seq;
  err->msg.nlmsg_len = static_cast<uint32_t>(sizeof(nlmsghdr) + echoed);
  if (!capped) mnl_nlmsg_put_extra_header(nlh, echoed);  // the echoed request
  if (text) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, text);
  if (offset) mnl_attr_put_u32(nlh, NLMSGERR_ATTR_OFFS, *offset);
  buf.resize(nlh->nlmsg_len);
  return buf;
}

const nlmsghdr* header(const std::vector<char>& bytes) {
  return reinterpret_cast<const nlmsghdr*>(bytes.data());
}

TEST(NetlinkAck, APlainAcknowledgement) {
  const auto bytes = error_message(42, 0, false, 20, nullptr, std::nullopt);
  const auto ack = parse_ack(header(bytes));
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->seq, 42u);
  EXPECT_EQ(ack->error, 0);
  EXPECT_TRUE(ack->message.empty());
}

TEST(NetlinkAck, TheKernelsTextAfterAnEchoedRequest) {
  const auto bytes = error_message(7, ENOENT, false, 36, "Table does not exist", 24u);
  const auto ack = parse_ack(header(bytes));
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->seq, 7u);
  EXPECT_EQ(ack->error, ENOENT);
  EXPECT_EQ(ack->message, "Table does not exist");
  EXPECT_EQ(ack->bad_attribute_offset, 24u);
}

TEST(NetlinkAck, TheKernelsTextInACappedError) {
  const auto bytes = error_message(9, EINVAL, true, 400, "invalid mask", std::nullopt);
  const auto ack = parse_ack(header(bytes));
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->error, EINVAL);
  EXPECT_EQ(ack->message, "invalid mask");
}

TEST(NetlinkAck, NotAnErrorOrCutShortIsNotAnAck) {
  std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_DONE;
  EXPECT_FALSE(parse_ack(nlh));
  nlh->nlmsg_type = NLMSG_ERROR;  // no room for the error header
  EXPECT_FALSE(parse_ack(nlh));
}

TEST(NetlinkAck, ThrownErrorsCarryTheErrnoAndTheKernelsWords) {
  try {
    throw_ack("adding element 203.0.113.10", {3, EEXIST, "element exists", std::nullopt});
  } catch (const KernelError& e) {
    EXPECT_TRUE(e.is_exists());
    EXPECT_FALSE(e.is_not_found());
    EXPECT_STREQ(e.what(),
                 "adding element 203.0.113.10: File exists (the kernel says: element exists)");
  }
  try {
    throw_ack("deleting set x", {3, ENOENT, "", 20u});
  } catch (const KernelError& e) {
    EXPECT_TRUE(e.is_not_found());
    EXPECT_STREQ(e.what(),
                 "deleting set x: No such file or directory (the kernel says: refused the "
                 "attribute at byte 20 of the request)");
  }
}

TEST(NetlinkAck, EveryMessageOfADatagramIsVisited) {
  auto a = error_message(1, 0, true, 0, nullptr, std::nullopt);
  const auto b = error_message(2, EPERM, true, 0, nullptr, std::nullopt);
  a.resize(MNL_ALIGN(a.size()));
  a.insert(a.end(), b.begin(), b.end());
  std::vector<uint32_t> seqs;
  for_each_message(a, [&](const nlmsghdr* nlh) { seqs.push_back(parse_ack(nlh)->seq); });
  EXPECT_EQ(seqs, (std::vector<uint32_t>{1, 2}));
}

}  // namespace
}  // namespace hostlb::netlink
