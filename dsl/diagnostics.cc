// DiagnosticEngine: clang-style text and JSON rendering of the compiler's errors.
#include "mrpc/dsl/diagnostics.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "mrpc/base/limits.h"

namespace mrpc::dsl {

namespace {

const char* severity_name(Severity s) {
  switch (s) {
    case Severity::kError:
      return "error";
    case Severity::kWarning:
      return "warning";
    case Severity::kNote:
      return "note";
    case Severity::kHelp:
      return "help";
  }
  return "error";
}

// Control characters and tabs in the echoed source line would misalign the caret.
std::string printable(std::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
  }
  return out;
}

}  // namespace

Diagnostic& DiagnosticEngine::error(Span span, std::string message) {
  if (stopped_) {
    scratch_ = Diagnostic{};
    return scratch_;
  }
  ++error_count_;
  if (error_count_ > limits::kMaxPolicyErrors) {
    stopped_ = true;
    Diagnostic stop;
    stop.span = span;
    stop.message = fmt::format("too many errors, stopping (limits::kMaxPolicyErrors = {})",
                               limits::kMaxPolicyErrors);
    diagnostics_.push_back(std::move(stop));
    --error_count_;
    scratch_ = Diagnostic{};
    return scratch_;
  }
  Diagnostic d;
  d.span = span;
  d.message = std::move(message);
  diagnostics_.push_back(std::move(d));
  return diagnostics_.back();
}

Diagnostic& DiagnosticEngine::warning(Span span, std::string message) {
  if (warnings_as_errors_) return error(span, std::move(message));
  if (stopped_) {
    scratch_ = Diagnostic{};
    return scratch_;
  }
  ++warning_count_;
  Diagnostic d;
  d.severity = Severity::kWarning;
  d.span = span;
  d.message = std::move(message);
  diagnostics_.push_back(std::move(d));
  return diagnostics_.back();
}

void DiagnosticEngine::note(Diagnostic& d, std::string message, std::optional<Span> span) {
  d.children.push_back({Severity::kNote, std::move(message), span});
}

void DiagnosticEngine::help(Diagnostic& d, std::string message) {
  d.children.push_back({Severity::kHelp, std::move(message), std::nullopt});
}

void DiagnosticEngine::render_one(std::string& out, const Diagnostic& d) const {
  auto excerpt = [&](const Span& span) {
    if (span.file >= sources_.size() || span.line == 0) return;
    const SourceFile& file = sources_.file(span.file);
    if (file.text().empty()) return;  // a file that could not be read: nothing to show
    std::string_view line = file.line_text(span.line);
    if (line.size() > 200) line = line.substr(0, 200);
    out += fmt::format("  {}\n", printable(line));
    size_t col = span.column - 1;
    if (col > line.size()) col = line.size();
    size_t width = span.end > span.begin ? span.end - span.begin : 1;
    width = std::max<size_t>(1, std::min(width, line.size() > col ? line.size() - col : 1));
    // Columns count bytes; the caret goes under characters, so count UTF-8 code points.
    auto code_points = [](std::string_view text) {
      size_t n = 0;
      for (char c : text) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
      return n;
    };
    size_t indent = code_points(line.substr(0, col));
    size_t marks = std::max<size_t>(1, code_points(line.substr(col, width)));
    out += "  " + std::string(indent, ' ') + "^" + std::string(marks - 1, '~') + "\n";
  };
  auto where = [&](const Span& span) {
    if (span.file >= sources_.size()) return std::string("<unknown>");
    return fmt::format("{}:{}:{}", sources_.file(span.file).path(), span.line, span.column);
  };
  out += fmt::format("{}: {}: {}\n", where(d.span), severity_name(d.severity), d.message);
  excerpt(d.span);
  for (const SubDiagnostic& child : d.children) {
    if (child.span) {
      out += fmt::format("{}: {}: {}\n", where(*child.span), severity_name(child.severity),
                         child.message);
      excerpt(*child.span);
    } else {
      out += fmt::format("  = {}: {}\n", severity_name(child.severity), child.message);
    }
  }
}

std::string DiagnosticEngine::render_text(bool /*color*/) const {
  std::string out;
  for (const Diagnostic& d : diagnostics_) render_one(out, d);
  auto counted = [](size_t n, const char* what) {
    return fmt::format("{} {}{}", n, what, n == 1 ? "" : "s");
  };
  if (warning_count_ > 0 && error_count_ > 0) {
    out += fmt::format("{} and {} generated.\n", counted(warning_count_, "warning"),
                       counted(error_count_, "error"));
  } else if (warning_count_ > 0) {
    out += fmt::format("{} generated.\n", counted(warning_count_, "warning"));
  } else if (error_count_ > 0) {
    out += fmt::format("{} generated.\n", counted(error_count_, "error"));
  }
  return out;
}

std::string DiagnosticEngine::render_json() const {
  using nlohmann::json;
  auto location = [&](json& j, const Span& span) {
    j["file"] = span.file < sources_.size() ? sources_.file(span.file).path() : "";
    j["line"] = span.line;
    j["column"] = span.column;
    uint32_t end_line = span.line, end_column = span.column;
    if (span.file < sources_.size() && span.end > span.begin) {
      sources_.file(span.file).position(span.end, end_line, end_column);
    }
    j["end_line"] = end_line;
    j["end_column"] = end_column;
  };
  json list = json::array();
  for (const Diagnostic& d : diagnostics_) {
    json j;
    j["severity"] = severity_name(d.severity);
    location(j, d.span);
    j["message"] = d.message;
    json children = json::array();
    for (const SubDiagnostic& c : d.children) {
      json cj;
      cj["severity"] = severity_name(c.severity);
      cj["message"] = c.message;
      if (c.span) location(cj, *c.span);
      children.push_back(std::move(cj));
    }
    j["children"] = std::move(children);
    list.push_back(std::move(j));
  }
  json root;
  root["diagnostics"] = std::move(list);
  root["error_count"] = error_count_;
  root["warning_count"] = warning_count_;
  // Replace invalid UTF-8 (echoed from a broken file) rather than throwing.
  return root.dump(-1, ' ', false, json::error_handler_t::replace);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> previous(b.size() + 1), current(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

std::string closest_name(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = 0;
  // A typo changes at most about a third of a name (and at least one character of it).
  size_t allowed = std::max<size_t>(1, name.size() / 3);
  for (const std::string& candidate : candidates) {
    if (candidate == name) continue;
    size_t d = edit_distance(name, candidate);
    if (d <= allowed && (best.empty() || d < best_distance)) {
      best = candidate;
      best_distance = d;
    }
  }
  return best;
}

}  // namespace mrpc::dsl
