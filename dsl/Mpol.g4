// The .mpol policy language (docs/mpol-design.md). Generated at build time by Debian's antlr4
// 4.7.2 (-Dlanguage=Cpp -visitor -no-listener); the code builds against the 4.9 runtime.
// Words that only mean something in one place (to, at, caller, callee, request, capacity, evict,
// encoding, peer, redact, proto, ...) are plain identifiers here and checked by the AST builder,
// so they stay usable as field and variable names.
grammar Mpol;

file_ : item* EOF ;

item
  : 'import' kind=IDENT? STRING ';'                                  # importItem
  | 'const' IDENT (':' type)? '=' expr ';'                           # constItem
  | 'policy' IDENT '{' policyMember* '}'                             # policyItem
  | 'marshal' pattern '{' marshalMember* '}'                         # marshalItem
  ;

policyMember
  : 'applies' to=IDENT pattern (',' pattern)* at=IDENT placement=IDENT ';'   # appliesMember
  | 'param' IDENT ':' type '=' expr ';'                                      # paramMember
  | 'state' IDENT ':' type ('[' stateArg (',' stateArg)* ','? ']')? ('=' expr)? ';'   # stateMember
  | 'call' IDENT ':' type ('=' expr)? ';'                                      # callMember
  | 'schedule' IDENT ('[' expr (',' expr)* ','? ']')? ';'                    # scheduleMember
  | 'on' IDENT (',' IDENT)* block                                            # handlerMember
  ;

stateArg : key=IDENT? expr ;

marshalMember
  : IDENT IDENT ';'                       # encodingRule
  | IDENT STRING IDENT IDENT ';'          # peerRule
  | IDENT expr ';'                        # redactRule
  ;

pattern
  : '*'
  | IDENT ('.' IDENT)* ('.' '*')?
  ;

type : IDENT ('<' type (',' type)* '>')? ;

block : '{' statement* '}' ;

statement
  : mut=('let' | 'var') IDENT (':' type)? '=' expr ';'                       # letStmt
  | expr op=('=' | '+=' | '-=') expr ';'                                     # assignStmt
  | 'remove' expr ';'                                                        # removeStmt
  | 'clear' expr ';'                                                         # clearStmt
  | 'if' expr block ('else' 'if' expr block)* ('else' block)?                # ifStmt
  | 'for' IDENT 'in' expr ('..' expr)? block                                 # forStmt
  | 'pass' ';'                                                               # passStmt
  | 'drop' ';'                                                               # dropStmt
  | 'break' ';'                                                              # breakStmt
  | expr ';'                                                                 # exprStmt
  ;

expr
  : primary                                              # primaryExpr
  | expr '.' name                                        # memberExpr
  | expr '[' expr ']'                                    # indexExpr
  | expr '(' (arg (',' arg)* ','?)? ')'                  # callExpr
  | op=('!' | '-') expr                                  # unaryExpr
  | expr op=('*' | '/' | '%') expr                       # binaryExpr
  | expr op=('+' | '-') expr                             # binaryExpr
  | expr (op=('<' | '<=' | '>' | '>=' | 'in') | negated='not' op='in') expr   # binaryExpr
  | expr op=('==' | '!=') expr                           # binaryExpr
  | expr op='&&' expr                                    # binaryExpr
  | expr op='||' expr                                    # binaryExpr
  ;

arg : (IDENT '=')? expr ;

primary
  : INT                                                  # intLit
  | FLOAT                                                # floatLit
  | DURATION                                             # durationLit
  | STRING                                               # stringLit
  | ('true' | 'false')                                   # boolLit
  | IDENT                                                # nameRef
  | '(' expr ')'                                         # parenExpr
  | '[' (expr (',' expr)* ','?)? ']'                     # listLit
  | '{' expr (',' expr)* ','? '}'                        # setLit
  | '{' mapEntry (',' mapEntry)* ','? '}'                # mapLit
  | '{' '}'                                              # emptyBraces
  ;

mapEntry : expr ':' expr ;

// A member name may be a keyword: protobuf fields are often called `state` or `for`.
name
  : IDENT | 'import' | 'const' | 'policy' | 'marshal' | 'applies' | 'param' | 'state'
  | 'schedule' | 'call' | 'on' | 'let' | 'var' | 'remove' | 'clear' | 'if' | 'else' | 'for' | 'in'
  | 'pass' | 'drop' | 'break' | 'true' | 'false' | 'not'
  ;

DURATION : DIGITS ('ns' | 'us' | 'ms' | 's' | 'm' | 'h') ;
FLOAT : DIGITS '.' DIGITS ([eE] [+-]? DIGITS)? | DIGITS [eE] [+-]? DIGITS ;
INT : DIGITS ;
STRING : '"' (ESCAPE | ~["\\\r\n])* '"' ;
IDENT : [a-zA-Z_] [a-zA-Z0-9_]* ;

LINE_COMMENT : '//' ~[\r\n]* -> channel(HIDDEN) ;
BLOCK_COMMENT : '/*' .*? '*/' -> channel(HIDDEN) ;
WS : [ \t\r\n]+ -> skip ;

fragment DIGITS : [0-9]+ ;
fragment ESCAPE : '\\' . ;
