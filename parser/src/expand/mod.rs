//! BuildKit-compatible shell-word expansion: quotes, escapes, `$VAR`/`${VAR…}` and word splitting.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};

mod modifiers;
mod pattern;

/// The deepest nesting of `${…}` operands accepted (`${A:-${B:-x}}` nests two). BuildKit has no
/// limit, but every level recurses here, so a long enough word would overflow the stack.
const MAX_NESTING: usize = 32;

/// The longest text one expansion may produce, in bytes. BuildKit has no limit, but an ENV or ARG
/// that repeats `$VAR` multiplies the value's length each time, so a few short lines could ask
/// for gigabytes. This is Linux's limit on one argument or environment string (`MAX_ARG_STRLEN`),
/// so no value a RUN could be given is refused.
const MAX_EXPANSION_LEN: usize = 128 * 1024;

/// Variables visible to an expansion.
pub trait Env {
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// A list of definitions in order, as a Dockerfile builds them up; a later entry overrides an
/// earlier one with the same name.
impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

impl<T: Env + ?Sized> Env for &T {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

/// The result of expanding one word, with the variables it looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    pub value: String,
    /// Referenced names that were set, even to the empty string.
    pub matched: BTreeSet<String>,
    /// Referenced names that were not set.
    pub unmatched: BTreeSet<String>,
}

/// An expansion failure.
///
/// `offset` is the byte offset in the input word at which the problem was found: the end of the
/// word when something is unterminated, the offending character for malformed syntax, and the `$`
/// that starts the expansion when a `${VAR?…}` check fails or its pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    pub message: String,
    pub offset: usize,
}

/// Expands words the way BuildKit's `shell.Lex` does, odd corners included, so that a Dockerfile
/// means the same here as under `docker build`; where BuildKit departs from a POSIX shell, the code
/// says so. The default mode (all flags off) removes quotes, applies escapes and expands unset
/// variables to the empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer::new('\\')
    }
}

