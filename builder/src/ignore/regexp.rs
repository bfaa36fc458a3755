//! The small part of Go's regexp that translated patterns use: parsed, compiled, run as a Pike VM.

use std::iter::Peekable;
use std::str::Chars;

// ---- the regexp engine: Go RE2 syntax (Perl flags) for translated patterns ----
//
// Parsed like Go's regexp/syntax with the flags `regexp.Compile` uses (ClassNL, OneLine, PerlX,
// UnicodeGroups): `.` does not match `\n`, negated classes do, `^`/`$` are text anchors, stacked
// repetitions are errors. Matching is a Pike VM over chars (Go decodes runes), anchored at the
// start, which equals Go's unanchored search because every translation starts with `^` and ends
// with `$`.

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    AnyNotNl,
    Class(Class),
    Look(Look),
    Group(Vec<Node>),
    Repeat(Box<Node>, Rep),
}

#[derive(Debug, Clone, Copy)]
enum Rep {
    Star,
    Plus,
    Quest,
}

#[derive(Debug, Clone, Copy)]
enum Look {
    Start,
    End,
    WordBoundary,
    NotWordBoundary,
}

impl Look {
    fn holds(self, prev: Option<char>, next: Option<char>) -> bool {
        let word = |c: Option<char>| c.is_some_and(is_word);
        match self {
            Look::Start => prev.is_none(),
            Look::End => next.is_none(),
            Look::WordBoundary => word(prev) != word(next),
            Look::NotWordBoundary => word(prev) == word(next),
        }
    }
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<ClassItem>,
}

#[derive(Debug, Clone)]
enum ClassItem {
    Range(char, char),
    /// A Perl (`\d`) or POSIX (`[:alpha:]`) class: all ASCII in Go; `true` negates it.
    Ascii(fn(char) -> bool, bool),
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let hit = self.items.iter().any(|item| match *item {
            ClassItem::Range(lo, hi) => lo <= c && c <= hi,
            ClassItem::Ascii(test, negated) => test(c) != negated,
        });
        hit != self.negated
    }
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Go's `\d \s \w` and their negations (`\s` is `[\t\n\f\r ]`).
fn perl_class(letter: char) -> Option<ClassItem> {
    Some(match letter {
        'd' => ClassItem::Ascii(|c| c.is_ascii_digit(), false),
        'D' => ClassItem::Ascii(|c| c.is_ascii_digit(), true),
        's' => ClassItem::Ascii(|c| c.is_ascii_whitespace(), false),
        'S' => ClassItem::Ascii(|c| c.is_ascii_whitespace(), true),
        'w' => ClassItem::Ascii(is_word, false),
        'W' => ClassItem::Ascii(is_word, true),
        _ => return None,
    })
}

