// serve_until_signal: the body of a server app's main(): connect to mrpcd, serve one service,
// print "<app>: serving <service>" (what scripts and tests wait for), return on SIGTERM or SIGINT.
#pragma once

#include <signal.h>

#include <cstdio>
#include <vector>

#include <fmt/format.h>

#include "mrpc/client/channel.h"

namespace examples {

// Call before any thread starts, so every thread inherits the blocked signals.
inline sigset_t block_stop_signals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  return stop_signals;
}

// Returns the process exit code: 0 after a stop signal, 1 if it could not connect or serve.
inline int serve_until_signal(const mrpc::ChannelOptions& options,
                              const mrpc::ServiceSchema& schema,
                              std::vector<mrpc::UntypedMethod> methods) {
  sigset_t stop_signals = block_stop_signals();
  auto channel = mrpc::Channel::connect(options);
  if (!channel.ok()) {
    fmt::print(stderr, "{}: cannot connect to mrpcd: {}\n", options.app_name,
               channel.status().to_string());
    return 1;
  }
  if (mrpc::Status served = (*channel)->serve(schema, std::move(methods)); !served.ok()) {
    fmt::print(stderr, "{}: cannot serve {}: {}\n", options.app_name, schema.full_name,
               served.to_string());
    return 1;
  }
  fmt::print("{}: serving {}\n", options.app_name, schema.full_name);
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  fmt::print("{}: stopping on signal {}\n", options.app_name, signal_number);
  return 0;
}

}  // namespace examples
