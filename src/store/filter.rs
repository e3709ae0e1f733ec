//! The `--where` filter language: a hand-written tokenizer and recursive-descent parser into an
//! AST, and its evaluation against a key lookup. Never turned into SQL.
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! expr       := and_expr ("or" and_expr)*
//! and_expr   := unary ("and" unary)*
//! unary      := "not" unary | "(" expr ")" | comparison
//! comparison := operand op operand
//! operand    := key | string | number | "true" | "false"
//! op         := "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
//! key        := name index* ("." name index*)*   name: [A-Za-z_][A-Za-z0-9_]* (after a dot:
//!               [A-Za-z0-9_]+); index: "[" digits "]", read as ".digits" (`dims[0]` = `dims.0`)
//! string     := "..." | '...'         escapes: \" \' \\ \n \t \r
//! number     := -?digits[.digits][(e|E)[+-]digits]  (also .5, 1., -2e-3)
//! ```
//! `not` binds tighter than `and`, which binds tighter than `or`.
//!
//! Evaluation ([`evaluate`]): keys are resolved through a lookup (config keys such as
//! `optimizer.lr`, or metric names such as `val_acc`).
//! - A missing key (lookup `None`, or a JSON `null`) makes its comparison false, whatever the
//!   operator (so `not (k = 1)` is true when `k` is missing).
//! - `=` / `!=`: numbers compare numerically (`1 = 1.0`), other values by JSON equality; values
//!   of different types are unequal.
//! - `<` `<=` `>` `>=`: numbers numerically, strings byte-wise; any other pairing is false.
//!
//! Errors ([`FilterError`]) give the 1-based column (in characters) and what was expected.
//! Nesting (parentheses and `not`) is limited to [`MAX_DEPTH`] levels.

use std::fmt;

use serde_json::Value;

/// Deepest nesting of parentheses and `not` accepted (guards the parser's recursion).
pub const MAX_DEPTH: usize = 64;

/// A malformed filter: where (1-based character column), what was expected, what was found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid filter at column {column}: expected {expected}, found {found}")]
pub struct FilterError {
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl FilterError {
    fn new(column: usize, expected: impl Into<String>, found: impl Into<String>) -> Self {
        FilterError {
            column,
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// The message followed by the input and a caret under the column, for terminals.
    pub fn render(&self, input: &str) -> String {
        format!(
            "{self}\n  {input}\n  {}^",
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A dotted key, resolved by the lookup.
    Key(String),
    Literal(Literal),
}

/// The filter's syntax tree. `And` / `Or` hold two or more terms.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
}

impl Expr {
    /// Every key the filter reads, in order of appearance, without repeats.
    pub fn keys(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_keys(&mut out);
        out
    }

    fn collect_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Or(terms) | Expr::And(terms) => terms.iter().for_each(|t| t.collect_keys(out)),
            Expr::Not(e) => e.collect_keys(out),
            Expr::Compare { left, right, .. } => {
                for o in [left, right] {
                    if let Operand::Key(k) = o {
                        if !out.contains(&k.as_str()) {
                            out.push(k);
                        }
                    }
                }
            }
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Literal::Str(s) => f.write_str(&quote(s)),
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `s` as a double-quoted filter string (escaping what the tokenizer unescapes).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Operand::Key(k) => f.write_str(k),
            Operand::Literal(l) => l.fmt(f),
        }
    }
}

/// A canonical form that parses back to the same tree (fully parenthesised `and` / `or`).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let join = |f: &mut fmt::Formatter, terms: &[Expr], sep: &str| {
            f.write_str("(")?;
            for (i, t) in terms.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                t.fmt(f)?;
            }
            f.write_str(")")
        };
        match self {
            Expr::Or(terms) => join(f, terms, "or"),
            Expr::And(terms) => join(f, terms, "and"),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::Compare { left, op, right } => write!(f, "{left} {} {right}", op.as_str()),
        }
    }
}

