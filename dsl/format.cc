// The canonical formatter and the AST dump used by the round-trip tests.
#include "mrpc/dsl/format.h"

#include <fmt/format.h>

#include "mrpc/dsl/utf8.h"

namespace mrpc::dsl {

namespace {

using ast::Expr;
using ast::ExprKind;

int precedence_of_operator(const std::string& op) {
  if (op == "||") return 1;
  if (op == "&&") return 2;
  if (op == "==" || op == "!=") return 3;
  if (op == "<" || op == "<=" || op == ">" || op == ">=" || op == "in" || op == "not in") return 4;
  if (op == "+" || op == "-") return 5;
  return 6;  // * / %
}
constexpr int kUnaryPrecedence = 7;
constexpr int kPostfixPrecedence = 8;
constexpr int kPrimaryPrecedence = 9;

int precedence(const Expr& e) {
  switch (e.kind) {
    case ExprKind::kBinary:
      return precedence_of_operator(e.text);
    case ExprKind::kUnary:
      return kUnaryPrecedence;
    case ExprKind::kMember:
    case ExprKind::kIndex:
    case ExprKind::kCall:
      return kPostfixPrecedence;
    default:
      return kPrimaryPrecedence;
  }
}

std::string quote(const std::string& value) {
  bool utf8 = first_invalid_utf8(value) == std::string::npos;
  std::string out = "\"";
  for (char c : value) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (u < 0x20 || u == 0x7f || (u >= 0x80 && !utf8)) {
          out += fmt::format("\\x{:02x}", u);
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

std::string float_text(double value) {
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".ein") != std::string::npos) {
    size_t e = text.find('e');
    if (e != std::string::npos && text.find('.') == std::string::npos) text.insert(e, ".0");
    return text;
  }
  return text + ".0";
}

void print_expr(std::string& out, const Expr& e);

void print_operand(std::string& out, const Expr& e, bool parenthesize) {
  if (parenthesize) out += "(";
  print_expr(out, e);
  if (parenthesize) out += ")";
}

void print_list(std::string& out, const std::vector<ast::ExprPtr>& items, size_t from) {
  for (size_t i = from; i < items.size(); ++i) {
    if (i > from) out += ", ";
    print_expr(out, *items[i]);
  }
}

void print_expr(std::string& out, const Expr& e) {
  switch (e.kind) {
    case ExprKind::kInt:
      out += std::to_string(e.int_value);
      break;
    case ExprKind::kFloat:
      out += float_text(e.float_value);
      break;
    case ExprKind::kDuration:
      out += std::to_string(e.int_value) + e.text;
      break;
    case ExprKind::kString:
      out += quote(e.text);
      break;
    case ExprKind::kBool:
      out += e.int_value != 0 ? "true" : "false";
      break;
    case ExprKind::kName:
      out += e.text;
      break;
    case ExprKind::kMember:
      print_operand(out, *e.children[0], precedence(*e.children[0]) < kPostfixPrecedence);
      out += "." + e.text;
      break;
    case ExprKind::kIndex:
      print_operand(out, *e.children[0], precedence(*e.children[0]) < kPostfixPrecedence);
      out += "[";
      print_expr(out, *e.children[1]);
      out += "]";
      break;
    case ExprKind::kCall:
      print_operand(out, *e.children[0], precedence(*e.children[0]) < kPostfixPrecedence);
      out += "(";
      for (size_t i = 1; i < e.children.size(); ++i) {
        if (i > 1) out += ", ";
        if (!e.arg_names[i - 1].empty()) out += e.arg_names[i - 1] + " = ";
        print_expr(out, *e.children[i]);
      }
      out += ")";
      break;
    case ExprKind::kUnary:
      out += e.text;
      print_operand(out, *e.children[0], precedence(*e.children[0]) < kUnaryPrecedence);
      break;
    case ExprKind::kBinary: {
      int p = precedence_of_operator(e.text);
      print_operand(out, *e.children[0], precedence(*e.children[0]) < p);
      out += " " + e.text + " ";
      print_operand(out, *e.children[1], precedence(*e.children[1]) <= p);
      break;
    }
    case ExprKind::kList:
      out += "[";
      print_list(out, e.children, 0);
      out += "]";
      break;
    case ExprKind::kSet:
      out += "{";
      print_list(out, e.children, 0);
      out += "}";
      break;
    case ExprKind::kMap:
      out += "{";
      for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
        if (i > 0) out += ", ";
        print_expr(out, *e.children[i]);
        out += ": ";
        print_expr(out, *e.children[i + 1]);
      }
      out += "}";
      break;
    case ExprKind::kEmptyBraces:
      out += "{}";
      break;
  }
}

class Formatter {
 public:
  explicit Formatter(const ast::File& file) : file_(file) {}

