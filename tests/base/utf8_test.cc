// utf8_prefix: app-supplied names are cut without splitting a UTF-8 character.
#include "mrpc/base/utf8.h"

#include <doctest/doctest.h>

#include <string>

using mrpc::utf8_prefix;

TEST_CASE("utf8_prefix cuts before a character that would be split and keeps whole ones") {
  const std::string a127 = std::string(127, 'a');
  CHECK(utf8_prefix(a127 + "\xc3\xa9", 128) == a127);               // 2-byte, split
  CHECK(utf8_prefix(a127 + "\xc3\xa9", 129) == a127 + "\xc3\xa9");  // fits
  CHECK(utf8_prefix("ab\xe2\x82\xac", 3) == "ab");                  // 3-byte, 1 kept
  CHECK(utf8_prefix("ab\xe2\x82\xac", 4) == "ab");                  // 2 kept
  CHECK(utf8_prefix("ab\xf0\x9f\x98\x80z", 5) == "ab");             // 4-byte, 3 kept
  CHECK(utf8_prefix("ab\xf0\x9f\x98\x80z", 6) == "ab\xf0\x9f\x98\x80");
  CHECK(utf8_prefix("\xc3\xa9", 1).empty());  // nothing whole fits
  CHECK(utf8_prefix("short", 128) == "short");
  CHECK(utf8_prefix("abc", 0).empty());
}

TEST_CASE("utf8_prefix on bytes that are not UTF-8 still returns at most max_bytes") {
  const std::string continuations(10, '\x80');
  CHECK(utf8_prefix(continuations, 6).size() == 6);  // no character start to back off to
  CHECK(utf8_prefix("\xff\xff\xff", 2) == "\xff\xff");
}