// ---------------------------------------------------------------- tokenizer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Key(String),
    Lit(Literal),
    Op(CmpOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
    /// A character that starts no token (reported by the parser, which knows what it expected).
    Unknown(char),
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Key(k) => format!("`{k}`"),
            Tok::Lit(Literal::Str(s)) => format!("string {}", quote(s)),
            Tok::Lit(l) => format!("`{l}`"),
            Tok::Op(op) => format!("`{}`", op.as_str()),
            Tok::And => "`and`".into(),
            Tok::Or => "`or`".into(),
            Tok::Not => "`not`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Unknown(c) => format!("`{c}`"),
            Tok::End => "end of input".into(),
        }
    }
}

const OPERATORS: &str = "an operator (=, !=, <, <=, >, >=)";
const OPERAND: &str = "a key or a value (string, number, true, false)";
const TERM: &str = "a comparison, `not` or `(`";

/// Splits the input into `(token, 1-based column)`, ending with `End`.
fn tokenize(input: &str) -> Result<Vec<(Tok, usize)>, FilterError> {
    let chars: Vec<char> = input.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let starts_number = c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
            || (c == '-'
                && chars
                    .get(i + 1)
                    .is_some_and(|d| d.is_ascii_digit() || *d == '.'));
        if starts_number {
            let (n, next) = number(&chars, i)?;
            toks.push((Tok::Lit(Literal::Num(n)), col));
            i = next;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let (word, next) = key(&chars, i)?;
            let tok = match word.to_ascii_lowercase().as_str() {
                "and" => Tok::And,
                "or" => Tok::Or,
                "not" => Tok::Not,
                "true" => Tok::Lit(Literal::Bool(true)),
                "false" => Tok::Lit(Literal::Bool(false)),
                _ => Tok::Key(word),
            };
            toks.push((tok, col));
            i = next;
        } else if c == '"' || c == '\'' {
            let (s, next) = string(&chars, i)?;
            toks.push((Tok::Lit(Literal::Str(s)), col));
            i = next;
        } else if "=!<>~".contains(c) {
            let start = i;
            while i < chars.len() && "=!<>~".contains(chars[i]) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let op = match text.as_str() {
                "=" | "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                _ => {
                    return Err(FilterError::new(
                        col,
                        OPERATORS,
                        format!("unknown operator `{text}`"),
                    ))
                }
            };
            toks.push((Tok::Op(op), col));
        } else if c == '(' {
            toks.push((Tok::LParen, col));
            i += 1;
        } else if c == ')' {
            toks.push((Tok::RParen, col));
            i += 1;
        } else {
            toks.push((Tok::Unknown(c), col));
            i += 1;
        }
    }
    toks.push((Tok::End, chars.len() + 1));
    Ok(toks)
}

fn number(chars: &[char], start: usize) -> Result<(f64, usize), FilterError> {
    let mut i = start;
    if chars[i] == '-' {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let s = *i;
        while *i < chars.len() && chars[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > s
    };
    let int = digits(&mut i);
    let mut frac = false;
    if i < chars.len() && chars[i] == '.' {
        i += 1;
        frac = digits(&mut i);
    }
    let mut ok = int || frac;
    if ok && i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
        i += 1;
        if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
            i += 1;
        }
        ok = digits(&mut i);
    }
    let trailing = chars
        .get(i)
        .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.');
    let text: String = chars[start..i].iter().collect();
    match text.parse::<f64>() {
        Ok(n) if ok && !trailing && n.is_finite() => Ok((n, i)),
        _ => {
            let mut end = i;
            while end < chars.len() && (chars[end].is_alphanumeric() || "._+-".contains(chars[end]))
            {
                end += 1;
            }
            let bad: String = chars[start..end.max(i)].iter().collect();
            Err(FilterError::new(start + 1, "a number", format!("`{bad}`")))
        }
    }
}

