// nested_client: sends one nested.Document with every kind of field to nested.DocumentStore/Put
// through the host's mrpcd ($MRPC_SOCKET) and prints what came back.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "mrpc/client/channel.h"
#include "nested.mrpc.h"

namespace {

void fill(nested::Document document) {
  document.set_title("a document with every kind of field");
  document.set_kind(nested::Document::IMAGE);
  document.set_maybe_count(0);
  document.set_u64(~uint64_t{0});
  document.set_weight(2.25);
  for (int i = 0; i < 3; ++i) {
    auto section = document.add_sections();
    section.set_title(fmt::format("section {}", i));
    section.add_paragraphs(fmt::format("paragraph of section {}", i));
    section.mutable_anchor().set_x(i);
  }
  for (int i = 0; i < 5; ++i) document.add_numbers(i * i);
  document.add_tags("shared-memory");
  document.add_tags("zero-copy");
  auto location = document.mutable_location();  // the oneof
  location.set_x(3);
  location.set_y(4);
  document.insert_counts("apples", 3);
  document.insert_names(7, "seven");
  document.insert_places("home").set_x(9);
  auto tree = document.mutable_tree();
  tree.set_label("root");
  tree.add_children().set_label("left");
  tree.add_children().set_label("right");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nested_client: one nested.Document through mrpcd and back"};
  mrpc::ChannelOptions options;
  options.app_name = "nested_client";
  app.add_option("--socket", options.socket_path, "mrpcd app socket (default: $MRPC_SOCKET)");
  CLI11_PARSE(app, argc, argv);

  auto channel = mrpc::Channel::connect(options);
  if (!channel.ok()) {
    fmt::print(stderr, "nested_client: cannot connect to mrpcd: {}\n",
               channel.status().to_string());
    return 1;
  }
  nested::DocumentStore::Client client(*channel);
  auto document = nested::Document::create((*channel)->heap());
  fill(document);
  auto reply = client.Put(std::move(document));
  if (!reply.ok()) {
    fmt::print("nested_client: Put failed: {}\n", reply.status().to_string());
    return 1;
  }
  const nested::Document::View& back = *reply;
  fmt::print(
      "nested_client: Put answered: title '{}', kind {}, maybe_count set {} (= {}), u64 {}\n",
      back.title(), static_cast<int>(back.kind()), back.has_maybe_count(), back.maybe_count(),
      back.u64());
  fmt::print("  {} sections (last '{}'), numbers [{}], tags [{}]\n", back.sections_size(),
             back.sections(back.sections_size() - 1).title(),
             fmt::join(std::vector<int32_t>{back.numbers(0), back.numbers(1), back.numbers(2),
                                            back.numbers(3), back.numbers(4)},
                       ", "),
             fmt::format("{}, {}", back.tags(0), back.tags(1)));
  fmt::print(
      "  oneof body = location ({}, {}); counts['apples'] = {}; names[7] = '{}'; tree '{}' "
      "with {} children\n",
      back.location().x(), back.location().y(), back.counts_at("apples"), back.names_at(7),
      back.tree().label(), back.tree().children_size());
  const bool exact = back.body_case() == nested::Document::kLocation && back.sections_size() == 3 &&
                     back.numbers_size() == 5 && back.counts_at("apples") == 3 &&
                     back.tree().children_size() == 2 && back.has_maybe_count();
  return exact ? 0 : 1;
}