  std::string run() {
    const ast::Item* previous = nullptr;
    for (const ast::Item& item : file_.items) {
      if (previous != nullptr && !(item.index() == previous->index() && item.index() <= 1)) {
        out_ += "\n";
      }
      std::visit([&](const auto& node) { flush_comments(node.span.begin, 0); }, item);
      if (auto* import = std::get_if<ast::Import>(&item)) {
        out_ +=
            fmt::format("import {}{};\n", import->is_proto ? "proto " : "", quote(import->path));
      } else if (auto* constant = std::get_if<ast::Const>(&item)) {
        out_ += "const " + constant->name;
        if (constant->type) out_ += ": " + format_type(*constant->type);
        out_ += " = " + format_expr(*constant->value) + ";\n";
      } else if (auto* policy = std::get_if<ast::Policy>(&item)) {
        print_policy(*policy);
      } else if (auto* marshal = std::get_if<ast::Marshal>(&item)) {
        print_marshal(*marshal);
      }
      previous = &item;
    }
    flush_comments(UINT32_MAX, 0);
    return out_;
  }

 private:
  void indent(int level) { out_.append(static_cast<size_t>(level) * 2, ' '); }

  void flush_comments(uint32_t before, int level) {
    while (next_comment_ < file_.comments.size() &&
           file_.comments[next_comment_].span.begin < before) {
      indent(level);
      out_ += file_.comments[next_comment_].text + "\n";
      ++next_comment_;
    }
  }

  void print_policy(const ast::Policy& policy) {
    out_ += "policy " + policy.name + " {\n";
    bool first = true;
    for (const ast::PolicyMember& member : policy.members) {
      if (std::holds_alternative<ast::Handler>(member) && !first) out_ += "\n";
      first = false;
      std::visit([&](const auto& node) { flush_comments(node.span.begin, 1); }, member);
      indent(1);
      if (auto* applies = std::get_if<ast::AppliesTo>(&member)) {
        out_ += "applies to ";
        for (size_t i = 0; i < applies->patterns.size(); ++i) {
          if (i > 0) out_ += ", ";
          out_ += ast::pattern_text(applies->patterns[i]);
        }
        out_ += fmt::format(" at {};\n", ast::placement_name(applies->placement));
      } else if (auto* param = std::get_if<ast::Param>(&member)) {
        out_ += fmt::format("param {}: {} = {};\n", param->name, format_type(param->type),
                            format_expr(*param->default_value));
      } else if (auto* state = std::get_if<ast::State>(&member)) {
        out_ += fmt::format("{} {}: {}", state->per_call ? "call" : "state", state->name,
                            format_type(state->type));
        if (!state->args.empty()) {
          out_ += "[";
          for (size_t i = 0; i < state->args.size(); ++i) {
            if (i > 0) out_ += ", ";
            if (!state->args[i].key.empty()) out_ += state->args[i].key + " ";
            out_ += format_expr(*state->args[i].value);
          }
          out_ += "]";
        }
        if (state->initial) out_ += " = " + format_expr(*state->initial);
        out_ += ";\n";
      } else if (auto* schedule = std::get_if<ast::Schedule>(&member)) {
        out_ += "schedule " + schedule->kind;
        if (!schedule->weights.empty()) {
          out_ += " [";
          print_list(out_, schedule->weights, 0);
          out_ += "]";
        }
        out_ += ";\n";
      } else if (auto* handler = std::get_if<ast::Handler>(&member)) {
        out_ += "on ";
        for (size_t i = 0; i < handler->kinds.size(); ++i) {
          out_ += fmt::format("{}{}", i > 0 ? ", " : "", ast::handler_kind_name(handler->kinds[i]));
        }
        out_ += " ";
        print_block(handler->body, 1);
        out_ += "\n";
      }
    }
    flush_comments(policy.span.end - 1, 1);
    out_ += "}\n";
  }

