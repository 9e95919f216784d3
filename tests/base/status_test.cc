#include <doctest/doctest.h>

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
