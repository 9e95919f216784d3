// parse_file: limits and UTF-8 check, token-level nesting guard, ANTLR parse, AST building.
#include "mrpc/dsl/parser.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <exception>
#include <string_view>

#include "MpolLexer.h"
#include "MpolParser.h"
#include "antlr4-runtime.h"
#include "mrpc/base/check.h"
#include "mrpc/base/limits.h"
#include "mrpc/dsl/utf8.h"

namespace mrpc::dsl {

namespace {

using antlr4::ParserRuleContext;
using antlr4::Token;
using antlr4::tree::TerminalNode;

// Thrown from an error listener to abandon a parse once the error limit is reached. Caught in
// parse_file; never crosses this file.
struct StopParsing : std::exception {};

// ANTLR counts positions in code points; diagnostics count bytes. Maps one to the other.
class Positions {
 public:
  explicit Positions(const std::string& text) : size_(static_cast<uint32_t>(text.size())) {
    bool ascii = true;
    for (char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (ascii) return;
    for (uint32_t i = 0; i < text.size(); ++i) {
      if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) byte_of_code_point_.push_back(i);
    }
  }
  uint32_t byte(size_t code_point) const {
    if (byte_of_code_point_.empty())
      return static_cast<uint32_t>(std::min<size_t>(code_point, size_));
    if (code_point >= byte_of_code_point_.size()) return size_;
    return byte_of_code_point_[code_point];
  }

 private:
  uint32_t size_;
  std::vector<uint32_t> byte_of_code_point_;
};

// ANTLR's messages name token types ("expecting {'{', INT, IDENT, ...}"); operators read
// "expected an expression". Rewrites the common shapes, keeps anything else as it is.
std::string describe_expected(std::string set) {
  if (!set.empty() && set.front() == '{' && set.back() == '}') set = set.substr(1, set.size() - 2);
  std::vector<std::string> items;
  for (size_t start = 0; start <= set.size();) {
    size_t comma = set.find(", ", start);
    if (comma == std::string::npos) comma = set.size();
    items.push_back(set.substr(start, comma - start));
    start = comma + 2;
  }
  bool expression = false;
  for (const auto& item : items) {
    expression =
        expression || item == "INT" || item == "STRING" || item == "FLOAT" || item == "DURATION";
  }
  if (expression && items.size() > 4) return "an expression";
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    std::string item = items[i];
    if (item == "IDENT") item = "a name";
    if (item == "STRING") item = "a string";
    if (item == "INT") item = "an int";
    if (item == "FLOAT") item = "a float";
    if (item == "DURATION") item = "a duration";
    if (item == "<EOF>") item = "end of file";
    if (i > 0) out += i + 1 == items.size() ? " or " : ", ";
    out += item;
  }
  return out;
}

std::string shorten(std::string token) {
  if (token == "'<EOF>'") return "end of file";
  if (token.size() > 40) token = token.substr(0, 37) + "...'";
  return token;
}

std::string friendly_message(const std::string& message) {
  auto starts = [&](const char* prefix) { return message.rfind(prefix, 0) == 0; };
  size_t expecting = message.find(" expecting ");
  if ((starts("mismatched input ") || starts("extraneous input ")) &&
      expecting != std::string::npos) {
    size_t start = message.find(' ', message.find("input")) + 1;
    return "unexpected " + shorten(message.substr(start, expecting - start)) + ", expected " +
           describe_expected(message.substr(expecting + 11));
  }
  if (starts("missing ")) {
    size_t at = message.rfind(" at ");
    if (at != std::string::npos) {
      return "expected " + describe_expected(message.substr(8, at - 8)) + " before " +
             shorten(message.substr(at + 4));
    }
  }
  if (starts("no viable alternative at input ")) {
    std::string input = message.substr(31);
    return "cannot parse " + shorten(input);
  }
  return message;
}

// Words and operators from other languages that people type by habit, and what .mpol says
// instead: a help line on the syntax error they cause.
std::string habit_hint(const std::string& text) {
  std::vector<std::string> words;
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; };
  for (size_t i = 0; i < text.size();) {
    if (!ident(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && ident(text[j])) ++j;
    words.push_back(text.substr(i, j - i));
    i = j;
  }
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w == "while" || w == "loop" || w == "do")
      return "there is no `" + w +
             "` loop: `for x in list { }` and `for i in 0..N { }` are bounded, so every handler "
             "ends";
    if (w == "elif" || w == "elsif" || w == "elseif") return "write `else if`";
    if (w == "return")
      return "there is no `return`: `pass;` ends the handler and lets the call go on, "
             "`reject(CODE, \"why\");` ends it with an error";
    if (w == "and") return "write `&&` for `and`";
    if (w == "or") return "write `||` for `or`";
    if (w == "not" && (i + 1 >= words.size() || words[i + 1] != "in"))
      return "write `!` to negate (`not` only appears in `x not in c`)";
    if (w == "null" || w == "nil" || w == "None")
      return "there is no `" + w + "`: absent values read as zero (\"\", 0, false)";
  }
  if (text.find("++") != std::string::npos) return "write `x += 1;`";
  if (text.find("--") != std::string::npos) return "write `x -= 1;`";
  return "";
}

