// PolicyControl: the daemon's policy commands on the control socket (docs/mrpcd.md):
//   load     {"source", "path", "proto_paths", "dry_run"}       check, verify, compile; its hash
//   attach   {"policy", "hash", "as", "anchor", "relative_to", "app", "params", "dry_run"}
//   upgrade  {"name", "hash", "params"}                          state carried by name and type
//   detach   {"name"}
//   list, show {"name"}, metrics (Prometheus text format)
// Each command line is the verb, a space and a JSON object; each answer one JSON document
// ({"ok": true, ...} or {"ok": false, "code": "NOT_FOUND", "error": "..."}), except metrics.
// Attach, upgrade and detach answer once every affected graph has switched, and log the policy's
// hash and the policy set's generation.
//
// Threads: commands arrive on the runtime thread (the control server) and run, one at a time, on
// PolicyControl's own thread, which waits for the runtime to splice (Daemon::attach_policy and
// friends post there and wait: they must not run on the runtime thread). The reply callback runs
// on that thread too. Owned by the daemon; stop() before the runtime stops.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mrpc/daemon/daemon.h"
#include "policy_operator.h"

namespace mrpc {

struct DaemonCore;

// Policy files `load` keeps at once; loading one more forgets the oldest that nothing attaches.
inline constexpr size_t kMaxLoadedPolicyFiles = 64;

class PolicyControl {
 public:
  using Reply = std::function<void(const std::string&)>;

  PolicyControl(Daemon& daemon, DaemonCore& core);
  ~PolicyControl();
  PolicyControl(const PolicyControl&) = delete;
  PolicyControl& operator=(const PolicyControl&) = delete;

  // Whether the command line's verb is one of the policy commands.
  static bool handles(const std::string& command);
  // Queues `command`; `reply` gets its answer on PolicyControl's thread.
  void submit(std::string command, Reply reply);
  // Answers what is queued with UNAVAILABLE, finishes the command running, joins the thread.
  void stop();

  // Runs one command on the calling thread (never the runtime thread); the worker uses it.
  std::string execute(const std::string& command);

 private:
  Expected<std::shared_ptr<const CompiledPolicyFile>> find_loaded(
      const std::string& hash, const std::string& policy_name) const;
  struct Attachment {
    std::string name;    // what it is attached as
    std::string policy;  // the policy's name in its file
    std::shared_ptr<const CompiledPolicyFile> file;
    Placement placement;
    std::shared_ptr<PolicyOperator> op;
    std::string params;  // as JSON, for show and for upgrades that give none
    uint64_t generation = 0;
    uint64_t version = 1;
  };

  void run();
  std::string load(const std::string& args);
  std::string attach(const std::string& args);
  std::string upgrade(const std::string& args);
  std::string detach(const std::string& args);
  std::string list() const;
  std::string show(const std::string& args) const;
  std::string metrics() const;

  Daemon& daemon_;
  DaemonCore& core_;
  // Worker thread state.
  std::mutex queue_mutex_;
  std::condition_variable queue_ready_;
  std::deque<std::pair<std::string, Reply>> queue_;
  bool stopping_ = false;
  std::thread worker_;
  // Loaded files (by hash, in load order) and attachments (by name): worker thread only, except
  // that list/show/metrics read them there too (every command runs on the worker).
  std::vector<std::shared_ptr<const CompiledPolicyFile>> loaded_;
  std::map<std::string, Attachment> attached_;
};

}  // namespace mrpc
