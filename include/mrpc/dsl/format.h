// The canonical formatter (`mrpc-polc fmt`) and a location-free dump of the AST.
// format_file's output parses back to a tree whose dump_ast equals the original's: that is the
// round-trip property the tests check on every .mpol of the repository. Comments are kept, each
// on its own line before the construct that follows it.
#pragma once

#include <string>

#include "mrpc/dsl/ast.h"

namespace mrpc::dsl {

std::string format_file(const ast::File& file);
std::string format_expr(const ast::Expr& expr);
std::string format_type(const ast::Type& type);
// An S-expression of the tree without spans or comments: two trees mean the same iff their
// dumps are equal.
std::string dump_ast(const ast::File& file);

}  // namespace mrpc::dsl