// Collapses runs of whitespace (newlines included) to one space.
std::string one_line(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

class ErrorListener final : public antlr4::BaseErrorListener {
 public:
  ErrorListener(const SourceFile& source, const Positions& positions, DiagnosticEngine& diagnostics)
      : source_(source), positions_(positions), diagnostics_(diagnostics) {}

  void syntaxError(antlr4::Recognizer* recognizer, Token* offending, size_t line,
                   size_t char_position, const std::string& message,
                   std::exception_ptr error) override {
    Span span;
    if (offending != nullptr && offending->getType() != Token::EOF) {
      span = source_.span(positions_.byte(offending->getStartIndex()),
                          positions_.byte(offending->getStopIndex() + 1));
    } else if (offending != nullptr) {
      uint32_t at = static_cast<uint32_t>(source_.text().size());
      span = source_.span(at, at);
    } else {
      // A lexer error: ANTLR gives line and column (in code points) only.
      auto* lexer = dynamic_cast<antlr4::Lexer*>(recognizer);
      uint32_t at =
          lexer != nullptr ? positions_.byte(lexer->tokenStartCharIndex) : static_cast<uint32_t>(0);
      span = source_.span(at, at + 1);
      (void)line;
      (void)char_position;
    }
    std::string text = offending != nullptr ? friendly_message(message) : message;
    // What the hints look at: the offending token, or the whole stretch ANTLR could not parse.
    std::string hint_text = offending != nullptr ? offending->getText() : "";
    if (offending != nullptr && message.rfind("no viable alternative at input ", 0) == 0) {
      // ANTLR glues the tokens of the stretch together ("whiletrue"): quote the source instead.
      Token* start = offending;
      try {
        std::rethrow_exception(error);
      } catch (const antlr4::NoViableAltException& e) {
        if (e.getStartToken() != nullptr) start = e.getStartToken();
      } catch (...) {
      }
      uint32_t from = positions_.byte(start->getStartIndex());
      uint32_t to = offending->getType() == Token::EOF
                        ? static_cast<uint32_t>(source_.text().size())
                        : positions_.byte(offending->getStopIndex() + 1);
      if (from <= to) {
        hint_text = one_line(std::string_view(source_.text()).substr(from, to - from));
        text = "cannot parse " + shorten("'" + hint_text + "'");
      }
    }
    bool single_quote = false;
    if (offending == nullptr) {
      // "token recognition error at: '@'" -> "unexpected character '@'"
      const std::string prefix = "token recognition error at: ";
      if (text.rfind(prefix + "'\"", 0) == 0) {
        text = "unterminated string literal";
      } else if (text == prefix + "'''") {
        // 'x': one error for the pair of quotes on a line, not one per quote.
        if (span.line == last_quote_line_) {
          last_quote_line_ = 0;
          return;
        }
        last_quote_line_ = span.line;
        single_quote = true;
        text = "unexpected character ''': strings use double quotes";
      } else if (text.rfind(prefix, 0) == 0) {
        text = "unexpected character " + text.substr(prefix.size());
      }
    }
    for (size_t at = 0; (at = text.find_first_of("\r\n", at)) != std::string::npos;) {
      text.replace(at, 1, text[at] == '\n' ? "\\n" : "\\r");
    }
    Diagnostic& d = diagnostics_.error(span, "syntax error: " + text);
    if (text == "unterminated string literal") {
      DiagnosticEngine::help(d, "string literals end on the line they start");
    } else if (single_quote) {
      DiagnosticEngine::help(d, "write \"text\", not 'text'");
    } else if (hint_text == "=") {
      DiagnosticEngine::help(d, "`=` assigns; to compare, write `==`");
    } else if (std::string hint = habit_hint(hint_text); !hint.empty()) {
      DiagnosticEngine::help(d, hint);
    }
    if (diagnostics_.too_many()) throw StopParsing();
  }

 private:
  const SourceFile& source_;
  const Positions& positions_;
  DiagnosticEngine& diagnostics_;
  uint32_t last_quote_line_ = 0;
};

bool is_chain_operator(const std::string& text) {
  static const char* const kOperators[] = {"+",  "-",  "*",  "/",  "%",  "<",  "<=",  ">",
                                           ">=", "==", "!=", "&&", "||", "in", "not", "."};
  for (const char* op : kOperators)
    if (text == op) return true;
  return false;
}

// Looks at the tokens only, before parsing, and rejects
// - nesting deeper than limits::kMaxPolicyNestingDepth: brackets, runs of prefix operators and
//   `list<`/`set<`/`map<` type arguments are what make the generated recursive-descent parser
//   recurse;
// - a run of more than limits::kMaxPolicyOperatorChain operators (between `;`, `,`, `{`, `}` at
//   one bracket level): the AST would be too deep anyway, and ANTLR spends time and memory in
//   proportion to the run before the AST builder can say so (docs/security.md, finding 8).
bool check_nesting(const std::vector<Token*>& tokens, const SourceFile& source,
                   const Positions& positions, DiagnosticEngine& diagnostics) {
  uint32_t brackets = 0, type_args = 0, prefix_run = 0;
  std::vector<uint32_t> chain{0};  // operators in the current run, one counter per bracket level
  std::string previous_text;
  auto reject = [&](Token* token, std::string message, const char* help) {
    Span span = source.span(positions.byte(token->getStartIndex()),
                            positions.byte(token->getStopIndex() + 1));
    Diagnostic& d = diagnostics.error(span, std::move(message));
    DiagnosticEngine::help(d, help);
    return false;
  };
  for (Token* token : tokens) {
    if (token->getChannel() != Token::DEFAULT_CHANNEL || token->getType() == Token::EOF) continue;
    std::string text = token->getText();
    if (text == "(" || text == "[" || text == "{") {
      ++brackets;
      chain.push_back(0);
    } else if ((text == ")" || text == "]" || text == "}") && brackets > 0) {
      --brackets;
      chain.pop_back();
    } else if (text == "<" &&
               (previous_text == "list" || previous_text == "set" || previous_text == "map")) {
      ++type_args;
    } else if (text == ">" && type_args > 0) {
      --type_args;
    }
    if (text == ";" || text == "," || text == "{" || text == "}") {
      chain.back() = 0;
    } else if (is_chain_operator(text) && ++chain.back() > limits::kMaxPolicyOperatorChain) {
      return reject(token,
                    fmt::format("more than {} operators in a row in one expression "
                                "(limits::kMaxPolicyOperatorChain)",
                                limits::kMaxPolicyOperatorChain),
                    "split the expression with `let`");
    }
    prefix_run = (text == "!" || text == "-") ? prefix_run + 1 : 0;
    if (brackets + type_args + prefix_run > limits::kMaxPolicyNestingDepth) {
      return reject(
          token,
          fmt::format("nesting is deeper than the limit of {} (limits::kMaxPolicyNestingDepth)",
                      limits::kMaxPolicyNestingDepth),
          "split the expression with `let` or flatten the blocks");
    }
    previous_text = std::move(text);
  }
  return true;
}

class AstBuilder {
 public:
  AstBuilder(const SourceFile& source, const Positions& positions, DiagnosticEngine& diagnostics)
      : source_(source), positions_(positions), diagnostics_(diagnostics) {}

  ast::File build(MpolParser::File_Context* file) {
    ast::File out;
    out.source_id = source_.id();
    for (auto* item : file->item()) {
      if (auto* import = dynamic_cast<MpolParser::ImportItemContext*>(item)) {
        out.items.emplace_back(build_import(import));
      } else if (auto* constant = dynamic_cast<MpolParser::ConstItemContext*>(item)) {
        ast::Const c;
        c.name = constant->IDENT()->getText();
        c.name_span = span(constant->IDENT());
        if (constant->type() != nullptr) c.type = build_type(constant->type(), 0);
        c.value = build_expr(constant->expr(), 0);
        c.span = span(constant);
        out.items.emplace_back(std::move(c));
      } else if (auto* policy = dynamic_cast<MpolParser::PolicyItemContext*>(item)) {
        out.items.emplace_back(build_policy(policy));
      } else if (auto* marshal = dynamic_cast<MpolParser::MarshalItemContext*>(item)) {
        out.items.emplace_back(build_marshal(marshal));
      }
    }
    return out;
  }

 private:
  Span span(ParserRuleContext* ctx) const {
    uint32_t begin = positions_.byte(ctx->getStart()->getStartIndex());
    Token* stop = ctx->getStop();
    uint32_t end = stop != nullptr && stop->getStopIndex() + 1 > ctx->getStart()->getStartIndex()
                       ? positions_.byte(stop->getStopIndex() + 1)
                       : begin;
    return source_.span(begin, end);
  }
  Span span(Token* token) const {
    return source_.span(positions_.byte(token->getStartIndex()),
                        positions_.byte(token->getStopIndex() + 1));
  }
  Span span(TerminalNode* node) const { return span(node->getSymbol()); }

  // A contextual keyword: `to`, `at`, `proto`, ... must be spelt exactly.
  void expect_word(Token* token, const char* word, const char* where) {
    if (token != nullptr && token->getText() != word) {
      Diagnostic& d = diagnostics_.error(
          span(token), fmt::format("expected '{}' {}, found '{}'", word, where, token->getText()));
      DiagnosticEngine::help(d, fmt::format("write `{}` here", word));
    }
  }

  ast::Import build_import(MpolParser::ImportItemContext* ctx) {
    ast::Import import;
    import.span = span(ctx);
    if (ctx->kind != nullptr) {
      expect_word(ctx->kind, "proto", "after `import` (`import proto \"x.proto\";`)");
      import.is_proto = true;
    }
    import.path = decode_string(ctx->STRING()->getSymbol());
    import.path_span = span(ctx->STRING());
    return import;
  }

  ast::Pattern build_pattern(MpolParser::PatternContext* ctx) {
    ast::Pattern pattern;
    pattern.span = span(ctx);
    for (auto* ident : ctx->IDENT()) pattern.segments.push_back(ident->getText());
    pattern.wildcard = ctx->getStop() != nullptr && ctx->getStop()->getText() == "*";
    return pattern;
  }

  ast::Policy build_policy(MpolParser::PolicyItemContext* ctx) {
    ast::Policy policy;
    policy.name = ctx->IDENT()->getText();
    policy.name_span = span(ctx->IDENT());
    policy.span = span(ctx);
    for (auto* member : ctx->policyMember()) {
      if (auto* applies = dynamic_cast<MpolParser::AppliesMemberContext*>(member)) {
        ast::AppliesTo a;
        a.span = span(applies);
        expect_word(applies->to, "to", "after `applies`");
        for (auto* p : applies->pattern()) a.patterns.push_back(build_pattern(p));
        expect_word(applies->at, "at", "before the placement (`at caller` or `at callee`)");
        std::string placement = applies->placement->getText();
        if (placement == "caller") {
          a.placement = ast::Placement::kCaller;
        } else if (placement == "callee") {
          a.placement = ast::Placement::kCallee;
        } else {
          Diagnostic& d = diagnostics_.error(span(applies->placement),
                                             fmt::format("unknown placement '{}'", placement));
          DiagnosticEngine::help(d,
                                 "write `at caller` (egress, in the caller's daemon) or "
                                 "`at callee` (ingress, in the callee's daemon)");
        }
        policy.members.emplace_back(std::move(a));
      } else if (auto* param = dynamic_cast<MpolParser::ParamMemberContext*>(member)) {
        ast::Param p;
        p.name = param->IDENT()->getText();
        p.name_span = span(param->IDENT());
        p.type = build_type(param->type(), 0);
        p.default_value = build_expr(param->expr(), 0);
        p.span = span(param);
        policy.members.emplace_back(std::move(p));
      } else if (auto* state = dynamic_cast<MpolParser::StateMemberContext*>(member)) {
        ast::State s;
        s.name = state->IDENT()->getText();
        s.name_span = span(state->IDENT());
        s.type = build_type(state->type(), 0);
        for (auto* arg : state->stateArg()) {
          ast::StateArg a;
          if (arg->key != nullptr) {
            a.key = arg->key->getText();
            a.key_span = span(arg->key);
          }
          a.value = build_expr(arg->expr(), 0);
          s.args.push_back(std::move(a));
        }
        if (state->expr() != nullptr) s.initial = build_expr(state->expr(), 0);
        s.span = span(state);
        policy.members.emplace_back(std::move(s));
      } else if (auto* call = dynamic_cast<MpolParser::CallMemberContext*>(member)) {
        ast::State s;
        s.per_call = true;
        s.name = call->IDENT()->getText();
        s.name_span = span(call->IDENT());
        s.type = build_type(call->type(), 0);
        if (call->expr() != nullptr) s.initial = build_expr(call->expr(), 0);
        s.span = span(call);
        policy.members.emplace_back(std::move(s));
      } else if (auto* schedule = dynamic_cast<MpolParser::ScheduleMemberContext*>(member)) {
        ast::Schedule s;
        s.kind = schedule->IDENT()->getText();
        s.kind_span = span(schedule->IDENT());
        for (auto* e : schedule->expr()) s.weights.push_back(build_expr(e, 0));
        s.span = span(schedule);
        policy.members.emplace_back(std::move(s));
      } else if (auto* handler = dynamic_cast<MpolParser::HandlerMemberContext*>(member)) {
        ast::Handler h;
        for (auto* word : handler->IDENT()) {
          std::string kind = word->getText();
          Span kind_span = span(word);
          if (kind == "request") {
            h.kinds.push_back(ast::HandlerKind::kRequest);
          } else if (kind == "response") {
            h.kinds.push_back(ast::HandlerKind::kResponse);
          } else if (kind == "error") {
            h.kinds.push_back(ast::HandlerKind::kError);
          } else {
            Diagnostic& d =
                diagnostics_.error(kind_span, fmt::format("unknown handler 'on {}'", kind));
            std::string guess = closest_name(kind, {"request", "response", "error"});
            if (!guess.empty()) DiagnosticEngine::help(d, fmt::format("did you mean '{}'?", guess));
            DiagnosticEngine::note(d, "handlers are `on request`, `on response` and `on error`");
            continue;
          }
          h.kind_spans.push_back(kind_span);
        }
        h.body = build_block(handler->block(), 0);
        h.span = span(handler);
        policy.members.emplace_back(std::move(h));
      }
    }
    return policy;
  }

  std::string encoding_name(TerminalNode* node, ast::MarshalRule& rule) {
    std::string name = node->getText();
    rule.encoding_span = span(node);
    if (name != "native" && name != "protobuf") {
      Diagnostic& d = diagnostics_.error(span(node), fmt::format("unknown encoding '{}'", name));
      DiagnosticEngine::help(d, "encodings are `native` (zero-copy) and `protobuf` (wire format)");
    }
    return name;
  }

  ast::Marshal build_marshal(MpolParser::MarshalItemContext* ctx) {
    ast::Marshal marshal;
    marshal.pattern = build_pattern(ctx->pattern());
    marshal.span = span(ctx);
    for (auto* member : ctx->marshalMember()) {
      ast::MarshalRule rule;
      rule.span = span(member);
      if (auto* enc = dynamic_cast<MpolParser::EncodingRuleContext*>(member)) {
        std::string word = enc->IDENT(0)->getText();
        if (word == "redact") {
          // `redact name;`: a bare name is a path too (the checker rejects it).
          rule.kind = ast::MarshalRule::Kind::kRedact;
          auto e = std::make_unique<ast::Expr>();
          e->kind = ast::ExprKind::kName;
          e->text = enc->IDENT(1)->getText();
          e->span = span(enc->IDENT(1));
          rule.path = std::move(e);
        } else {
          expect_word(enc->IDENT(0)->getSymbol(), "encoding", "in a marshal rule");
          rule.kind = ast::MarshalRule::Kind::kEncoding;
          rule.encoding = encoding_name(enc->IDENT(1), rule);
        }
      } else if (auto* peer = dynamic_cast<MpolParser::PeerRuleContext*>(member)) {
        expect_word(peer->IDENT(0)->getSymbol(), "peer", "before a peer glob");
        expect_word(peer->IDENT(1)->getSymbol(), "encoding", "after the peer glob");
        rule.kind = ast::MarshalRule::Kind::kPeer;
        rule.peer_glob = decode_string(peer->STRING()->getSymbol());
        rule.encoding = encoding_name(peer->IDENT(2), rule);
      } else if (auto* redact = dynamic_cast<MpolParser::RedactRuleContext*>(member)) {
        expect_word(redact->IDENT()->getSymbol(), "redact", "before a field path");
        rule.kind = ast::MarshalRule::Kind::kRedact;
        rule.path = build_expr(redact->expr(), 0);
      }
      marshal.rules.push_back(std::move(rule));
    }
    return marshal;
  }

  bool depth_ok(uint32_t depth, ParserRuleContext* ctx) {
    if (depth <= limits::kMaxPolicyNestingDepth) return true;
    if (!depth_reported_) {
      depth_reported_ = true;
      Diagnostic& d =
          diagnostics_.error(span(ctx), fmt::format("nesting is deeper than the limit of {} "
                                                    "(limits::kMaxPolicyNestingDepth)",
                                                    limits::kMaxPolicyNestingDepth));
      DiagnosticEngine::help(d, "split the expression with `let` or flatten the blocks");
    }
    return false;
  }

  ast::Type build_type(MpolParser::TypeContext* ctx, uint32_t depth) {
    ast::Type type;
    type.span = span(ctx);
    if (!depth_ok(depth, ctx)) return type;
    type.name = ctx->IDENT()->getText();
    for (auto* arg : ctx->type()) type.args.push_back(build_type(arg, depth + 1));
    return type;
  }

  ast::Block build_block(MpolParser::BlockContext* ctx, uint32_t depth) {
    ast::Block block;
    block.span = span(ctx);
    if (!depth_ok(depth, ctx)) return block;
    for (auto* s : ctx->statement()) block.statements.push_back(build_statement(s, depth + 1));
    return block;
  }

  std::unique_ptr<ast::Stmt> build_statement(MpolParser::StatementContext* ctx, uint32_t depth) {
    auto stmt = std::make_unique<ast::Stmt>();
    stmt->span = span(ctx);
    if (auto* let = dynamic_cast<MpolParser::LetStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kLet;
      stmt->is_mutable = let->mut->getText() == "var";
      stmt->name = let->IDENT()->getText();
      stmt->name_span = span(let->IDENT());
      if (let->type() != nullptr) stmt->type = build_type(let->type(), depth);
      stmt->exprs.push_back(build_expr(let->expr(), depth));
    } else if (auto* assign = dynamic_cast<MpolParser::AssignStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kAssign;
      stmt->op = assign->op->getText();
      for (auto* e : assign->expr()) stmt->exprs.push_back(build_expr(e, depth));
    } else if (auto* remove = dynamic_cast<MpolParser::RemoveStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kRemove;
      stmt->exprs.push_back(build_expr(remove->expr(), depth));
    } else if (auto* clear = dynamic_cast<MpolParser::ClearStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kClear;
      stmt->exprs.push_back(build_expr(clear->expr(), depth));
    } else if (auto* if_stmt = dynamic_cast<MpolParser::IfStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kIf;
      for (auto* e : if_stmt->expr()) stmt->exprs.push_back(build_expr(e, depth));
      for (auto* b : if_stmt->block()) stmt->blocks.push_back(build_block(b, depth + 1));
    } else if (auto* for_stmt = dynamic_cast<MpolParser::ForStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kFor;
      stmt->name = for_stmt->IDENT()->getText();
      stmt->name_span = span(for_stmt->IDENT());
      for (auto* e : for_stmt->expr()) stmt->exprs.push_back(build_expr(e, depth));
      stmt->blocks.push_back(build_block(for_stmt->block(), depth + 1));
    } else if (dynamic_cast<MpolParser::PassStmtContext*>(ctx) != nullptr) {
      stmt->kind = ast::StmtKind::kPass;
    } else if (dynamic_cast<MpolParser::DropStmtContext*>(ctx) != nullptr) {
      stmt->kind = ast::StmtKind::kDrop;
    } else if (dynamic_cast<MpolParser::BreakStmtContext*>(ctx) != nullptr) {
      stmt->kind = ast::StmtKind::kBreak;
    } else if (auto* expr = dynamic_cast<MpolParser::ExprStmtContext*>(ctx)) {
      stmt->kind = ast::StmtKind::kExpr;
      stmt->exprs.push_back(build_expr(expr->expr(), depth));
    }
    return stmt;
  }

  ast::ExprPtr make(ast::ExprKind kind, ParserRuleContext* ctx) {
    auto e = std::make_unique<ast::Expr>();
    e->kind = kind;
    e->span = span(ctx);
    return e;
  }

  ast::ExprPtr build_expr(MpolParser::ExprContext* ctx, uint32_t depth) {
    if (!depth_ok(depth, ctx)) return make(ast::ExprKind::kInt, ctx);
    if (auto* primary = dynamic_cast<MpolParser::PrimaryExprContext*>(ctx)) {
      return build_primary(primary->primary(), depth);
    }
    if (auto* member = dynamic_cast<MpolParser::MemberExprContext*>(ctx)) {
      auto e = make(ast::ExprKind::kMember, ctx);
      e->children.push_back(build_expr(member->expr(), depth + 1));
      e->text = member->name()->getText();
      e->name_span = span(member->name());
      return e;
    }
    if (auto* index = dynamic_cast<MpolParser::IndexExprContext*>(ctx)) {
      auto e = make(ast::ExprKind::kIndex, ctx);
      for (auto* sub : index->expr()) e->children.push_back(build_expr(sub, depth + 1));
      return e;
    }
    if (auto* call = dynamic_cast<MpolParser::CallExprContext*>(ctx)) {
      auto e = make(ast::ExprKind::kCall, ctx);
      e->children.push_back(build_expr(call->expr(), depth + 1));
      for (auto* arg : call->arg()) {
        e->arg_names.push_back(arg->IDENT() != nullptr ? arg->IDENT()->getText() : "");
        e->children.push_back(build_expr(arg->expr(), depth + 1));
      }
      return e;
    }
    if (auto* unary = dynamic_cast<MpolParser::UnaryExprContext*>(ctx)) {
      auto e = make(ast::ExprKind::kUnary, ctx);
      e->text = unary->op->getText();
      e->children.push_back(build_expr(unary->expr(), depth + 1));
      return e;
    }
    auto* binary = dynamic_cast<MpolParser::BinaryExprContext*>(ctx);
    MRPC_ASSERT(binary != nullptr, "unknown expression alternative");
    auto e = make(ast::ExprKind::kBinary, ctx);
    e->text = binary->negated != nullptr ? "not in" : binary->op->getText();
    for (auto* sub : binary->expr()) e->children.push_back(build_expr(sub, depth + 1));
    return e;
  }

  ast::ExprPtr build_primary(MpolParser::PrimaryContext* ctx, uint32_t depth) {
    if (auto* lit = dynamic_cast<MpolParser::IntLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kInt, ctx);
      e->int_value = parse_int(lit->INT()->getText(), e->span);
      return e;
    }
    if (auto* lit = dynamic_cast<MpolParser::FloatLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kFloat, ctx);
      std::string text = lit->FLOAT()->getText();
      double value = 0;
      auto result = std::from_chars(text.data(), text.data() + text.size(), value);
      if (result.ec != std::errc() || !std::isfinite(value)) {
        diagnostics_.error(e->span, fmt::format("float literal '{}' is out of range", text));
      }
      e->float_value = value;
      return e;
    }
    if (auto* lit = dynamic_cast<MpolParser::DurationLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kDuration, ctx);
      std::string text = lit->DURATION()->getText();
      size_t digits = text.find_first_not_of("0123456789");
      e->text = text.substr(digits);
      e->int_value = parse_int(text.substr(0, digits), e->span);
      return e;
    }
    if (auto* lit = dynamic_cast<MpolParser::StringLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kString, ctx);
      e->text = decode_string(lit->STRING()->getSymbol());
      return e;
    }
    if (dynamic_cast<MpolParser::BoolLitContext*>(ctx) != nullptr) {
      auto e = make(ast::ExprKind::kBool, ctx);
      e->int_value = ctx->getText() == "true" ? 1 : 0;
      return e;
    }
    if (auto* name = dynamic_cast<MpolParser::NameRefContext*>(ctx)) {
      auto e = make(ast::ExprKind::kName, ctx);
      e->text = name->IDENT()->getText();
      return e;
    }
    if (auto* paren = dynamic_cast<MpolParser::ParenExprContext*>(ctx)) {
      return build_expr(paren->expr(), depth + 1);
    }
    if (auto* list = dynamic_cast<MpolParser::ListLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kList, ctx);
      for (auto* sub : list->expr()) e->children.push_back(build_expr(sub, depth + 1));
      return e;
    }
    if (auto* set = dynamic_cast<MpolParser::SetLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kSet, ctx);
      for (auto* sub : set->expr()) e->children.push_back(build_expr(sub, depth + 1));
      return e;
    }
    if (auto* map = dynamic_cast<MpolParser::MapLitContext*>(ctx)) {
      auto e = make(ast::ExprKind::kMap, ctx);
      for (auto* entry : map->mapEntry()) {
        for (auto* sub : entry->expr()) e->children.push_back(build_expr(sub, depth + 1));
      }
      return e;
    }
    return make(ast::ExprKind::kEmptyBraces, ctx);
  }

  int64_t parse_int(const std::string& digits, const Span& where) {
    int64_t value = 0;
    auto result = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (result.ec != std::errc()) {
      Diagnostic& d =
          diagnostics_.error(where, fmt::format("integer literal '{}' is too large", digits));
      DiagnosticEngine::note(d, "the largest int is 9223372036854775807");
    }
    return value;
  }

  std::string decode_string(Token* token) {
    std::string raw = token->getText();
    Span where = span(token);
    std::string out;
    // Strip the quotes; the lexer guarantees both are there.
    for (size_t i = 1; i + 1 < raw.size(); ++i) {
      char c = raw[i];
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      char next = raw[++i];
      switch (next) {
        case 'n':
          out.push_back('\n');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case '0':
          out.push_back('\0');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '"':
          out.push_back('"');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case 'x': {
          auto hex = [](char h) -> int {
            if (h >= '0' && h <= '9') return h - '0';
            if (h >= 'a' && h <= 'f') return h - 'a' + 10;
            if (h >= 'A' && h <= 'F') return h - 'A' + 10;
            return -1;
          };
          int high = i + 1 + 1 < raw.size() ? hex(raw[i + 1]) : -1;
          int low = i + 2 + 1 < raw.size() ? hex(raw[i + 2]) : -1;
          if (high < 0 || low < 0) {
            diagnostics_.error(where, "escape '\\x' needs two hex digits");
          } else {
            out.push_back(static_cast<char>(high * 16 + low));
            i += 2;
          }
          break;
        }
        default: {
          Diagnostic& d = diagnostics_.error(
              where, fmt::format("unknown escape sequence '\\{}' in string literal", next));
          DiagnosticEngine::help(d, "escapes are \\n \\t \\r \\0 \\\\ \\\" \\' and \\xHH");
        }
      }
    }
    if (out.size() > limits::kMaxStringLiteralBytes) {
      diagnostics_.error(where,
                         fmt::format("string literal is {} bytes, longer than the limit of {} "
                                     "(limits::kMaxStringLiteralBytes)",
                                     out.size(), limits::kMaxStringLiteralBytes));
    }
    return out;
  }

  const SourceFile& source_;
  const Positions& positions_;
  DiagnosticEngine& diagnostics_;
  bool depth_reported_ = false;
};

}  // namespace

