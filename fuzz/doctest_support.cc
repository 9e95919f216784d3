// The seeds of the message fuzzers reuse tests/message/document_fixture.h, which uses doctest's
// CHECK: the fuzzers link doctest's implementation (no main; libFuzzer has its own).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
