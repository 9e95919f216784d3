// parse_file: .mpol text -> ast::File, reporting every problem to a DiagnosticEngine.
// Checks the file-size limit, UTF-8, and the nesting-depth limit (on the tokens, before the
// recursive-descent parser runs, so no input can exhaust the stack), then parses with the
// ANTLR-generated parser and builds the AST. Returns nullopt when the file has any error.
// Single-threaded; each call is independent.
#pragma once

#include <optional>

#include "mrpc/dsl/ast.h"
#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"

namespace mrpc::dsl {

std::optional<ast::File> parse_file(const SourceFile& source, DiagnosticEngine& diagnostics);

}  // namespace mrpc::dsl