impl Lexer {
    /// A lexer for the given escape token: `\`, or backtick after `# escape=``.
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// Keep quote characters in the output (their content is still treated as quoted).
    pub fn raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape tokens in the output (the escaped character still loses its meaning).
    pub fn raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave a reference to an unset variable exactly as written instead of expanding it.
    pub fn skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Treat quote characters as ordinary characters.
    pub fn skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// The escape token this lexer was made with.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// One word: quotes removed, escapes applied, variables expanded, no splitting.
    pub fn process_word(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<String, ExpandError> {
        self.run(word, env).map(|(expansion, _)| expansion.value)
    }

    /// As [`Lexer::process_word`], also reporting which variable names were referenced and set
    /// (matched, even if empty) or not set (unmatched).
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Expansion, ExpandError> {
        self.run(word, env).map(|(expansion, _)| expansion)
    }

    /// Expansion plus word splitting: whitespace produced by an unquoted expansion or written
    /// unquoted separates words; quoted or escaped whitespace does not.
    pub fn process_words(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Vec<String>, ExpandError> {
        self.run(word, env).map(|(_, words)| words)
    }

    fn run<E: Env + ?Sized>(
        &self,
        word: &str,
        env: &E,
    ) -> Result<(Expansion, Vec<String>), ExpandError> {
        let mut expander = Expander {
            lexer: self,
            env,
            word,
            // Go's text/scanner, which BuildKit reads the word with, drops a leading byte-order mark.
            pos: if word.starts_with('\u{feff}') {
                '\u{feff}'.len_utf8()
            } else {
                0
            },
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let (value, words) = expander.process_until(None, self.raw_escapes)?;
        let expansion = Expansion {
            value,
            matched: expander.matched,
            unmatched: expander.unmatched,
        };
        Ok((expansion, words))
    }
}

/// The state of one expansion: a cursor over the word plus the names looked up so far.
struct Expander<'a, E: Env + ?Sized> {
    lexer: &'a Lexer,
    env: &'a E,
    word: &'a str,
    pos: usize,
    /// How many `${…}` operands the cursor is inside.
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

impl<'a, E: Env + ?Sized> Expander<'a, E> {
    fn peek(&self) -> Option<char> {
        self.word[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.word.len()
    }

    fn lookup(&mut self, name: &str) -> Option<&'a str> {
        let value = self.env.lookup(name);
        let seen = if value.is_some() {
            &mut self.matched
        } else {
            &mut self.unmatched
        };
        if !seen.contains(name) {
            seen.insert(name.to_owned());
        }
        value
    }

    fn syntax_error(&self, offset: usize, what: impl fmt::Display) -> ExpandError {
        ExpandError {
            message: format!("{what} in {:?}", self.word),
            offset,
        }
    }

    fn missing(&self, what: &str) -> ExpandError {
        self.syntax_error(self.word.len(), format_args!("missing {what}"))
    }

    fn too_long(&self) -> ExpandError {
        self.syntax_error(
            self.pos,
            format_args!("expansion longer than {MAX_EXPANSION_LEN} bytes"),
        )
    }

    /// Appends expanded text to `out`, unless that would make it longer than the limit.
    fn append(&self, out: &mut String, text: &str) -> Result<(), ExpandError> {
        if out.len() + text.len() > MAX_EXPANSION_LEN {
            return Err(self.too_long());
        }
        out.push_str(text);
        Ok(())
    }

    /// Processes text up to `stop` (consumed) or, without one, to the end of the word. Returns the
    /// expanded text and the same text split into words.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let quotes = !self.lexer.skip_process_quotes;
        let mut out = String::new();
        // Each level splits into its own buffer. Current BuildKit shares one buffer across nested
        // `${…}` operands, so its ProcessWords drops the text before `${X:-…}`; that is a bug
        // (older releases did not have it, and nothing depends on it), so it is not copied.
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.bump();
                return Ok((out, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    self.append(&mut out, &value)?;
                    value.chars().for_each(|ch| words.push_splitting(ch));
                }
                '\'' if quotes => {
                    let value = self.single_quoted()?;
                    self.append(&mut out, &value)?;
                    words.push_str(&value);
                }
                '"' if quotes => {
                    let value = self.double_quoted(raw_escapes)?;
                    self.append(&mut out, &value)?;
                    words.push_str(&value);
                }
                _ => {
                    self.bump();
                    if ch == self.lexer.escape {
                        if raw_escapes {
                            words.push(ch);
                            out.push(ch);
                        }
                        // An escape token at the very end escapes nothing and is dropped.
                        let Some(escaped) = self.bump() else { break };
                        words.push(escaped);
                        out.push(escaped);
                    } else {
                        words.push_splitting(ch);
                        out.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(self.missing(&format!("'{stop}'"))),
            None => Ok((out, words.finish())),
        }
    }

    /// The operand of `${VAR<op>…}` up to `stop`. A failure that ran into the end of the word is
    /// reported as the missing terminator, since that is where the real problem lies.
    fn operand(
        &mut self,
        stop: char,
        raw_escapes: bool,
        missing: &str,
    ) -> Result<String, ExpandError> {
        if self.depth == MAX_NESTING {
            return Err(self.syntax_error(
                self.pos,
                format_args!("more than {MAX_NESTING} nested expansions"),
            ));
        }
        self.depth += 1;
        let result = self.process_until(Some(stop), raw_escapes);
        self.depth -= 1;
        match result {
            Ok((text, _)) => Ok(text),
            Err(_) if self.at_end() => Err(self.missing(missing)),
            Err(err) => Err(err),
        }
    }

    /// Everything between single quotes is literal; there is no way to escape a `'` inside.
    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut out = String::new();
        if let Some(quote) = self.bump().filter(|_| self.lexer.raw_quotes) {
            out.push(quote);
        }
        loop {
            match self.bump() {
                None => return Err(self.missing("closing single quote")),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(ch) => out.push(ch),
            }
        }
    }

    /// Inside double quotes only `$` expands, and the escape token only escapes `"`, `$` and
    /// itself; before any other character it stays as written.
    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        let escape = self.lexer.escape;
        let mut out = String::new();
        if let Some(quote) = self.bump().filter(|_| self.lexer.raw_quotes) {
            out.push(quote);
        }
        loop {
            match self.peek() {
                None => return Err(self.missing("closing double quote")),
                Some('"') => {
                    self.bump();
                    if self.lexer.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let value = self.dollar()?;
                    self.append(&mut out, &value)?;
                }
                Some(_) => {
                    let Some(mut ch) = self.bump() else { continue };
                    if ch == escape {
                        // BuildKit writes the kept escape and then the character it stands
                        // before, so with raw escapes `"\t"` yields two backslashes.
                        if raw_escapes {
                            out.push(ch);
                        }
                        match self.peek() {
                            // The closing quote is missing; the next turn reports it.
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == escape => {
                                self.bump();
                                ch = next;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// A name after `$` or `${`: a run of digits (a positional parameter), one special-parameter
    /// character, or letters, digits and `_`. Empty when none of those follows.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(digit) = self.peek().filter(|&c| is_digit(c)) {
                    name.push(digit);
                    self.bump();
                }
                return name;
            }
            if name.is_empty() && is_special_parameter(ch) {
                self.bump();
                name.push(ch);
                return name;
            }
            if !is_name_char(ch) {
                break;
            }
            self.bump();
            name.push(ch);
        }
        name
    }

    /// Expands `$NAME` or `${…}`; the cursor is on the `$`.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        let start = self.pos;
        self.bump();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_owned());
            }
            return Ok(match self.lookup(&name) {
                Some(value) => value.to_owned(),
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.bump();
        match self.peek() {
            None => return Err(self.missing("'}'")),
            Some('{' | '}' | ':') => {
                return Err(self.syntax_error(
                    self.pos,
                    "bad substitution: '${' must be followed by a variable name",
                ));
            }
            Some(_) => {}
        }
        // BuildKit accepts an empty name here when an operator follows (`${+x}`, `${/a/b}`):
        // it is just a variable that is never set.
        let name = self.name();
        let op_at = self.pos;
        match self.bump() {
            None => Err(self.missing("'}'")),
            Some('}') => Ok(match self.lookup(&name) {
                Some(value) => value.to_owned(),
                None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(':') => {
                let Some(op) = self.bump() else {
                    return Err(self.missing("'}'"));
                };
                self.modifier(start, op_at, &name, op, true)
            }
            Some(op @ ('+' | '-' | '?' | '#' | '%')) => {
                self.modifier(start, op_at, &name, op, false)
            }
            Some('/') => self.replace(start, &name),
            Some(op) => Err(self.syntax_error(op_at, format_args!("unsupported modifier '{op}'"))),
        }
    }
}

/// Words being split out of expanded text.
#[derive(Default)]
struct Words {
    done: Vec<String>,
    current: String,
}

impl Words {
    /// Unquoted text: whitespace ends the current word and is dropped.
    fn push_splitting(&mut self, ch: char) {
        if !ch.is_whitespace() {
            self.current.push(ch);
        } else if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
    }

    /// Quoted or escaped text: kept whole, whitespace included.
    fn push(&mut self, ch: char) {
        self.current.push(ch);
    }

    fn push_str(&mut self, text: &str) {
        self.current.push_str(text);
    }

    /// An empty word, such as `""` on its own, produces nothing.
    fn finish(mut self) -> Vec<String> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// Go's `unicode.IsDigit`: a decimal digit in any script (`٣` counts, `²` does not).
fn is_digit(ch: char) -> bool {
    ch.is_ascii_digit()
        || (!ch.is_ascii() && ch.general_category() == GeneralCategory::DecimalNumber)
}

/// What Go's `unicode.IsLetter`, `unicode.IsDigit` or `_` accept. Rust's `is_alphanumeric` is
/// wider (it takes combining vowel signs and `²`), so the general category decides.
fn is_name_char(ch: char) -> bool {
    ch == '_'
        || ch.is_ascii_alphanumeric()
        || (!ch.is_ascii()
            && (ch.general_category_group() == GeneralCategoryGroup::Letter || is_digit(ch)))
}

/// POSIX special parameters; a Dockerfile never sets them, but they parse as names.
fn is_special_parameter(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

#[cfg(test)]
mod tests {
    use super::pattern::reverse_pattern;
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("PWD", "/home"),
            ("EMPTY", ""),
            ("SPACED", "a  b"),
            ("V", "banana"),
            ("E", ""),
            ("NL", "a\nxb"),
            ("BR", "[ab]c"),
            ("P", "#b*n"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Runs `(input, expected)` rows; `Err("")` expects any error, `Err(s)` an error containing `s`.
    fn check(lexer: &Lexer, rows: &[(&str, Result<&str, &str>)]) {
        let env = env();
        let mut failures = Vec::new();
        for &(input, ref expected) in rows {
            let actual = lexer.process_word(input, &env);
            let ok = match (expected, &actual) {
                (Ok(want), Ok(got)) => want == got,
                (Err(want), Err(got)) => got.message.contains(want),
                _ => false,
            };
            if !ok {
                failures.push(format!("{input:?}: expected {expected:?}, got {actual:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn backtick_escape() {
        check(
            &Lexer::new('`'),
            &[
                ("he`$PWD", Ok("he$PWD")),
                ("he\\$PWD", Ok("he\\/home")),
                (r"C:\path\to", Ok(r"C:\path\to")),
                ("a`tb", Ok("atb")),
                ("hello`", Ok("hello")),
                ("hello``", Ok("hello`")),
                ("a` b", Ok("a b")),
                ("\"a`\"b\"", Ok("a\"b")),
                ("\"a`$PWD\"", Ok("a$PWD")),
                ("\"a``b\"", Ok("a`b")),
                ("\"a`tb\"", Ok("a`tb")),
                ("\"a\\tb\"", Ok("a\\tb")),
                ("\"a\\\"", Ok("a\\")),
                ("'a`b'", Ok("a`b")),
                ("${X:-a`}b}", Ok("a}b")),
                ("${X:-a\\}b}", Ok("a\\b}")),
                ("`'a", Ok("'a")),
                ("\"a`\"", Err("missing closing double quote")),
            ],
        );
    }

    #[test]
    fn raw_quotes() {
        check(
            &Lexer::new('\\').raw_quotes(true),
            &[
                ("he'll'o", Ok("he'll'o")),
                ("\"he$PWD\"", Ok("\"he/home\"")),
                ("'$PWD'", Ok("'$PWD'")),
                ("\"a\\\"b\"", Ok("\"a\"b\"")),
                ("a\\'b", Ok("a'b")),
                ("${X:-'y'}", Ok("'y'")),
                ("'abc", Err("missing closing single quote")),
            ],
        );
        let words = Lexer::new('\\')
            .raw_quotes(true)
            .process_words("hello\" there  \" x", &env())
            .unwrap();
        assert_eq!(words, ["hello\" there  \"", "x"]);
    }

    #[test]
    fn skip_unset_env() {
        check(
            &Lexer::new('\\').skip_unset_env(true),
            &[
                ("$FOO", Ok("$FOO")),
                ("${FOO}", Ok("${FOO}")),
                ("x$FOO.y", Ok("x$FOO.y")),
                ("$PWD", Ok("/home")),
                ("${EMPTY}", Ok("")),
                ("${FOO:-x}", Ok("${FOO:-x}")),
                ("${FOO-$PWD}", Ok("${FOO-/home}")),
                ("${FOO:+x}", Ok("${FOO:+x}")),
                ("${EMPTY:-x}", Ok("x")),
                // Unset wins over the check and over an unknown operator, as in BuildKit.
                ("${FOO:?oops}", Ok("${FOO:?oops}")),
                ("${FOO:YY}", Ok("${FOO:YY}")),
                ("${EMPTY:?oops}", Err("EMPTY: oops")),
                ("${FOO#*x}", Ok("${FOO#*x}")),
                ("${FOO##x}", Ok("${FOO##x}")),
                ("${FOO/a/b}", Ok("${FOO/a/b}")),
                ("${FOO//a/b}", Ok("${FOO/a/b}")),
                ("${FOO=x}", Err("unsupported modifier '='")),
                ("$1", Ok("$1")),
                ("'$FOO'", Ok("$FOO")),
            ],
        );
    }

    #[test]
    fn raw_escapes_and_skip_process_quotes() {
        check(
            &Lexer::new('\\').raw_escapes(true),
            &[
                ("a\\b", Ok("a\\b")),
                ("a\\$PWD", Ok("a\\$PWD")),
                ("\"a\\\"b\"", Ok("a\\\"b")),
                // BuildKit doubles an escape that does not escape anything inside quotes.
                ("\"a\\tb\"", Ok("a\\\\tb")),
                ("a\\", Ok("a\\")),
                // Operands of `-`, `+` and `?` always drop their escapes.
                ("${X:-a\\b}", Ok("ab")),
            ],
        );
        check(
            &Lexer::new('\\').skip_process_quotes(true),
            &[
                ("'a b'", Ok("'a b'")),
                ("\"$PWD\"", Ok("\"/home\"")),
                ("'$PWD'", Ok("'/home'")),
                ("\\'x", Ok("'x")),
            ],
        );
        let words = Lexer::new('\\')
            .skip_process_quotes(true)
            .process_words("'a b' \"c\"", &env())
            .unwrap();
        assert_eq!(words, ["'a", "b'", "\"c\""]);
    }

    #[test]
    fn patterns() {
        check(
            &Lexer::default(),
            &[
                // Brackets are literal, not character classes.
                ("${BR#[ab]}", Ok("c")),
                ("${V#[ab]}", Ok("banana")),
                ("${V#b*n}", Ok("ana")),
                ("${V##b*n}", Ok("a")),
                ("${V%a*}", Ok("banan")),
                ("${V%%n*}", Ok("ba")),
                ("${V%%?}", Ok("banan")),
                ("${V/an/AN}", Ok("bANana")),
                ("${V//an/AN}", Ok("bANANa")),
                ("${V/#/x}", Ok("banana")),
                // Wildcards do not cross a newline (they are Go regexp `.`).
                ("${NL#*x}", Ok("a\nxb")),
                ("${NL#??}", Ok("a\nxb")),
                // The doubling is read from the expanded operand.
                ("${V#$P}", Ok("a")),
                ("${V#\\x}", Err("invalid escape")),
                ("${V/\\x/y}", Err("invalid escape")),
                // Replace-all expands `$0` to the match; `//` with an empty pattern hits every gap.
                ("${V//a/\\$0}", Ok("b\\an\\an\\a")),
                ("${V/a/\\$0}", Ok("b\\$0nana")),
                ("${V//a/'$1'}", Ok("bnn")),
                ("${V//a/'${0}$$'}", Ok("ba$na$na$")),
                ("${V//$E/-}", Ok("-b-a-n-a-n-a-")),
                ("${V//n*/}", Ok("ba")),
                ("${V//a*?/x}", Ok("bx")),
                ("${V//?/[&]}", Ok("[&][&][&][&][&][&]")),
                // An empty name before an operator is accepted and never set.
                ("${+x}", Ok("")),
                ("${/a/b}", Ok("")),
                ("한${KOREAN:-국}어", Ok("한국어")),
                ("${V#바나}", Ok("banana")),
            ],
        );
    }

    #[test]
    fn errors_and_offsets() {
        let lexer = Lexer::default();
        let env = env();
        let cases: &[(&str, &str, usize)] = &[
            ("${FOO", "missing '}' in \"${FOO\"", 5),
            ("x${FOO:?}", "FOO: is not allowed to be unset", 1),
            ("x${EMPTY:?}", "EMPTY: is not allowed to be empty", 1),
            ("x${FOO?no $PWD}", "FOO: no /home", 1),
            ("a${}", "bad substitution", 3),
            ("ab${PWD:=x}", "unsupported modifier ':='", 7),
            ("${PWD=x}", "unsupported modifier '='", 5),
            ("${PWD:#x}", "unsupported modifier ':#'", 5),
            ("${PWD/x}", "missing '/' after the pattern", 8),
            ("'abc", "missing closing single quote", 4),
            ("${X:-\"abc}", "missing '}'", 10),
            ("${X:-${Y:?inner}", "missing '}'", 16),
            ("${X:-${Y:?inner}}", "Y: inner", 5),
            ("${V%\\q}", "invalid pattern", 0),
            ("x${V%a\\q}", "invalid pattern \"a\\\\q\"", 1),
        ];
        for &(input, message, offset) in cases {
            let err = lexer.process_word(input, &env).unwrap_err();
            assert!(err.message.contains(message), "{input:?}: {err:?}");
            assert_eq!(err.offset, offset, "{input:?}: {err:?}");
        }
    }

    #[test]
    fn matches_and_words() {
        let lexer = Lexer::default();
        let env = env();
        let got = lexer
            .process_word_with_matches("$PWD ${NOPE:-$EMPTY} ${PWD}", &env)
            .unwrap();
        assert_eq!(got.value, "/home  /home");
        assert_eq!(got.matched, BTreeSet::from(["PWD".into(), "EMPTY".into()]));
        assert_eq!(got.unmatched, BTreeSet::from(["NOPE".into()]));

        let words = lexer.process_words("x${SPACED}y \"\" z", &env).unwrap();
        assert_eq!(words, ["xa", "by", "z"]);
        let words = lexer.process_words("pre${X:-a b}post", &env).unwrap();
        assert_eq!(words, ["prea", "bpost"]);

        let layered = vec![
            ("A".to_owned(), "1".to_owned()),
            ("A".to_owned(), "2".to_owned()),
        ];
        assert_eq!(lexer.process_word("$A", &layered).unwrap(), "2");
        assert_eq!(lexer.process_word("$A", layered.as_slice()).unwrap(), "2");
        let map: HashMap<String, String> = layered.into_iter().collect();
        assert_eq!(lexer.process_word("$A", &map).unwrap(), "2");
    }

    #[test]
    fn names_follow_go_unicode_categories() {
        check(
            &Lexer::default(),
            &[
                // `²` is not a decimal digit and not a letter, so no name starts there.
                ("$²", Ok("$²")),
                // Any script's decimal digits make a positional parameter.
                ("$٣x", Ok("x")),
                ("$한국!", Ok("!")),
                // A combining vowel sign is a mark, not a letter: it ends the name.
                ("$a\u{93e}", Ok("\u{93e}")),
                ("${PWD}\u{93e}", Ok("/home\u{93e}")),
            ],
        );
    }

    #[test]
    fn leading_byte_order_mark_is_dropped() {
        let env = env();
        assert_eq!(
            Lexer::default().process_word("\u{feff}$PWD", &env).unwrap(),
            "/home"
        );
        assert_eq!(
            Lexer::default().process_word("a\u{feff}", &env).unwrap(),
            "a\u{feff}"
        );
    }

    #[test]
    fn reverse_pattern_keeps_escape_pairs() {
        for (pattern, reversed) in [
            ("a\\*c", "c\\*a"),
            ("\\\\\\ab", "b\\a\\\\"),
            ("ab\\", "\\ba"),
            ("👽\\🚀🖖", "🖖\\🚀👽"),
        ] {
            assert_eq!(reverse_pattern(pattern), reversed, "{pattern:?}");
        }
    }
}
