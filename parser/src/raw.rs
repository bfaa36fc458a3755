//! Logical lines to untyped nodes (keyword, flags, arguments, heredocs), and BuildKit's AST dump.
//!
//! How each instruction's arguments are split follows BuildKit's `line_parsers.go`, so that
//! [`dump`] reproduces BuildKit's `result` files byte for byte. Nothing here validates flags or
//! argument counts beyond what BuildKit's parser itself rejects; that is the job of the typed
//! layer above this one (`instruction.rs`).

use std::collections::BTreeMap;

use serde::Serialize;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

use crate::directive::Directives;
use crate::error::{ErrorKind, ParseError, Warning};
use crate::expand::Lexer as WordLexer;
use crate::lexer::{Lexer, LogicalLine, pos_in};
use crate::span::{Pos, Span};

/// How deep ONBUILD triggers may nest (`ONBUILD ONBUILD RUN x` nests two). BuildKit's parser has
/// no limit (its dispatcher, like `instruction.rs` here, rejects any ONBUILD trigger), but every
/// level recurses here, so a long enough line of ONBUILDs would overflow the stack.
const MAX_ONBUILD_NESTING: usize = 16;

/// A heredoc attached to an instruction (`RUN <<EOF`, `COPY <<EOF /dst`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word with quotes removed.
    pub name: String,
    /// The body, one line per source line, each with its newline; with `<<-` the leading tabs
    /// of every line are already removed.
    pub content: String,
    /// False when any part of the delimiter was quoted: the body is then taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs stripped from the body and the terminator.
    pub chomp: bool,
    /// The file descriptor the heredoc feeds (`3<<EOF`); 0 (stdin) by default.
    pub fd: u32,
    /// From the first body line to the terminator line.
    pub span: Span,
}

/// A flag as written before the arguments (`--mount=type=cache,target=/x`), quotes removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawFlag {
    pub text: String,
    pub span: Span,
}

/// One instruction as BuildKit's parser sees it, before typing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The instruction keyword as written (`from`, `RUN`, ...).
    pub keyword: String,
    pub flags: Vec<RawFlag>,
    /// The argument nodes (BuildKit's `Next` chain): for ENV and LABEL, key/value/separator
    /// triples; for JSON forms, the decoded strings.
    pub args: Vec<String>,
    /// The arguments were written as a JSON array.
    pub json: bool,
    /// ONBUILD's trigger instruction.
    pub sub: Option<Box<Node>>,
    pub heredocs: Vec<Heredoc>,
    /// The logical line with continuations joined.
    pub original: String,
    /// From the keyword to the end of the last line (heredoc terminators included).
    pub span: Span,
    /// Where the arguments (after any flags) start and end.
    pub args_span: Span,
    /// The comment lines right before the instruction (BuildKit's `PrevComment`), read by
    /// the linter: `# check=` for this instruction only, and definition descriptions.
    #[serde(skip)]
    pub comments: Vec<String>,
}

/// The untyped parse of a whole Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ast {
    pub directives: Directives,
    pub nodes: Vec<Node>,
    pub warnings: Vec<Warning>,
}

impl Node {
    /// The keyword, lowercased, as instructions are matched.
    pub fn command(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&*self.command(), &self.sub) {
            ("onbuild", Some(sub)) => sub,
            _ => self,
        };
        matches!(&*node.command(), "run" | "copy" | "add") && !node.json
    }
}

