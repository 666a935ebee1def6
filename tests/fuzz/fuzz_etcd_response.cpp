// libFuzzer: what etcd (or anything at its address) answers. Every decoder
// either returns a value or throws ProtocolError; base64 round-trips any
// bytes; a watch stream split anywhere gives the same lines.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "hostlb/policies/etcd_protocol.h"

namespace etcd = hostlb::etcd;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto quietly = [&](auto decode) {
    try {
      decode(text);
    } catch (const etcd::ProtocolError&) {
    }
  };
  quietly([](std::string_view t) { (void)etcd::decode_range(t); });
  quietly([](std::string_view t) { (void)etcd::decode_watch(t); });
  quietly([](std::string_view t) { (void)etcd::decode_txn(t); });
  quietly([](std::string_view t) { (void)etcd::decode_lease_grant(t); });
  quietly([](std::string_view t) { (void)etcd::decode_lease_keepalive(t); });
  if (etcd::base64_decode(etcd::base64_encode(text)) != std::string(text)) __builtin_trap();
  (void)etcd::base64_decode(text);
  etcd::LineSplitter whole, halves;
  const auto lines = whole.feed(text);
  auto split = halves.feed(text.substr(0, size / 2));
  for (auto& line : halves.feed(text.substr(size / 2))) split.push_back(line);
  if (lines != split) __builtin_trap();
  return 0;
}
