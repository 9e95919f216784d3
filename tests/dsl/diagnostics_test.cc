// The diagnostics engine: clang-style text (location, source line, caret and tildes, help), JSON,
// and the "did you mean" suggestions by edit distance.
#include "mrpc/dsl/diagnostics.h"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "mpol_test_support.h"

namespace mrpc::dsl::testing {
namespace {

TEST_CASE("text diagnostics show the place, the line, a caret with tildes and the help") {
  CheckResult result = check_text("hotel.mpol",
                                  "import proto \"hotel/reservation.proto\";\n"
                                  "policy p {\n"
                                  "  applies to hotel.Reservation.MakeReservation at callee;\n"
                                  "  on request {\n"
                                  "    if req.customer_nam == \"x\" { drop; }\n"
                                  "  }\n"
                                  "}\n");
  CHECK(result.rendered ==
        "hotel.mpol:5:12: error: no field 'customer_nam' in message 'hotel.ReservationRequest'\n"
        "      if req.customer_nam == \"x\" { drop; }\n"
        "             ^~~~~~~~~~~~\n"
        "  = help: did you mean 'customer_name'?\n"
        "1 error generated.\n");
}

TEST_CASE("warnings are counted apart from errors, and become errors under warnings_as_errors") {
  SourceManager sources;
  const SourceFile& file = sources.add("w.mpol", "policy p { }\n");
  DiagnosticEngine lenient(sources);
  lenient.warning(file.span(0, 6), "first");
  lenient.warning(file.span(7, 8), "second");
  lenient.error(file.span(9, 10), "third");
  CHECK(lenient.warning_count() == 2);
  CHECK(lenient.error_count() == 1);
  CHECK(lenient.diagnostics()[0].severity == Severity::kWarning);
  CHECK(lenient.render_text().find("w.mpol:1:1: warning: first\n") != std::string::npos);
  CHECK(lenient.render_text().find("2 warnings and 1 error generated.\n") != std::string::npos);

  DiagnosticEngine strict(sources);
  strict.set_warnings_as_errors(true);
  strict.warning(file.span(0, 6), "first");
  CHECK(strict.warning_count() == 0);
  CHECK(strict.error_count() == 1);
  CHECK(strict.has_errors());
  CHECK(strict.diagnostics()[0].severity == Severity::kError);
}

TEST_CASE("json diagnostics carry file, line, column, span end, message and children") {
  SourceManager sources;
  DiagnosticEngine diagnostics(sources);
  const SourceFile& file = sources.add("a.mpol", "const X = nope;\n");
  Diagnostic& d = diagnostics.error(file.span(10, 14), "unknown name 'nope'");
  DiagnosticEngine::help(d, "did you mean 'none'?");
  auto json = nlohmann::json::parse(diagnostics.render_json());
  CHECK(json["error_count"] == 1);
  const auto& first = json["diagnostics"][0];
  CHECK(first["file"] == "a.mpol");
  CHECK(first["line"] == 1);
  CHECK(first["column"] == 11);
  CHECK(first["end_column"] == 15);
  CHECK(first["message"] == "unknown name 'nope'");
  CHECK(first["children"][0]["severity"] == "help");
}

TEST_CASE("suggestions pick the closest name within a third of its length") {
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(closest_name("customer_nam", {"customer_id", "customer_name", "hotel_id"}) ==
        "customer_name");
  CHECK(closest_name("zzz", {"customer_name"}).empty());
}

}  // namespace
}  // namespace mrpc::dsl::testing

namespace mrpc::dsl::testing {
namespace {

TEST_CASE("columns count bytes but the caret sits under the character after non-ASCII text") {
  CheckResult result = check_text("u.mpol", "const S = \"h\xc3\xa9llo\" + nope;\n");
  CHECK(result.rendered ==
        "u.mpol:1:22: error: unknown name 'nope'\n"
        "  const S = \"h\xc3\xa9llo\" + nope;\n"
        "                      ^~~~\n"
        "1 error generated.\n");
}

}  // namespace
}  // namespace mrpc::dsl::testing
