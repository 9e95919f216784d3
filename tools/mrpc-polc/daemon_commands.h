// mrpc-polc's commands against a running mrpcd (its control socket, docs/mrpcd.md):
//   load FILE.mpol [-I DIR]... [--dry-run]                      check, verify, compile; the hash
//   attach POLICY|FILE.mpol [NAME=VALUE]... [--as N] [--first|--last|--before P|--after P]
//          [--app APP] [--hash H] [--dry-run]                   (a file is loaded first)
//   upgrade NAME [FILE.mpol] [NAME=VALUE]... [--hash H]         state carried by name and type
//   detach NAME;  list;  show NAME;  metrics
// Each takes --socket PATH (default: $MRPC_CONTROL_SOCKET, else /run/mrpc/control.sock) and
// -j/--json (the daemon's JSON answer as it is). Exit codes: 0 ok; 1 a user error (bad input, no
// such policy, the daemon not reachable at that path); 2 an internal error (the daemon answered
// INTERNAL, or something that is not an answer).
#pragma once

#include <string>
#include <vector>

namespace mrpc::polc {

struct DaemonRequest {
  std::string verb;  // load, attach, upgrade, detach, list, show, metrics
  std::string socket;
  bool json = false;
  bool dry_run = false;
  std::string target;               // load: the file; attach: policy or file; others: NAME
  std::string file;                 // upgrade: the new version's file ("": by --hash/newest)
  std::vector<std::string> params;  // NAME=VALUE
  std::vector<std::string> proto_paths;
  std::string as, hash, app, before, after;
  bool first = false;
};

// Runs one request; prints the answer; returns the exit code.
int run_daemon_command(const DaemonRequest& request);

}  // namespace mrpc::polc