/// Parses Dockerfile text into untyped nodes. Errors are located but not yet named with a file.
pub(crate) fn parse_nodes(src: &str) -> Result<Ast, ParseError> {
    let mut lexer = Lexer::new(src);
    let mut nodes = Vec::new();
    while let Some(line) = lexer.next_logical()? {
        let escape = lexer.directives.escape;
        let view = LineView {
            line: &line,
            escape,
        };
        let mut node = view.node(0, line.text.len(), 0)?;
        if node.can_contain_heredoc() && line.text.contains("<<") {
            for Opener {
                name,
                expand,
                chomp,
                fd,
            } in heredocs_in(&line.text)?
            {
                let body_start = Pos::new(lexer.current_line() + 1, 1);
                let (body, end) = lexer.heredoc_body(&name, chomp, node.span)?;
                let content = if chomp {
                    strip_leading_tabs(&body)
                } else {
                    body
                };
                node.span.end = end;
                node.heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                    chomp,
                    fd,
                    span: Span::new(body_start, end),
                });
            }
            if let Some(sub) = node.sub.as_mut() {
                sub.heredocs = node.heredocs.clone();
            }
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        let p = Pos::new(lexer.current_line().max(1), 1);
        return Err(ParseError::new(ErrorKind::NoInstructions, Span::point(p)));
    }
    Ok(Ast {
        directives: lexer.directives,
        nodes,
        warnings: lexer.warnings,
    })
}

fn strip_leading_tabs(body: &str) -> String {
    body.split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

/// What a `<<WORD` opener says about the heredoc that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opener {
    pub name: String,
    pub expand: bool,
    pub chomp: bool,
    pub fd: u32,
}

/// The heredocs a line opens, in order.
fn heredocs_in(line: &str) -> Result<Vec<Opener>, ParseError> {
    // BuildKit splits the line with quotes and escapes kept, and ignores lexing errors here.
    let words = WordLexer::new('\\')
        .raw_quotes(true)
        .raw_escapes(true)
        .process_words(line, &BTreeMap::new())
        .unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc_word(&word) {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Whether `word` alone is a heredoc opener (`<<EOF`, `<<-'EOF'`, `3<<X`): a RUN whose whole
/// command is one opener runs the heredoc's body as its script.
pub fn is_heredoc_word(word: &str) -> bool {
    !word.contains(char::is_whitespace) && parse_heredoc_word(word).is_some()
}

/// `[fd]<<[-]WORD`: a heredoc opener, or `None` when the word is not one.
pub(crate) fn parse_heredoc_word(word: &str) -> Option<Opener> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let rest = word[digits..].strip_prefix("<<")?;
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if rest.is_empty() || rest.contains('<') {
        return None;
    }
    let fd = if digits == 0 {
        0
    } else {
        word[..digits].parse().ok()?
    };
    let env = BTreeMap::new();
    let lexer = WordLexer::new('\\').skip_unset_env(true);
    let words = lexer.process_words(rest, &env).ok()?;
    let [name] = words.as_slice() else {
        return None;
    };
    let raw = lexer.raw_quotes(true).process_words(rest, &env).ok()?;
    let quotes = |s: &str| s.chars().filter(|c| matches!(c, '\'' | '"')).count();
    // Quote removal only changes the count when part of the delimiter was quoted.
    let expand = raw.len() == 1 && quotes(name) == quotes(&raw[0]);
    Some(Opener {
        name: name.clone(),
        expand,
        chomp,
        fd,
    })
}

/// A logical line being cut into a node, with what is needed to locate its parts.
struct LineView<'a> {
    line: &'a LogicalLine,
    escape: char,
}

fn is_split_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