std::optional<ast::File> parse_file(const SourceFile& source, DiagnosticEngine& diagnostics) {
  const std::string& text = source.text();
  if (text.size() > limits::kMaxPolicyFileBytes) {
    Diagnostic& d = diagnostics.error(
        source.span(0, 0), fmt::format("file is {} bytes, larger than the limit of {} bytes "
                                       "(limits::kMaxPolicyFileBytes)",
                                       text.size(), limits::kMaxPolicyFileBytes));
    DiagnosticEngine::help(d, "split the policies over several files and `import` them");
    return std::nullopt;
  }
  if (size_t bad = first_invalid_utf8(text); bad != std::string::npos) {
    Diagnostic& d =
        diagnostics.error(source.span(static_cast<uint32_t>(bad), static_cast<uint32_t>(bad + 1)),
                          fmt::format("file is not UTF-8 text: invalid byte 0x{:02x} at offset {}",
                                      static_cast<unsigned char>(text[bad]), bad));
    DiagnosticEngine::note(d, ".mpol files are UTF-8 text");
    return std::nullopt;
  }
  size_t errors_before = diagnostics.error_count();
  Positions positions(text);
  ErrorListener listener(source, positions, diagnostics);
  try {
    antlr4::ANTLRInputStream input(text);
    MpolLexer lexer(&input);
    lexer.removeErrorListeners();
    lexer.addErrorListener(&listener);
    antlr4::CommonTokenStream tokens(&lexer);
    tokens.fill();
    if (diagnostics.too_many()) return std::nullopt;
    if (!check_nesting(tokens.getTokens(), source, positions, diagnostics)) return std::nullopt;

    // Two stages (ANTLR's usual speed-up): SLL prediction, which is cheaper and succeeds on
    // every valid file of an unambiguous grammar, bailing out at the first error; only a file it
    // rejects is parsed again with full LL prediction and the error listener, so diagnostics are
    // exactly those of a plain LL parse.
    MpolParser parser(&tokens);
    parser.removeErrorListeners();
    auto* simulator = parser.getInterpreter<antlr4::atn::ParserATNSimulator>();
    simulator->setPredictionMode(antlr4::atn::PredictionMode::SLL);
    parser.setErrorHandler(std::make_shared<antlr4::BailErrorStrategy>());
    MpolParser::File_Context* tree = nullptr;
    try {
      tree = parser.file_();
    } catch (const antlr4::ParseCancellationException&) {
      tree = nullptr;
    }
    if (tree == nullptr) {
      tokens.seek(0);
      parser.reset();
      simulator->setPredictionMode(antlr4::atn::PredictionMode::LL);
      parser.setErrorHandler(std::make_shared<antlr4::DefaultErrorStrategy>());
      parser.addErrorListener(&listener);
      tree = parser.file_();
    }
    if (diagnostics.error_count() > errors_before) return std::nullopt;

    AstBuilder builder(source, positions, diagnostics);
    ast::File file = builder.build(tree);
    for (Token* token : tokens.getTokens()) {
      if (token->getChannel() == Token::HIDDEN_CHANNEL) {
        file.comments.push_back(
            {token->getText(), source.span(positions.byte(token->getStartIndex()),
                                           positions.byte(token->getStopIndex() + 1))});
      }
    }
    if (diagnostics.error_count() > errors_before) return std::nullopt;
    return file;
  } catch (const StopParsing&) {
    return std::nullopt;
  }
}

}  // namespace mrpc::dsl