/// A dotted key; list indices may be written `[i]` as `--set` writes them, and read as `.i`
/// (`model.dims[0]` is the key `model.dims.0`).
fn key(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let found_at = |i: usize| {
        chars
            .get(i)
            .map(|c| format!("`{c}`"))
            .unwrap_or_else(|| "end of input".into())
    };
    let mut out = String::new();
    let mut i = start;
    loop {
        let s = i;
        while i < chars.len() && name_char(chars[i]) {
            i += 1;
        }
        if i == s {
            return Err(FilterError::new(i + 1, "a name after `.`", found_at(i)));
        }
        out.extend(&chars[s..i]);
        while i < chars.len() && chars[i] == '[' {
            let d = i + 1;
            i = d;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i == d {
                return Err(FilterError::new(
                    i + 1,
                    "a list index after `[`",
                    found_at(i),
                ));
            }
            if chars.get(i) != Some(&']') {
                return Err(FilterError::new(i + 1, "`]`", found_at(i)));
            }
            out.push('.');
            out.extend(&chars[d..i]);
            i += 1;
        }
        if i < chars.len() && chars[i] == '.' {
            out.push('.');
            i += 1;
        } else {
            return Ok((out, i));
        }
    }
}

fn string(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((out, i + 1)),
            '\\' => {
                let esc = match chars.get(i + 1) {
                    Some('"') => '"',
                    Some('\'') => '\'',
                    Some('\\') => '\\',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some(c) => {
                        return Err(FilterError::new(
                            i + 1,
                            "an escape (\\\" \\' \\\\ \\n \\t \\r)",
                            format!("`\\{c}`"),
                        ))
                    }
                    None => break,
                };
                out.push(esc);
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(FilterError::new(
        start + 1,
        format!("a closing `{quote}` for the string starting here"),
        "end of input",
    ))
}

// ---------------------------------------------------------------- parser

/// Parses a filter expression.
pub fn parse(input: &str) -> Result<Expr, FilterError> {
    let toks = tokenize(input)?;
    let mut p = Parser { toks, pos: 0 };
    let expr = p.or_expr(0)?;
    match p.peek() {
        Tok::End => Ok(expr),
        Tok::RParen => Err(p.error("`and`, `or` or the end (this `)` has no `(`)")),
        _ => Err(p.error("`and`, `or` or the end of the filter")),
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn col(&self) -> usize {
        self.toks[self.pos].1
    }

    fn bump(&mut self) {
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    fn error(&self, expected: &str) -> FilterError {
        FilterError::new(self.col(), expected, self.peek().describe())
    }

    fn or_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let first = self.and_expr(depth)?;
        if *self.peek() != Tok::Or {
            return Ok(first);
        }
        let mut terms = vec![first];
        while *self.peek() == Tok::Or {
            self.bump();
            terms.push(self.and_expr(depth)?);
        }
        Ok(Expr::Or(terms))
    }

    fn and_expr(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let first = self.unary(depth)?;
        if *self.peek() != Tok::And {
            return Ok(first);
        }
        let mut terms = vec![first];
        while *self.peek() == Tok::And {
            self.bump();
            terms.push(self.unary(depth)?);
        }
        Ok(Expr::And(terms))
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(FilterError::new(
                self.col(),
                format!("at most {MAX_DEPTH} levels of `not` and parentheses"),
                "deeper nesting",
            ));
        }
        match self.peek() {
            Tok::Not => {
                self.bump();
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Tok::LParen => {
                let open = self.col();
                self.bump();
                let e = self.or_expr(depth + 1)?;
                match self.peek() {
                    Tok::RParen => {
                        self.bump();
                        Ok(e)
                    }
                    Tok::End => Err(FilterError::new(
                        self.col(),
                        format!("`)` to close the `(` at column {open}"),
                        "end of input",
                    )),
                    _ => Err(self.error("`)`, `and` or `or`")),
                }
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.operand(TERM)?;
        let op = match self.peek() {
            Tok::Op(op) => *op,
            _ => return Err(self.error(OPERATORS)),
        };
        self.bump();
        let right = self.operand(OPERAND)?;
        Ok(Expr::Compare { left, op, right })
    }

    fn operand(&mut self, expected: &str) -> Result<Operand, FilterError> {
        let operand = match self.peek() {
            Tok::Key(k) => Operand::Key(k.clone()),
            Tok::Lit(l) => Operand::Literal(l.clone()),
            _ => return Err(self.error(expected)),
        };
        self.bump();
        Ok(operand)
    }
}

// ---------------------------------------------------------------- evaluation

/// Evaluates a filter; `lookup` resolves keys (see the module docs for the rules).
pub fn evaluate(expr: &Expr, lookup: &dyn Fn(&str) -> Option<Value>) -> bool {
    match expr {
        Expr::Or(terms) => terms.iter().any(|t| evaluate(t, lookup)),
        Expr::And(terms) => terms.iter().all(|t| evaluate(t, lookup)),
        Expr::Not(e) => !evaluate(e, lookup),
        Expr::Compare { left, op, right } => {
            let resolve = |o: &Operand| match o {
                Operand::Key(k) => lookup(k).filter(|v| !v.is_null()),
                Operand::Literal(Literal::Str(s)) => Some(Value::String(s.clone())),
                Operand::Literal(Literal::Num(n)) => {
                    serde_json::Number::from_f64(*n).map(Value::Number)
                }
                Operand::Literal(Literal::Bool(b)) => Some(Value::Bool(*b)),
            };
            match (resolve(left), resolve(right)) {
                (Some(a), Some(b)) => compare(&a, *op, &b),
                _ => false,
            }
        }
    }
}

/// Looks a dotted key up in JSON: first as a flat field (`v["val_acc"]`,
/// `v["optimizer.lr"]`), else path by path (`"model.kind"` -> `v["model"]["kind"]`, a numeric
/// segment indexing an array: `"model.dims.0"`). A helper for building `evaluate`'s lookup
/// from a run's config and metrics.
pub fn json_path<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(flat) = v.get(key) {
        return Some(flat);
    }
    key.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn compare(a: &Value, op: CmpOp, b: &Value) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match op {
        CmpOp::Eq => ord.map_or_else(|| a == b, |o| o == Ordering::Equal),
        CmpOp::Ne => ord.map_or_else(|| a != b, |o| o != Ordering::Equal),
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> Operand {
        Operand::Key(k.into())
    }
    fn num(n: f64) -> Operand {
        Operand::Literal(Literal::Num(n))
    }
    fn s(v: &str) -> Operand {
        Operand::Literal(Literal::Str(v.into()))
    }
    fn cmp(left: Operand, op: CmpOp, right: Operand) -> Expr {
        Expr::Compare { left, op, right }
    }

    /// A run: config keys and metrics as a lookup.
    fn run(v: Value) -> impl Fn(&str) -> Option<Value> {
        move |k: &str| v.get(k).cloned()
    }

    fn eval(filter: &str, v: Value) -> bool {
        let e = parse(filter).unwrap_or_else(|e| panic!("{}", e.render(filter)));
        evaluate(&e, &run(v))
    }

    fn err(filter: &str) -> FilterError {
        parse(filter).expect_err(filter)
    }

    #[test]
    fn parses_the_examples() {
        assert_eq!(
            parse(r#"model.kind = "convnext" and optimizer.lr < 0.1"#).unwrap(),
            Expr::And(vec![
                cmp(key("model.kind"), CmpOp::Eq, s("convnext")),
                cmp(key("optimizer.lr"), CmpOp::Lt, num(0.1)),
            ])
        );
        assert_eq!(
            parse("val_acc >= 0.5 or not (train.seed = 1)").unwrap(),
            Expr::Or(vec![
                cmp(key("val_acc"), CmpOp::Ge, num(0.5)),
                Expr::Not(Box::new(cmp(key("train.seed"), CmpOp::Eq, num(1.0)))),
            ])
        );
        assert_eq!(
            parse(r#"model.preset != "tiny""#).unwrap(),
            cmp(key("model.preset"), CmpOp::Ne, s("tiny"))
        );
    }

    #[test]
    fn operators_literals_and_keywords() {
        for (text, op) in [
            ("=", CmpOp::Eq),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
        ] {
            assert_eq!(
                parse(&format!("a{text}1")).unwrap(),
                cmp(key("a"), op, num(1.0))
            );
        }
        assert_eq!(
            parse("x = true AND y = FALSE").unwrap(),
            Expr::And(vec![
                cmp(key("x"), CmpOp::Eq, Operand::Literal(Literal::Bool(true))),
                cmp(key("y"), CmpOp::Eq, Operand::Literal(Literal::Bool(false))),
            ])
        );
        for (text, n) in [
            ("-2", -2.0),
            ("1e-3", 1e-3),
            ("2.5E+2", 250.0),
            (".5", 0.5),
            ("1.", 1.0),
            ("-.25", -0.25),
        ] {
            assert_eq!(
                parse(&format!("a = {text}")).unwrap(),
                cmp(key("a"), CmpOp::Eq, num(n))
            );
        }
        assert_eq!(
            parse(r#"a = 'it''s'"#).unwrap_err().column,
            9,
            "two adjacent strings are not a comparison"
        );
        assert_eq!(
            parse(r#"a = "say \"hi\"\n" "#).unwrap(),
            cmp(key("a"), CmpOp::Eq, s("say \"hi\"\n"))
        );
        assert_eq!(
            parse("'single' = a").unwrap(),
            cmp(s("single"), CmpOp::Eq, key("a"))
        );
        assert_eq!(
            parse("0.1 > optimizer.lr").unwrap(),
            cmp(num(0.1), CmpOp::Gt, key("optimizer.lr"))
        );
        assert_eq!(
            parse("model.dims.0 = 96").unwrap(),
            cmp(key("model.dims.0"), CmpOp::Eq, num(96.0))
        );
    }

    #[test]
    fn precedence_not_and_or() {
        // not > and > or.
        assert_eq!(
            parse("a=1 or b=2 and not c=3").unwrap(),
            Expr::Or(vec![
                cmp(key("a"), CmpOp::Eq, num(1.0)),
                Expr::And(vec![
                    cmp(key("b"), CmpOp::Eq, num(2.0)),
                    Expr::Not(Box::new(cmp(key("c"), CmpOp::Eq, num(3.0)))),
                ]),
            ])
        );
        assert_eq!(
            parse("(a=1 or b=2) and c=3").unwrap(),
            Expr::And(vec![
                Expr::Or(vec![
                    cmp(key("a"), CmpOp::Eq, num(1.0)),
                    cmp(key("b"), CmpOp::Eq, num(2.0)),
                ]),
                cmp(key("c"), CmpOp::Eq, num(3.0)),
            ])
        );
        assert_eq!(
            parse("not not ((a = 1))").unwrap(),
            Expr::Not(Box::new(Expr::Not(Box::new(cmp(
                key("a"),
                CmpOp::Eq,
                num(1.0)
            )))))
        );
        // Long chains stay flat.
        let long = vec!["a = 1"; 500].join(" and ");
        match parse(&long).unwrap() {
            Expr::And(terms) => assert_eq!(terms.len(), 500),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn display_round_trips() {
        for f in [
            r#"model.kind = "convnext" and optimizer.lr < 0.1"#,
            "val_acc >= 0.5 or not (train.seed = 1)",
            r#"(a = "q\"uote" or b != true) and not c <= -0.001"#,
            r#"a = 'tab\there\\ \r\n \"' and b = 'é' and c = "raw	tab""#,
        ] {
            let e = parse(f).unwrap();
            assert_eq!(parse(&e.to_string()).unwrap(), e, "{e}");
        }
    }

    #[test]
    fn keys_lists_each_key_once() {
        let e = parse("a.b = 1 and (c > 2 or a.b < 5) and 3 = d").unwrap();
        assert_eq!(e.keys(), ["a.b", "c", "d"]);
    }

    #[test]
    fn evaluates_against_a_run() {
        let r = json!({
            "model.kind": "convnext", "model.preset": "tiny", "optimizer.lr": 0.05,
            "train.seed": 1, "val_acc": 0.42, "verification.tta": false,
            "model.layer_scale": 1e-6,
        });
        assert!(eval(
            r#"model.kind = "convnext" and optimizer.lr < 0.1"#,
            r.clone()
        ));
        assert!(!eval(
            r#"model.kind = "resnet" and optimizer.lr < 0.1"#,
            r.clone()
        ));
        assert!(!eval("val_acc >= 0.5 or not (train.seed = 1)", r.clone()));
        assert!(eval("val_acc >= 0.4 or not (train.seed = 1)", r.clone()));
        assert!(!eval(r#"model.preset != "tiny""#, r.clone()));
        assert!(eval(r#"model.preset != "nano""#, r.clone()));
        // Integers and floats compare numerically.
        assert!(eval("train.seed = 1.0", r.clone()));
        assert!(eval("train.seed <= 1 and train.seed >= 1", r.clone()));
        assert!(eval("verification.tta = false", r.clone()));
        assert!(eval("verification.tta != true", r.clone()));
        // Strings order byte-wise.
        assert!(eval(r#"model.kind < "resnet""#, r.clone()));
        assert!(eval(r#"model.kind >= "convnext""#, r.clone()));
        // Mixed types: unequal, and unordered.
        assert!(eval("model.layer_scale != false", r.clone()));
        assert!(!eval("model.layer_scale = false", r.clone()));
        assert!(!eval(r#"train.seed < "2""#, r.clone()));
        assert!(!eval("verification.tta < true", r.clone()));
        // Literals on both sides.
        assert!(eval("1 < 2", r.clone()));
        assert!(eval("optimizer.lr = optimizer.lr", r.clone()));
    }

    #[test]
    fn missing_keys_compare_false() {
        let r = json!({"a": 1, "n": null});
        for f in [
            "b = 1", "b != 1", "b < 1", "b >= 1", "n = 1", "n != 1", "b = b",
        ] {
            assert!(!eval(f, r.clone()), "{f}");
        }
        assert!(eval("not (b = 1)", r.clone()));
        assert!(eval("b = 1 or a = 1", r.clone()));
        assert!(!eval("b = 1 and a = 1", r));
    }

    #[test]
    fn sql_looking_input_is_an_error() {
        let e = err("1; DROP TABLE runs");
        assert_eq!(e.column, 2);
        assert_eq!(e.expected, OPERATORS);
        assert_eq!(e.found, "`;`");
        let e = err("model.kind = 'x'; DROP TABLE runs --");
        assert_eq!((e.column, e.found.as_str()), (17, "`;`"));
        let e = err("a = 1 OR 1=1 --");
        assert_eq!(e.column, 14);
        assert!(
            e.found.contains("unknown operator `--`") || e.found == "`-`",
            "{e}"
        );
        let e = err("a = 1 UNION SELECT * FROM runs");
        assert_eq!((e.column, e.found.as_str()), (7, "`UNION`"));
    }

    #[test]
    fn malformed_input_errors_name_column_and_expectation() {
        // Unbalanced parentheses.
        let e = err("(a = 1");
        assert_eq!((e.column, e.found.as_str()), (7, "end of input"));
        assert!(e.expected.contains("column 1"), "{e}");
        let e = err("a = 1)");
        assert_eq!((e.column, e.found.as_str()), (6, "`)`"));
        let e = err("((a = 1) or b = 2");
        assert_eq!(e.column, 18);
        // A missing right-hand side.
        let e = err("optimizer.lr <");
        assert_eq!((e.column, e.expected.as_str()), (15, OPERAND));
        assert_eq!(e.found, "end of input");
        // Unknown operators.
        for (f, col, op) in [
            ("a <> 1", 3, "<>"),
            ("a =~ 1", 3, "=~"),
            ("a === 1", 3, "==="),
        ] {
            let e = err(f);
            assert_eq!(e.column, col, "{f}");
            assert_eq!(e.found, format!("unknown operator `{op}`"));
            assert_eq!(e.expected, OPERATORS);
        }
        let e = err("!(a = 1)");
        assert_eq!((e.column, e.found.as_str()), (1, "unknown operator `!`"));
        // Unterminated strings point at the opening quote.
        let e = err(r#"model.kind = "convnext"#);
        assert_eq!((e.column, e.found.as_str()), (14, "end of input"));
        assert!(e.expected.contains("closing"));
        let e = err(r#"a = "x\"#);
        assert_eq!(e.column, 5);
        let e = err(r#"a = "\q""#);
        assert_eq!((e.column, e.found.as_str()), (6, "`\\q`"));
        // Empty input, dangling keywords, missing operands or operators.
        let e = err("");
        assert_eq!(
            (e.column, e.expected.as_str(), e.found.as_str()),
            (1, TERM, "end of input")
        );
        let e = err("   ");
        assert_eq!(e.column, 4);
        let e = err("a = 1 and");
        assert_eq!((e.column, e.found.as_str()), (10, "end of input"));
        let e = err("a = 1 or or b = 2");
        assert_eq!((e.column, e.found.as_str()), (10, "`or`"));
        let e = err("not");
        assert_eq!(e.column, 4);
        let e = err("a");
        assert_eq!((e.column, e.expected.as_str()), (2, OPERATORS));
        let e = err("a b");
        assert_eq!((e.column, e.found.as_str()), (3, "`b`"));
        let e = err("a = = 1");
        assert_eq!((e.column, e.found.as_str()), (5, "`=`"));
        let e = err("= 1");
        assert_eq!((e.column, e.expected.as_str()), (1, TERM));
        let e = err("()");
        assert_eq!((e.column, e.found.as_str()), (2, "`)`"));
        let e = err("a = 1 b = 2");
        assert_eq!((e.column, e.found.as_str()), (7, "`b`"));
        // Bad keys and numbers.
        let e = err("model. = 1");
        assert_eq!((e.column, e.expected.as_str()), (7, "a name after `.`"));
        let e = err("model.kind. = 1");
        assert_eq!(e.column, 12);
        let e = err("model.dims[] = 1");
        assert_eq!(
            (e.column, e.expected.as_str()),
            (12, "a list index after `[`")
        );
        let e = err("model.dims[0 = 1");
        assert_eq!((e.column, e.expected.as_str()), (13, "`]`"));
        // `[i]` reads as `.i`.
        assert_eq!(
            parse("model.dims[1] = 8").unwrap(),
            parse("model.dims.1 = 8").unwrap()
        );
        let e = err("a = 1.2.3");
        assert_eq!((e.column, e.found.as_str()), (5, "`1.2.3`"));
        let e = err("a = 12abc");
        assert_eq!((e.column, e.found.as_str()), (5, "`12abc`"));
        let e = err("a = 1e");
        assert_eq!((e.column, e.expected.as_str()), (5, "a number"));
        let e = err("a = 1e999");
        assert_eq!(e.column, 5);
        let e = err("a = -");
        assert_eq!((e.column, e.found.as_str()), (5, "`-`"));
        // Columns count characters, not bytes.
        let e = err("é = 1 ;");
        assert_eq!((e.column, e.found.as_str()), (1, "`é`"));
        let e = err("a = \"é\" ;");
        assert_eq!(e.column, 9);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(
            "{}a = 1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(err(&deep).expected.contains("levels"));
        let ok = format!(
            "{}a = 1{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&ok).is_ok());
        let nots = format!("{}a = 1", "not ".repeat(100_000));
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn json_path_resolves_flat_then_nested_keys() {
        let cfg = json!({
            "model": {"kind": "convnext", "dims": [96, 192]},
            "optimizer.lr": 0.1,
            "val_acc": 0.5,
        });
        assert_eq!(json_path(&cfg, "model.kind"), Some(&json!("convnext")));
        assert_eq!(json_path(&cfg, "model.dims.1"), Some(&json!(192)));
        assert_eq!(json_path(&cfg, "optimizer.lr"), Some(&json!(0.1)));
        assert_eq!(json_path(&cfg, "val_acc"), Some(&json!(0.5)));
        assert_eq!(json_path(&cfg, "model.dims.7"), None);
        assert_eq!(json_path(&cfg, "model.kind.x"), None);
        assert_eq!(json_path(&cfg, "nope"), None);
        let e =
            parse(r#"model.kind = "convnext" and model.dims.0 < 100 and val_acc >= 0.5"#).unwrap();
        assert!(evaluate(&e, &|k| json_path(&cfg, k).cloned()));
    }

    #[test]
    fn render_points_at_the_column() {
        let f = "a <> 1";
        let r = err(f).render(f);
        assert!(r.ends_with("\n  a <> 1\n    ^"), "{r}");
        assert!(r.starts_with("invalid filter at column 3: expected an operator"));
    }
}