impl LineView<'_> {
    fn pos(&self, offset: usize) -> Pos {
        pos_in(&self.line.text, &self.line.segments, offset)
    }

    /// The position of the last character before byte `end`.
    fn last_pos(&self, start: usize, end: usize) -> Pos {
        let text = &self.line.text[start..end];
        match text.char_indices().last() {
            Some((i, _)) => self.pos(start + i),
            None => self.pos(start),
        }
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.pos(start), self.last_pos(start, end))
    }

    /// Builds the node for `text[start..end]` (the whole line, or ONBUILD's trigger `depth`
    /// levels down).
    fn node(&self, start: usize, end: usize, depth: usize) -> Result<Node, ParseError> {
        let full = &self.line.text[start..end];
        let trimmed = full.trim();
        let start = start + (full.len() - full.trim_start().len());
        let end = start + trimmed.len();
        let kw_len = trimmed.find(is_split_space).unwrap_or(trimmed.len());
        let keyword = &trimmed[..kw_len];
        let after_kw = trimmed[kw_len..].trim_start_matches(is_split_space);
        let after_off = end - after_kw.len();
        let (flags, rest_off) = if kw_len < trimmed.len() {
            self.flags(after_off, end)
        } else {
            (Vec::new(), end)
        };
        let rest_full = &self.line.text[rest_off..end];
        let rest = rest_full.trim();
        let rest_start = rest_off + (rest_full.len() - rest_full.trim_start().len());
        let rest_end = rest_start + rest.len();
        let mut node = Node {
            keyword: keyword.to_owned(),
            flags,
            args: Vec::new(),
            json: false,
            sub: None,
            heredocs: Vec::new(),
            original: trimmed.to_owned(),
            span: Span::new(self.pos(start), self.line.end),
            args_span: Span::new(self.pos(rest_start), self.line.end),
            comments: if depth == 0 {
                self.line.comments.clone()
            } else {
                Vec::new()
            },
        };
        if start == 0 {
            node.span = Span::new(self.line.start, self.line.end);
        } else {
            node.span.end = self.last_pos(start, end);
        }
        let args_span = node.args_span;
        let fail = |kind| ParseError::new(kind, args_span);
        match &*keyword.to_ascii_lowercase() {
            "add" | "copy" | "volume" => match parse_json(rest) {
                Json::Strings(v) => (node.args, node.json) = (v, true),
                Json::NotStrings => return Err(fail(ErrorKind::NotStringArray)),
                Json::Malformed => node.args = split_whitespace(rest),
            },
            "cmd" | "entrypoint" | "run" | "shell" => {
                if !rest.is_empty() {
                    match parse_json(rest) {
                        Json::Strings(v) => (node.args, node.json) = (v, true),
                        Json::NotStrings => return Err(fail(ErrorKind::NotStringArray)),
                        Json::Malformed => node.args = vec![rest.to_owned()],
                    }
                }
            }
            "expose" | "from" => node.args = split_whitespace(rest),
            "env" | "label" => {
                node.args = self
                    .name_values(rest, &keyword.to_ascii_uppercase())
                    .map_err(fail)?
            }
            "arg" => node.args = parse_words(rest, self.escape),
            "healthcheck" => {
                let (typ, cmd) = rest
                    .split_once(|c: char| c.is_whitespace())
                    .map_or((rest, ""), |(t, c)| (t, c.trim_start()));
                if !typ.is_empty() {
                    node.args.push(typ.to_owned());
                    if !cmd.is_empty() {
                        match parse_json(cmd) {
                            Json::Strings(v) => {
                                node.args.extend(v);
                                node.json = true;
                            }
                            Json::NotStrings => return Err(fail(ErrorKind::NotStringArray)),
                            Json::Malformed => node.args.push(cmd.to_owned()),
                        }
                    }
                }
            }
            "maintainer" | "stopsignal" | "user" | "workdir" => {
                if !rest.is_empty() {
                    node.args.push(rest.to_owned());
                }
            }
            "onbuild" => {
                if !rest.is_empty() {
                    if depth == MAX_ONBUILD_NESTING {
                        let kind = ErrorKind::OnbuildNotAllowed(keyword.to_ascii_uppercase());
                        return Err(ParseError::new(kind, node.span));
                    }
                    node.sub = Some(Box::new(self.node(rest_start, rest_end, depth + 1)?));
                }
            }
            // Unknown keywords parse (BuildKit prints them as `(foo "")`); the typed layer
            // rejects them with a suggestion.
            _ => node.args.push(String::new()),
        }
        Ok(node)
    }

    /// Leading `--flag` words, BuildKit style: quotes removed, `\` escapes applied, a bare
    /// `--` ends the flags. Returns the flags and the offset where the arguments start.
    fn flags(&self, start: usize, end: usize) -> (Vec<RawFlag>, usize) {
        let text = &self.line.text[start..end];
        let mut flags = Vec::new();
        let mut chars = text.char_indices().peekable();
        loop {
            while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
            let Some(&(word_start, _)) = chars.peek() else {
                return (flags, end);
            };
            if !text[word_start..].starts_with("--") {
                return (flags, start + word_start);
            }
            let mut word = String::new();
            let mut quote: Option<char> = None;
            let mut blank_ok = false;
            let mut word_end = text.len();
            while let Some((i, c)) = chars.next() {
                match quote {
                    None if c.is_whitespace() => {
                        word_end = i;
                        break;
                    }
                    None if c == '\'' || c == '"' => {
                        quote = Some(c);
                        blank_ok = true;
                    }
                    Some(q) if c == q => quote = None,
                    _ if c == '\\' => match chars.next() {
                        Some((_, n)) => word.push(n),
                        None => quote = None,
                    },
                    _ => word.push(c),
                }
            }
            if word == "--" {
                return (flags, start + word_end);
            }
            if blank_ok || !word.is_empty() {
                flags.push(RawFlag {
                    text: word,
                    span: self.span(start + word_start, start + word_end),
                });
            }
        }
    }

    /// ENV and LABEL: `key value` (legacy) or `k=v k2="v 2"`, as key/value/separator triples.
    fn name_values(&self, rest: &str, keyword: &str) -> Result<Vec<String>, ErrorKind> {
        let words = parse_words(rest, self.escape);
        let Some(first) = words.first() else {
            return Ok(Vec::new());
        };
        if !first.contains('=') {
            let Some((name, value)) = rest.split_once(is_split_space) else {
                return Err(ErrorKind::KeyValueMissingValue {
                    instruction: keyword.to_owned(),
                });
            };
            let value = value.trim_start_matches(is_split_space);
            return Ok(vec![name.to_owned(), value.to_owned(), String::new()]);
        }
        let mut out = Vec::with_capacity(words.len() * 3);
        for word in words {
            let Some((k, v)) = word.split_once('=') else {
                return Err(ErrorKind::MissingEquals { word });
            };
            out.extend([k.to_owned(), v.to_owned(), "=".to_owned()]);
        }
        Ok(out)
    }
}

