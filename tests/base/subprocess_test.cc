#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>

#include "mrpc/base/subprocess.h"

using namespace std::chrono_literals;

TEST_CASE("a subprocess reports its exit code") {
  auto child = mrpc::Subprocess::start({"sh", "-c", "exit 3"});
  REQUIRE(child.ok());
  auto code = child->wait(10s);
  REQUIRE(code.ok());
  CHECK(*code == 3);
}

TEST_CASE("stopping a subprocess ends it and reports the signal") {
  auto child = mrpc::Subprocess::start({"sleep", "100"});
  REQUIRE(child.ok());
  CHECK(child->running());
  auto cpu = child->cpu();
  REQUIRE(cpu.ok());
  CHECK(cpu->total() >= 0.0);
  CHECK(child->stop(SIGTERM) == 128 + SIGTERM);
  CHECK_FALSE(child->running());
}

TEST_CASE("waiting on a running subprocess times out with DEADLINE_EXCEEDED") {
  auto child = mrpc::Subprocess::start({"sleep", "100"});
  REQUIRE(child.ok());
  auto code = child->wait(10ms);
  CHECK(code.status().code() == mrpc::StatusCode::kDeadlineExceeded);
}

TEST_CASE("a missing program exits with 127") {
  auto child = mrpc::Subprocess::start({"/nonexistent/program"});
  REQUIRE(child.ok());
  auto code = child->wait(10s);
  REQUIRE(code.ok());
  CHECK(*code == 127);
}
