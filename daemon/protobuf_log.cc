#include "protobuf_log.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <string>

namespace mrpc {

namespace {

void protobuf_to_spdlog(google::protobuf::LogLevel level, const char* filename, int line,
                        const std::string& message) {
  if (level == google::protobuf::LOGLEVEL_FATAL) {
    spdlog::critical("protobuf: {} ({}:{})", message, filename, line);
  } else {
    spdlog::debug("protobuf: {} ({}:{})", message, filename, line);
  }
}

}  // namespace

void route_protobuf_log_to_spdlog() {
  (void)google::protobuf::SetLogHandler(&protobuf_to_spdlog);
}

}  // namespace mrpc
