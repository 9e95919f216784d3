// parse_file: .mpol text -> ast::File, reporting every problem to a DiagnosticEngine.
// Checks the file-size limit, UTF-8, and the nesting-depth limit (on the tokens, before the
// recursive-descent parser runs, so no input can exhaust the stack), then parses with the
// ANTLR-generated parser and builds the AST. Returns nullopt when the file has any error.
// Threads: each call is independent, but the ANTLR 4.9 runtime shares one DFA cache per grammar
// between all parser instances; it grows with the variety of inputs seen (seen under the fuzzer)
// and is not documented as safe for concurrent parses: parse policies from one thread (the
// daemon's control thread), never on the datapath.
#pragma once

#include <optional>

#include "mrpc/dsl/ast.h"
#include "mrpc/dsl/diagnostics.h"
#include "mrpc/dsl/source.h"

namespace mrpc::dsl {

std::optional<ast::File> parse_file(const SourceFile& source, DiagnosticEngine& diagnostics);

}  // namespace mrpc::dsl