  void print_marshal(const ast::Marshal& marshal) {
    out_ += "marshal " + ast::pattern_text(marshal.pattern) + " {\n";
    for (const ast::MarshalRule& rule : marshal.rules) {
      flush_comments(rule.span.begin, 1);
      indent(1);
      switch (rule.kind) {
        case ast::MarshalRule::Kind::kEncoding:
          out_ += "encoding " + rule.encoding + ";\n";
          break;
        case ast::MarshalRule::Kind::kPeer:
          out_ += fmt::format("peer {} encoding {};\n", quote(rule.peer_glob), rule.encoding);
          break;
        case ast::MarshalRule::Kind::kRedact:
          out_ += "redact " + format_expr(*rule.path) + ";\n";
          break;
      }
    }
    flush_comments(marshal.span.end - 1, 1);
    out_ += "}\n";
  }

  // Prints `{ ... }` starting at the current column; the closing brace at `level`.
  void print_block(const ast::Block& block, int level) {
    out_ += "{\n";
    for (const auto& stmt : block.statements) print_statement(*stmt, level + 1);
    flush_comments(block.span.end > 0 ? block.span.end - 1 : 0, level + 1);
    indent(level);
    out_ += "}";
  }

  void print_statement(const ast::Stmt& s, int level) {
    flush_comments(s.span.begin, level);
    indent(level);
    switch (s.kind) {
      case ast::StmtKind::kLet:
        out_ += (s.is_mutable ? "var " : "let ") + s.name;
        if (s.type) out_ += ": " + format_type(*s.type);
        out_ += " = " + format_expr(*s.exprs[0]) + ";\n";
        break;
      case ast::StmtKind::kAssign:
        out_ += format_expr(*s.exprs[0]) + " " + s.op + " " + format_expr(*s.exprs[1]) + ";\n";
        break;
      case ast::StmtKind::kRemove:
        out_ += "remove " + format_expr(*s.exprs[0]) + ";\n";
        break;
      case ast::StmtKind::kClear:
        out_ += "clear " + format_expr(*s.exprs[0]) + ";\n";
        break;
      case ast::StmtKind::kIf:
        for (size_t i = 0; i < s.blocks.size(); ++i) {
          if (i > 0) out_ += " else ";
          if (i < s.exprs.size()) out_ += "if " + format_expr(*s.exprs[i]) + " ";
          print_block(s.blocks[i], level);
        }
        out_ += "\n";
        break;
      case ast::StmtKind::kFor:
        out_ += "for " + s.name + " in " + format_expr(*s.exprs[0]);
        if (s.exprs.size() > 1) out_ += ".." + format_expr(*s.exprs[1]);
        out_ += " ";
        print_block(s.blocks[0], level);
        out_ += "\n";
        break;
      case ast::StmtKind::kPass:
        out_ += "pass;\n";
        break;
      case ast::StmtKind::kDrop:
        out_ += "drop;\n";
        break;
      case ast::StmtKind::kBreak:
        out_ += "break;\n";
        break;
      case ast::StmtKind::kExpr:
        out_ += format_expr(*s.exprs[0]) + ";\n";
        break;
    }
  }

  const ast::File& file_;
  std::string out_;
  size_t next_comment_ = 0;
};

// ---- dump ----

void dump_expr(std::string& out, const Expr& e);

void dump_type(std::string& out, const ast::Type& t) {
  out += "(type " + t.name;
  for (const auto& a : t.args) {
    out += " ";
    dump_type(out, a);
  }
  out += ")";
}

void dump_expr(std::string& out, const Expr& e) {
  static const char* const kNames[] = {"int",    "float",  "duration", "string", "bool",
                                       "name",   "member", "index",    "call",   "unary",
                                       "binary", "list",   "set",      "map",    "empty"};
  out += fmt::format("({} {} {} {:?}", kNames[static_cast<int>(e.kind)], e.int_value, e.float_value,
                     e.text);
  for (const auto& name : e.arg_names) out += fmt::format(" arg={:?}", name);
  for (const auto& child : e.children) {
    out += " ";
    dump_expr(out, *child);
  }
  out += ")";
}

void dump_block(std::string& out, const ast::Block& b);

void dump_stmt(std::string& out, const ast::Stmt& s) {
  out += fmt::format("(stmt {} {:?} {} {:?}", static_cast<int>(s.kind), s.name, s.is_mutable, s.op);
  if (s.type) dump_type(out, *s.type);
  for (const auto& e : s.exprs) {
    out += " ";
    dump_expr(out, *e);
  }
  for (const auto& b : s.blocks) dump_block(out, b);
  out += ")";
}

void dump_block(std::string& out, const ast::Block& b) {
  out += "(block";
  for (const auto& s : b.statements) {
    out += " ";
    dump_stmt(out, *s);
  }
  out += ")";
}

void dump_pattern(std::string& out, const ast::Pattern& p) {
  out += fmt::format(" (pattern {:?})", ast::pattern_text(p));
}

}  // namespace

