// DiagnosticEngine: collects errors and warnings (with notes and help lines) from the parser and
// the checker and renders them like clang/rustc (`file:line:col: error: ...` or `warning: ...`,
// the source line, a caret and tildes under the span) or as JSON (--error-format=json). Warnings
// are counted apart from errors and do not fail a run, unless warnings_as_errors is set (then
// each is reported and counted as an error). It stops accepting errors after
// limits::kMaxPolicyErrors and then reports "too many errors, stopping" once.
// Single-threaded; owned by one compiler run and passed by reference to each stage.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mrpc/dsl/source.h"

namespace mrpc::dsl {

enum class Severity { kError, kWarning, kNote, kHelp };

struct SubDiagnostic {
  Severity severity = Severity::kNote;
  std::string message;
  std::optional<Span> span;  // a note may point elsewhere ("first declared here")
};

struct Diagnostic {
  Severity severity = Severity::kError;
  Span span;
  std::string message;
  std::vector<SubDiagnostic> children;
};

class DiagnosticEngine {
 public:
  explicit DiagnosticEngine(const SourceManager& sources) : sources_(sources) {}

  // Adds an error; returns it so the caller can attach notes and help. Past the error limit the
  // returned diagnostic is a scratch one that is never reported.
  Diagnostic& error(Span span, std::string message);
  // Adds a warning (an error under warnings_as_errors); returns it like error().
  Diagnostic& warning(Span span, std::string message);
  void set_warnings_as_errors(bool on) { warnings_as_errors_ = on; }
  static void note(Diagnostic& d, std::string message, std::optional<Span> span = std::nullopt);
  static void help(Diagnostic& d, std::string message);

  size_t error_count() const { return error_count_; }
  size_t warning_count() const { return warning_count_; }
  bool has_errors() const { return error_count_ > 0; }
  // True once limits::kMaxPolicyErrors errors were reported: stages stop early.
  bool too_many() const { return stopped_; }
  const std::vector<Diagnostic>& diagnostics() const { return diagnostics_; }

  std::string render_text(bool color = false) const;
  // One JSON object: {"diagnostics":[{"severity","file","line","column","end_line",
  // "end_column","message","children":[...]}], "error_count": N, "warning_count": M}
  std::string render_json() const;

 private:
  void render_one(std::string& out, const Diagnostic& d) const;

  const SourceManager& sources_;
  std::vector<Diagnostic> diagnostics_;
  Diagnostic scratch_;
  size_t error_count_ = 0;
  size_t warning_count_ = 0;
  bool warnings_as_errors_ = false;
  bool stopped_ = false;
};

// Levenshtein distance, for "did you mean" hints.
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `name` if it is close enough to be a likely typo, else empty.
std::string closest_name(std::string_view name, const std::vector<std::string>& candidates);

}  // namespace mrpc::dsl