fn split_whitespace(rest: &str) -> Vec<String> {
    rest.split(is_split_space)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

enum Json {
    Strings(Vec<String>),
    NotStrings,
    Malformed,
}

/// The JSON (exec) form: a JSON array of strings. Malformed JSON is not an error (the text is
/// then taken in shell form), but well-formed JSON with a non-string element is.
fn parse_json(rest: &str) -> Json {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Json::Malformed;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return Json::NotStrings,
                }
            }
            Json::Strings(out)
        }
        Err(_) => Json::Malformed,
    }
}

/// Quote-aware words as written (quotes and escapes kept), for ARG, ENV and LABEL.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None => {
                if c.is_whitespace() {
                    if in_word && (blank_ok || !word.is_empty()) {
                        words.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    in_word = false;
                    blank_ok = false;
                    continue;
                }
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    blank_ok = true;
                }
                if c == escape {
                    // An escape token at the very end is dropped; otherwise it is kept with
                    // the character it escapes, even a quote.
                    if let Some(n) = chars.next() {
                        word.push(c);
                        word.push(n);
                    }
                    continue;
                }
                word.push(c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                }
                if c == escape && q != '\'' {
                    match chars.next() {
                        Some(n) => {
                            word.push(c);
                            word.push(n);
                        }
                        None => quote = None,
                    }
                    continue;
                }
                word.push(c);
            }
        }
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// BuildKit's AST dump (`Node.Dump`): one `(keyword [flags] "arg"...)` line per instruction.
pub fn dump(ast: &Ast) -> String {
    ast.nodes
        .iter()
        .map(dump_node)
        .collect::<Vec<_>>()
        .join("\n")
}

