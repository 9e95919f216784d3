// SHA-256 (FIPS 180-4) of a byte string, as lower-case hex: the `sha256` builtin. Private to the
// compiler. Pure; any thread.
#pragma once

#include <string>
#include <string_view>

namespace mrpc::compiler {

std::string sha256_hex(std::string_view data);

}  // namespace mrpc::compiler
