// protoc-gen-mrpc on proto2 defaults, keyword field names and imported messages
// (tests/message/edge_cases.proto).
#include <doctest/doctest.h>

#include <cmath>

#include "document_fixture.h"
#include "edge_cases.mrpc.h"
#include "mrpc/message/layout.h"
#include "mrpc/message/schema.h"

using mrpc::testing::TestRegion;
using mrpc_test::edge::Settings;

TEST_CASE("proto2 defaults are read for unset fields and presence is tracked") {
  TestRegion region(1 << 16);
  mrpc::ShmHeap heap(region.base(), region.size());
  auto settings = Settings::create(heap);
  CHECK_FALSE(settings.has_count());
  CHECK(settings.count() == -5);
  CHECK(settings.name() == "anon \"quoted\"\n");
  CHECK(settings.ratio() == 1.5);
  CHECK(settings.enabled());
  CHECK(settings.level() == mrpc_test::edge::LOW);
  CHECK(settings.priority() == mrpc_test::edge::HIGH);
  CHECK(settings.smallest() == INT64_MIN);
  CHECK(std::isnan(settings.nan_ratio()));
  settings.set_count(0);
  settings.set_enabled(false);
  settings.set_name("");
  CHECK(settings.has_count());
  CHECK(settings.count() == 0);
  CHECK_FALSE(settings.enabled());
  CHECK(settings.has_name());
  CHECK(settings.name().empty());
  settings.clear_count();
  CHECK(settings.count() == -5);
  settings.reset();
}

TEST_CASE("keyword and member-named fields get a trailing underscore and imported messages work") {
  TestRegion region(1 << 16);
  mrpc::ShmHeap heap(region.base(), region.size());
  auto settings = Settings::create(heap);
  settings.set_class_(3);
  settings.set_ref_("r");
  settings.mutable_where().set_x(8);
  settings.add_points().set_y(9);
  CHECK(settings.class_() == 3);
  CHECK(settings.ref_() == "r");
  CHECK(settings.where().x() == 8);
  CHECK(settings.points(0).y() == 9);

  // The embedded set carries the import, so the daemon can lay out the imported types too.
  auto schema =
      mrpc::Schema::from_file_descriptor_set(mrpc_test::edge::file_descriptor_set_edge_cases());
  REQUIRE(schema.ok());
  CHECK((*schema)->message(Settings::kFullName)->fingerprint() == Settings::kLayoutFingerprint);
  CHECK((*schema)->message("nested.Point")->fingerprint() == nested::Point::kLayoutFingerprint);
  settings.reset();
}