fn dump_node(node: &Node) -> String {
    let mut out = format!("({}", node.keyword.to_lowercase());
    if !node.flags.is_empty() {
        let flags: Vec<String> = node.flags.iter().map(|f| go_quote(&f.text)).collect();
        out.push_str(&format!(" [{}]", flags.join(" ")));
    }
    if let Some(sub) = &node.sub {
        out.push(' ');
        out.push_str(&dump_node(sub));
    }
    for arg in &node.args {
        out.push(' ');
        out.push_str(&go_quote(arg));
    }
    out.push(')');
    out
}

/// Go's `strconv.Quote`: printable characters as themselves, others escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if go_printable(c) => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn go_printable(c: char) -> bool {
    c == ' '
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter
                | GeneralCategoryGroup::Mark
                | GeneralCategoryGroup::Number
                | GeneralCategoryGroup::Punctuation
                | GeneralCategoryGroup::Symbol
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_of(src: &str) -> String {
        dump(&parse_nodes(src).unwrap())
    }

    #[test]
    fn go_quoting() {
        let cases: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\u{7}\u{8}\u{c}\n\r\t\u{b}", r#""\a\b\f\n\r\t\v""#),
            ("\0\u{1b}\u{7f}", r#""\x00\x1b\x7f""#),
            ("♥☃ü", "\"♥☃ü\""),
            ("\u{a0}\u{200b}", r#""\u00a0\u200b""#),
            ("\u{e0001}", r#""\U000e0001""#),
        ];
        for &(input, want) in cases {
            assert_eq!(go_quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn json_form_is_the_whole_rest_of_the_line() {
        // BuildKit's parseMaybeJSON hands the whole rest to json.Unmarshal: trailing text (a
        // "comment" is not one mid-line) makes it shell form; trailing blanks do not.
        let cases: &[(&str, &str)] = &[
            (
                "ENTRYPOINT [\"x\"] # comment",
                r#"(entrypoint "[\"x\"] # comment")"#,
            ),
            ("ENTRYPOINT [\"x\"]   ", r#"(entrypoint "x")"#),
            ("CMD [\"a\", \"b\"]\t", r#"(cmd "a" "b")"#),
            ("CMD [\"a\"] extra", r#"(cmd "[\"a\"] extra")"#),
        ];
        for &(src, want) in cases {
            assert_eq!(dump_of(src).trim_end(), want, "{src:?}");
        }
    }

    #[test]
    fn dumps() {
        let cases: &[(&str, &str)] = &[
            ("FROM a AS b", r#"(from "a" "AS" "b")"#),
            ("COPY -- foo /tmp/", r#"(copy "foo" "/tmp/")"#),
            (
                "COPY --user=me --doit=true foo /tmp/",
                r#"(copy ["--user=me" "--doit=true"] "foo" "/tmp/")"#,
            ),
            (
                r#"RUN --mount=type=cache,target="/x y" make"#,
                r#"(run ["--mount=type=cache,target=/x y"] "make")"#,
            ),
            ("CMD []", "(cmd)"),
            (r#"CMD ["a","b"]"#, r#"(cmd "a" "b")"#),
            ("ONBUILD RUN echo test", r#"(onbuild (run "echo test"))"#),
            ("ONBUILD", "(onbuild)"),
            ("FOO bar", r#"(foo "")"#),
            ("HEALTHCHECK NONE", r#"(healthcheck "NONE")"#),
            (
                "HEALTHCHECK --timeout=3s CMD [\"foo\"]",
                r#"(healthcheck ["--timeout=3s"] "CMD" "foo")"#,
            ),
            (
                r#"ARG abc="123 456" def"#,
                r#"(arg "abc=\"123 456\"" "def")"#,
            ),
            (
                r#"ENV name "value value1""#,
                r#"(env "name" "\"value value1\"" "")"#,
            ),
            (
                r#"LABEL a=b c="d e""#,
                r#"(label "a" "b" "=" "c" "\"d e\"" "=")"#,
            ),
            ("USER  docker:root ", r#"(user "docker:root")"#),
        ];
        for &(src, want) in cases {
            assert_eq!(dump_of(src), want, "{src:?}");
        }
    }

    #[test]
    fn raw_errors() {
        let cases: &[(&str, ErrorKind)] = &[
            ("", ErrorKind::NoInstructions),
            ("# only\n\n", ErrorKind::NoInstructions),
            (
                "ENV PATH",
                ErrorKind::KeyValueMissingValue {
                    instruction: "ENV".into(),
                },
            ),
            ("ENV a=b c", ErrorKind::MissingEquals { word: "c".into() }),
            (r#"CMD ["a", 1]"#, ErrorKind::NotStringArray),
            (
                "RUN <<EOF\nx\n",
                ErrorKind::UnterminatedHeredoc("EOF".into()),
            ),
        ];
        for (src, want) in cases {
            assert_eq!(&*parse_nodes(src).unwrap_err().kind, want, "{src:?}");
        }
    }

    #[test]
    fn heredoc_words() {
        type Want<'a> = Option<(&'a str, bool, bool, u32)>;
        let cases: &[(&str, Want<'_>)] = &[
            ("<<EOF", Some(("EOF", true, false, 0))),
            ("<<-EOF", Some(("EOF", true, true, 0))),
            ("<<'EOF'", Some(("EOF", false, false, 0))),
            ("<<\"EOF\"", Some(("EOF", false, false, 0))),
            ("3<<EOF", Some(("EOF", true, false, 3))),
            ("<<", None),
            ("<<<EOF", None),
            ("echo", None),
        ];
        for &(word, want) in cases {
            let got = parse_heredoc_word(word);
            let got = got
                .as_ref()
                .map(|o| (o.name.as_str(), o.expand, o.chomp, o.fd));
            assert_eq!(got, want, "{word:?}");
        }
    }

    #[test]
    fn heredoc_bodies_attach() {
        let src = "FROM x\nRUN <<EOF bash\necho $HOME\nEOF\nCOPY <<-A <<'B' /dst/\n\tone\n\tA\ntwo\nB\nRUN [\"a\", \"<<EOF\"]\n";
        let ast = parse_nodes(src).unwrap();
        assert_eq!(ast.nodes.len(), 4);
        let run = &ast.nodes[1];
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(run.heredocs[0].content, "echo $HOME\n");
        assert!(run.heredocs[0].expand);
        assert_eq!(run.span.end, Pos::new(4, 3));
        let copy = &ast.nodes[2];
        assert_eq!(copy.heredocs[0].content, "one\n");
        assert!(copy.heredocs[0].chomp);
        assert_eq!(copy.heredocs[1].content, "two\n");
        assert!(!copy.heredocs[1].expand);
        assert!(
            ast.nodes[3].heredocs.is_empty(),
            "JSON form takes no heredoc"
        );
    }

    #[test]
    fn flag_and_arg_spans() {
        let ast = parse_nodes("FROM a\nCOPY  --chown=1:1 \\\n   --link src dst\n").unwrap();
        let copy = &ast.nodes[1];
        assert_eq!(
            copy.flags[0].span,
            Span::new(Pos::new(2, 7), Pos::new(2, 17))
        );
        assert_eq!(
            copy.flags[1].span,
            Span::new(Pos::new(3, 4), Pos::new(3, 9))
        );
        assert_eq!(copy.args_span.start, Pos::new(3, 11));
        assert_eq!(copy.span, Span::new(Pos::new(2, 1), Pos::new(3, 17)));
    }
}