std::string format_expr(const ast::Expr& expr) {
  std::string out;
  print_expr(out, expr);
  return out;
}

std::string format_type(const ast::Type& type) {
  std::string out = type.name;
  if (!type.args.empty()) {
    out += "<";
    for (size_t i = 0; i < type.args.size(); ++i) {
      if (i > 0) out += ", ";
      out += format_type(type.args[i]);
    }
    out += ">";
  }
  return out;
}

std::string format_file(const ast::File& file) {
  return Formatter(file).run();
}

std::string dump_ast(const ast::File& file) {
  std::string out;
  for (const ast::Item& item : file.items) {
    if (auto* import = std::get_if<ast::Import>(&item)) {
      out += fmt::format("(import {} {:?})\n", import->is_proto, import->path);
    } else if (auto* c = std::get_if<ast::Const>(&item)) {
      out += fmt::format("(const {:?} ", c->name);
      if (c->type) dump_type(out, *c->type);
      dump_expr(out, *c->value);
      out += ")\n";
    } else if (auto* policy = std::get_if<ast::Policy>(&item)) {
      out += fmt::format("(policy {:?}\n", policy->name);
      for (const auto& member : policy->members) {
        if (auto* a = std::get_if<ast::AppliesTo>(&member)) {
          out += fmt::format("  (applies {}", ast::placement_name(a->placement));
          for (const auto& p : a->patterns) dump_pattern(out, p);
        } else if (auto* p = std::get_if<ast::Param>(&member)) {
          out += fmt::format("  (param {:?} ", p->name);
          dump_type(out, p->type);
          dump_expr(out, *p->default_value);
        } else if (auto* s = std::get_if<ast::State>(&member)) {
          out += fmt::format("  ({} {:?} ", s->per_call ? "call" : "state", s->name);
          dump_type(out, s->type);
          for (const auto& arg : s->args) {
            out += fmt::format(" (arg {:?} ", arg.key);
            dump_expr(out, *arg.value);
            out += ")";
          }
          if (s->initial) {
            out += " (initial ";
            dump_expr(out, *s->initial);
            out += ")";
          }
        } else if (auto* sc = std::get_if<ast::Schedule>(&member)) {
          out += fmt::format("  (schedule {:?}", sc->kind);
          for (const auto& w : sc->weights) dump_expr(out, *w);
        } else if (auto* h = std::get_if<ast::Handler>(&member)) {
          out += "  (on";
          for (auto kind : h->kinds) out += fmt::format(" {}", ast::handler_kind_name(kind));
          out += " ";
          dump_block(out, h->body);
        }
        out += ")\n";
      }
      out += ")\n";
    } else if (auto* m = std::get_if<ast::Marshal>(&item)) {
      out += "(marshal";
      dump_pattern(out, m->pattern);
      for (const auto& rule : m->rules) {
        out += fmt::format(" (rule {} {:?} {:?} ", static_cast<int>(rule.kind), rule.encoding,
                           rule.peer_glob);
        if (rule.path) dump_expr(out, *rule.path);
        out += ")";
      }
      out += ")\n";
    }
  }
  return out;
}

namespace ast {

const char* handler_kind_name(HandlerKind kind) {
  switch (kind) {
    case HandlerKind::kRequest:
      return "request";
    case HandlerKind::kResponse:
      return "response";
    case HandlerKind::kError:
      return "error";
  }
  return "request";
}

const char* placement_name(Placement placement) {
  return placement == Placement::kCaller ? "caller" : "callee";
}

std::string pattern_text(const Pattern& pattern) {
  std::string out;
  for (const auto& segment : pattern.segments) {
    if (!out.empty()) out += ".";
    out += segment;
  }
  if (pattern.wildcard) out += out.empty() ? "*" : ".*";
  return out;
}

}  // namespace ast

}  // namespace mrpc::dsl
