// SourceFile: line table over a file's text.
#include "mrpc/dsl/source.h"

#include <algorithm>

namespace mrpc::dsl {

SourceFile::SourceFile(uint32_t id, std::string path, std::string text)
    : id_(id), path_(std::move(path)), text_(std::move(text)) {
  line_starts_.push_back(0);
  for (uint32_t i = 0; i < text_.size(); ++i) {
    if (text_[i] == '\n') line_starts_.push_back(i + 1);
  }
}

std::string_view SourceFile::line_text(uint32_t line) const {
  if (line == 0 || line > line_starts_.size()) return {};
  uint32_t begin = line_starts_[line - 1];
  uint32_t end =
      line < line_starts_.size() ? line_starts_[line] - 1 : static_cast<uint32_t>(text_.size());
  std::string_view view(text_);
  view = view.substr(begin, end - begin);
  if (!view.empty() && view.back() == '\r') view.remove_suffix(1);
  return view;
}

void SourceFile::position(uint32_t offset, uint32_t& line, uint32_t& column) const {
  auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
  size_t index = static_cast<size_t>(it - line_starts_.begin()) - 1;
  line = static_cast<uint32_t>(index + 1);
  column = offset - line_starts_[index] + 1;
}

Span SourceFile::span(uint32_t begin, uint32_t end) const {
  Span s;
  s.file = id_;
  s.begin = begin;
  s.end = std::max(begin, end);
  position(begin, s.line, s.column);
  return s;
}

SourceFile& SourceManager::add(std::string path, std::string text) {
  auto id = static_cast<uint32_t>(files_.size());
  files_.push_back(std::make_unique<SourceFile>(id, std::move(path), std::move(text)));
  return *files_.back();
}

}  // namespace mrpc::dsl
