// The daemon's configuration file (`mrpcd -c FILE`, TOML; docs/tcp-transport.md, "Configuration"):
// this host's name, the TCP listen address and the static table of services served behind other
// daemons. Every key is checked: an unknown key, a value of the wrong type or a bad address is an
// error naming FILE:LINE:COLUMN. Command-line flags given as well win over the file.
// Threads: plain functions.
#pragma once

#include <string>

#include "mrpc/base/status.h"
#include "mrpc/daemon/daemon.h"

namespace mrpc {

// Reads `path` into `config` (only the keys the file sets). INVALID_ARGUMENT with
// "path:line:column: what" for the first error; NOT_FOUND if the file cannot be read.
Status load_config_file(const std::string& path, DaemonConfig& config);
// The same from text (tests), `name` standing for the path in messages.
Status load_config_text(std::string_view text, const std::string& name, DaemonConfig& config);

}  // namespace mrpc
