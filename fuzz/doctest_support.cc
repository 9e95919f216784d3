// The seeds of the message fuzzers reuse tests/message/document_fixture.h, which uses doctest's
// CHECK: the fuzzers link doctest's implementation (no main; libFuzzer has its own).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

// Outside a doctest run its assertion macros need a context to report into (else they read a
// null one): the fuzzers have one for their whole life. A failed assertion then aborts, which
// libFuzzer reports as a crash: a finding.
namespace {
struct FuzzDoctestContext {
  doctest::Context context;
  FuzzDoctestContext() { context.setAsDefaultForAssertsOutOfTestCases(); }
};
FuzzDoctestContext fuzz_doctest_context;
}  // namespace
