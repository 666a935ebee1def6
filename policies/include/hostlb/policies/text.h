#pragma once

#include <string>
#include <string_view>

namespace hostlb {

// The text with every byte that is not printable ASCII shown as \xNN: what
// comes from outside (requests, documents) is quoted this way in messages
// and logs, so that a message is always one printable line.
std::string printable(std::string_view text);

}  // namespace hostlb