/// Go's POSIX classes (`[:alpha:]`, `[:^alpha:]`, ...).
fn posix_class(name: &str) -> Option<ClassItem> {
    let (negated, name) = match name.strip_prefix('^') {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    let test: fn(char) -> bool = match name {
        "alnum" => |c| c.is_ascii_alphanumeric(),
        "alpha" => |c| c.is_ascii_alphabetic(),
        "ascii" => |c| c.is_ascii(),
        "blank" => |c| c == '\t' || c == ' ',
        "cntrl" => |c| c.is_ascii_control(),
        "digit" => |c| c.is_ascii_digit(),
        "graph" => |c| c.is_ascii_graphic(),
        "lower" => |c| c.is_ascii_lowercase(),
        "print" => |c| c == ' ' || c.is_ascii_graphic(),
        "punct" => |c| c.is_ascii_punctuation(),
        "space" => |c| matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '),
        "upper" => |c| c.is_ascii_uppercase(),
        "word" => is_word,
        "xdigit" => |c| c.is_ascii_hexdigit(),
        _ => return None,
    };
    Some(ClassItem::Ascii(test, negated))
}

struct Parser<'a> {
    chars: Peekable<Chars<'a>>,
    /// The regexp, for error messages.
    source: &'a str,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn rest(&self) -> String {
        self.chars.clone().collect()
    }

    fn starts_with(&self, prefix: &str) -> bool {
        let mut ahead = self.chars.clone();
        prefix.chars().all(|p| ahead.next() == Some(p))
    }

    /// A concatenation, up to the end or (inside a group) the closing `)`.
    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>, String> {
        let mut nodes: Vec<Node> = Vec::new();
        let mut last_was_repeat = false;
        while let Some(c) = self.peek() {
            let node = match c {
                ')' if depth > 0 => return Ok(nodes),
                ')' => return Err(format!("unexpected ): `{}`", self.source)),
                '(' => {
                    self.chars.next();
                    if self.peek() == Some('?') {
                        return Err(format!("unsupported group syntax in `{}`", self.source));
                    }
                    let inner = self.sequence(depth + 1)?;
                    if self.chars.next() != Some(')') {
                        return Err(format!("missing closing ): `{}`", self.source));
                    }
                    Node::Group(inner)
                }
                '|' => return Err(format!("unsupported alternation in `{}`", self.source)),
                '*' | '+' | '?' => {
                    self.chars.next();
                    let rep = match c {
                        '*' => Rep::Star,
                        '+' => Rep::Plus,
                        _ => Rep::Quest,
                    };
                    // A trailing `?` makes it non-greedy: the same set of matches.
                    if self.peek() == Some('?') {
                        self.chars.next();
                    }
                    if last_was_repeat {
                        return Err(format!("invalid nested repetition operator: `{c}`"));
                    }
                    let Some(operand) = nodes.pop() else {
                        return Err(format!("missing argument to repetition operator: `{c}`"));
                    };
                    nodes.push(Node::Repeat(Box::new(operand), rep));
                    last_was_repeat = true;
                    continue;
                }
                '{' if self.counted_repetition_ahead() => {
                    return Err(format!(
                        "unsupported counted repetition in `{}`",
                        self.source
                    ));
                }
                '.' => {
                    self.chars.next();
                    Node::AnyNotNl
                }
                '^' => {
                    self.chars.next();
                    Node::Look(Look::Start)
                }
                '$' => {
                    self.chars.next();
                    Node::Look(Look::End)
                }
                '[' => self.class()?,
                '\\' => self.escape()?,
                _ => {
                    self.chars.next();
                    Node::Char(c)
                }
            };
            nodes.push(node);
            last_was_repeat = false;
        }
        if depth > 0 {
            return Err(format!("missing closing ): `{}`", self.source));
        }
        Ok(nodes)
    }

    /// Whether a `{` starts `{n}`, `{n,}` or `{n,m}` (otherwise Go takes it literally).
    fn counted_repetition_ahead(&self) -> bool {
        let rest = self.rest();
        let Some(inner) = rest.strip_prefix('{').and_then(|r| r.split_once('}')) else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match inner.0.split_once(',') {
            None => digits(inner.0),
            Some((min, max)) => digits(min) && (max.is_empty() || digits(max)),
        }
    }

    /// An escape outside a class: anchors, `\Q...\E`, Perl classes, then single characters.
    fn escape(&mut self) -> Result<Node, String> {
        let mut ahead = self.chars.clone();
        ahead.next();
        let look = match ahead.next() {
            Some('A') => Some(Look::Start),
            Some('z') => Some(Look::End),
            Some('b') => Some(Look::WordBoundary),
            Some('B') => Some(Look::NotWordBoundary),
            Some('C') => return Err("invalid escape sequence: `\\C`".to_owned()),
            Some('Q') => {
                self.chars.next();
                self.chars.next();
                let rest = self.rest();
                let (literal, after) = rest.split_once("\\E").unwrap_or((rest.as_str(), ""));
                let consumed = rest.chars().count() - after.chars().count();
                for _ in 0..consumed {
                    self.chars.next();
                }
                return Ok(Node::Group(literal.chars().map(Node::Char).collect()));
            }
            Some(letter @ ('p' | 'P')) => {
                return Err(format!("unsupported Unicode class escape `\\{letter}`"));
            }
            Some(letter) => {
                if let Some(item) = perl_class(letter) {
                    self.chars.next();
                    self.chars.next();
                    return Ok(Node::Class(Class {
                        negated: false,
                        items: vec![item],
                    }));
                }
                None
            }
            None => None,
        };
        if let Some(look) = look {
            self.chars.next();
            self.chars.next();
            return Ok(Node::Look(look));
        }
        Ok(Node::Char(self.single_escape()?))
    }

    /// Go's `parseEscape`, at a `\`: punctuation, octal, hex and C escapes.
    fn single_escape(&mut self) -> Result<char, String> {
        self.chars.next();
        let Some(c) = self.chars.next() else {
            return Err("trailing backslash at end of expression".to_owned());
        };
        let invalid = |text: String| Err(format!("invalid escape sequence: `\\{text}`"));
        match c {
            _ if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(c),
            '1'..='7' if !self.peek().is_some_and(|d| ('0'..='7').contains(&d)) => {
                // A lone non-zero digit would be a backreference.
                invalid(c.to_string())
            }
            '0'..='7' => {
                let mut value = u32::from(c) - u32::from('0');
                for _ in 1..3 {
                    match self.peek() {
                        Some(d @ '0'..='7') => {
                            self.chars.next();
                            value = value * 8 + (u32::from(d) - u32::from('0'));
                        }
                        _ => break,
                    }
                }
                char::from_u32(value)
                    .ok_or_else(|| format!("invalid octal escape in `{}`", self.source))
            }
            'x' => self.hex_escape(),
            'a' => Ok('\x07'),
            'f' => Ok('\x0c'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            'v' => Ok('\x0b'),
            _ => invalid(c.to_string()),
        }
    }

    /// After `\x`: two hex digits, or any number in braces.
    fn hex_escape(&mut self) -> Result<char, String> {
        let bad = || format!("invalid escape sequence: `\\x` in `{}`", self.source);
        let first = self.chars.next().ok_or_else(bad)?;
        let value = if first == '{' {
            let mut value: u32 = 0;
            let mut digits = 0;
            loop {
                match self.chars.next() {
                    Some('}') => break,
                    Some(d) => {
                        let v = d.to_digit(16).ok_or_else(bad)?;
                        value = value.checked_mul(16).map(|x| x + v).ok_or_else(bad)?;
                        if value > 0x10ffff {
                            return Err(bad());
                        }
                        digits += 1;
                    }
                    None => return Err(bad()),
                }
            }
            if digits == 0 {
                return Err(bad());
            }
            value
        } else {
            let second = self.chars.next().ok_or_else(bad)?;
            match (first.to_digit(16), second.to_digit(16)) {
                (Some(x), Some(y)) => x * 16 + y,
                _ => return Err(bad()),
            }
        };
        char::from_u32(value).ok_or_else(bad)
    }

    /// Go's `parseClass`, at a `[`.
    fn class(&mut self) -> Result<Node, String> {
        let whole = self.rest();
        let missing = || format!("missing closing ]: `{whole}`");
        self.chars.next();
        let mut class = Class {
            negated: false,
            items: Vec::new(),
        };
        if self.peek() == Some('^') {
            self.chars.next();
            class.negated = true;
        }
        // `]` (and `-`) are literal as the first character.
        let mut first = true;
        loop {
            match self.peek() {
                None => return Err(missing()),
                Some(']') if !first => {
                    self.chars.next();
                    break;
                }
                _ => {}
            }
            first = false;
            if self.starts_with("[:") {
                let rest = self.rest();
                if rest.len() > 2
                    && let Some(end) = rest[2..].find(":]")
                {
                    let name = &rest[..end + 4];
                    let Some(item) = posix_class(&name[2..name.len() - 2]) else {
                        return Err(format!("invalid character class range: `{name}`"));
                    };
                    for _ in 0..name.chars().count() {
                        self.chars.next();
                    }
                    class.items.push(item);
                    continue;
                }
            }
            if self.starts_with("\\p") || self.starts_with("\\P") {
                return Err(format!("unsupported Unicode class escape in `{whole}`"));
            }
            if self.peek() == Some('\\') {
                let mut ahead = self.chars.clone();
                ahead.next();
                if let Some(item) = ahead.next().and_then(perl_class) {
                    self.chars.next();
                    self.chars.next();
                    class.items.push(item);
                    continue;
                }
            }
            let lo = self.class_char().map_err(|e| e.unwrap_or_else(missing))?;
            let mut hi = lo;
            let mut ahead = self.chars.clone();
            if ahead.next() == Some('-') && ahead.next().is_some_and(|c| c != ']') {
                self.chars.next();
                hi = self.class_char().map_err(|e| e.unwrap_or_else(missing))?;
                if hi < lo {
                    return Err(format!("invalid character class range: `{lo}-{hi}`"));
                }
            }
            class.items.push(ClassItem::Range(lo, hi));
        }
        Ok(Node::Class(class))
    }

    /// Go's `parseClassChar`; `Err(None)` is "missing closing ]".
    fn class_char(&mut self) -> Result<char, Option<String>> {
        match self.peek() {
            None => Err(None),
            Some('\\') => self.single_escape().map_err(Some),
            Some(c) => {
                self.chars.next();
                Ok(c)
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Inst {
    Char(char),
    AnyNotNl,
    Class(Class),
    Look(Look),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

#[derive(Debug, Clone)]
pub(super) struct Program {
    insts: Vec<Inst>,
}

impl Program {
    /// Parses Go regexp text; the error is what Go's `regexp.Compile` would complain about.
    pub(super) fn compile(re: &str) -> Result<Program, String> {
        let mut parser = Parser {
            chars: re.chars().peekable(),
            source: re,
        };
        let nodes = parser.sequence(0)?;
        let mut insts = Vec::new();
        for node in &nodes {
            emit(node, &mut insts);
        }
        insts.push(Inst::Match);
        Ok(Program { insts })
    }

    /// Whether the program matches `text` from its start (a Pike VM: linear in the text).
    pub(super) fn is_match(&self, text: &str) -> bool {
        let mut seen = vec![false; self.insts.len()];
        let mut current = Vec::new();
        let mut chars = text.chars().peekable();
        self.add(&mut current, &mut seen, 0, None, chars.peek().copied());
        loop {
            if current
                .iter()
                .any(|&pc| matches!(self.insts[pc], Inst::Match))
            {
                return true;
            }
            let Some(c) = chars.next() else {
                return false;
            };
            if current.is_empty() {
                return false;
            }
            let next = chars.peek().copied();
            seen.iter_mut().for_each(|s| *s = false);
            let mut following = Vec::new();
            for &pc in &current {
                let step = match &self.insts[pc] {
                    Inst::Char(want) => *want == c,
                    Inst::AnyNotNl => c != '\n',
                    Inst::Class(class) => class.matches(c),
                    _ => false,
                };
                if step {
                    self.add(&mut following, &mut seen, pc + 1, Some(c), next);
                }
            }
            current = following;
        }
    }

    /// Adds `pc` and everything reachable from it without consuming a character.
    fn add(
        &self,
        list: &mut Vec<usize>,
        seen: &mut [bool],
        pc: usize,
        prev: Option<char>,
        next: Option<char>,
    ) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if seen[pc] {
                continue;
            }
            seen[pc] = true;
            match &self.insts[pc] {
                Inst::Jmp(to) => stack.push(*to),
                Inst::Split(a, b) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Inst::Look(look) => {
                    if look.holds(prev, next) {
                        stack.push(pc + 1);
                    }
                }
                _ => list.push(pc),
            }
        }
    }
}

fn emit(node: &Node, insts: &mut Vec<Inst>) {
    match node {
        Node::Char(c) => insts.push(Inst::Char(*c)),
        Node::AnyNotNl => insts.push(Inst::AnyNotNl),
        Node::Class(class) => insts.push(Inst::Class(class.clone())),
        Node::Look(look) => insts.push(Inst::Look(*look)),
        Node::Group(nodes) => nodes.iter().for_each(|n| emit(n, insts)),
        Node::Repeat(inner, Rep::Star) => {
            let split = insts.len();
            insts.push(Inst::Jmp(0));
            emit(inner, insts);
            insts.push(Inst::Jmp(split));
            insts[split] = Inst::Split(split + 1, insts.len());
        }
        Node::Repeat(inner, Rep::Quest) => {
            let split = insts.len();
            insts.push(Inst::Jmp(0));
            emit(inner, insts);
            insts[split] = Inst::Split(split + 1, insts.len());
        }
        Node::Repeat(inner, Rep::Plus) => {
            let start = insts.len();
            emit(inner, insts);
            insts.push(Inst::Split(start, insts.len() + 1));
        }
    }
}
