#include "mrpc/base/check.h"

#include <cstdio>
#include <cstdlib>

namespace mrpc::detail {

void assertion_failed(const char* condition, const char* file, int line,
                      const std::string& detail) {
  std::fprintf(stderr, "%s:%d: mrpc internal error: expected %s%s%s\n", file, line, condition,
               detail.empty() ? "" : "; ", detail.c_str());
  std::abort();
}

}  // namespace mrpc::detail
