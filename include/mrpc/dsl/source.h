// SourceFile and Span: a .mpol file's text and the places in it that diagnostics point at.
// Single-threaded: one compiler run owns its SourceManager; AST nodes refer to files by id.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace mrpc::dsl {

// A half-open byte range [begin, end) in one file, with the 1-based line and column of `begin`.
struct Span {
  uint32_t file = 0;
  uint32_t begin = 0;
  uint32_t end = 0;
  uint32_t line = 0;
  uint32_t column = 0;
};

class SourceFile {
 public:
  SourceFile(uint32_t id, std::string path, std::string text);

  uint32_t id() const { return id_; }
  const std::string& path() const { return path_; }
  const std::string& text() const { return text_; }
  // The text of 1-based line `line`, without its newline; empty if out of range.
  std::string_view line_text(uint32_t line) const;
  // Line and column (1-based, column in bytes) of a byte offset.
  void position(uint32_t offset, uint32_t& line, uint32_t& column) const;
  Span span(uint32_t begin, uint32_t end) const;

 private:
  uint32_t id_;
  std::string path_;
  std::string text_;
  std::vector<uint32_t> line_starts_;
};

// Owns every file of one compiler run; ids index into it.
class SourceManager {
 public:
  SourceFile& add(std::string path, std::string text);
  const SourceFile& file(uint32_t id) const { return *files_.at(id); }
  size_t size() const { return files_.size(); }

 private:
  std::vector<std::unique_ptr<SourceFile>> files_;
};

}  // namespace mrpc::dsl
