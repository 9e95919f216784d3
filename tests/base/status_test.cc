#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "mrpc/base/check.h"
#include "mrpc/base/expected.h"
#include "mrpc/base/status.h"

using mrpc::Expected;
using mrpc::Status;
using mrpc::StatusCode;

TEST_CASE("status codes round-trip through their gRPC names") {
  for (uint32_t raw = 0; raw <= mrpc::kMaxStatusCode; ++raw) {
    auto code = static_cast<StatusCode>(raw);
    StatusCode parsed{};
    REQUIRE(mrpc::status_code_from_name(mrpc::status_code_name(code), parsed));
    CHECK(parsed == code);
  }
  StatusCode unused{};
  CHECK_FALSE(mrpc::status_code_from_name("NOT_A_CODE", unused));
  CHECK(mrpc::status_code_name(StatusCode::kDeadlineExceeded) == "DEADLINE_EXCEEDED");
}

TEST_CASE("an unknown wire status code becomes UNKNOWN") {
  CHECK(mrpc::status_code_from_wire(4) == StatusCode::kDeadlineExceeded);
  CHECK(mrpc::status_code_from_wire(17) == StatusCode::kUnknown);
  CHECK(mrpc::status_code_from_wire(0xffffffffu) == StatusCode::kUnknown);
}

TEST_CASE("status prints its code and message") {
  CHECK(Status().to_string() == "OK");
  CHECK(Status(StatusCode::kUnavailable, "no server").to_string() == "UNAVAILABLE: no server");
}

TEST_CASE("expected holds a value or the error") {
  Expected<int> good = 42;
  REQUIRE(good.ok());
  CHECK(*good == 42);
  CHECK(good.status().ok());

  Expected<int> bad = Status(StatusCode::kNotFound, "nope");
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == StatusCode::kNotFound);
}

TEST_CASE("a failed assertion prints its condition and its formatted message before aborting") {
  // In a child process: the assertion aborts it, and its stderr comes back through a pipe.
  int pipe_fds[2];
  REQUIRE(::pipe(pipe_fds) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::dup2(pipe_fds[1], STDERR_FILENO);
    const int slot = 7;
    MRPC_ASSERT(slot < 3, "slot {} is past {}", slot, 3);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string printed;
  char buffer[512];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;)
    printed.append(buffer, static_cast<size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  CHECK(printed.find("slot < 3") != std::string::npos);
  CHECK(printed.find("slot 7 is past 3") != std::string::npos);
}
