//! The `${VAR…}` modifiers: defaults (`:-`, `:+`, `:?`), trims (`#`, `%`) and replacements (`/`).

use super::pattern::{Glob, expand_template, reverse_pattern};
use super::{Env, ExpandError, Expander};

impl<'a, E: Env + ?Sized> Expander<'a, E> {
    /// `${NAME<op>word}` for `-`, `+`, `?`, `#`, `##`, `%`, `%%` and their `:` forms, with the
    /// cursor just after `op`. With `colon`, an empty value counts as unset.
    pub(super) fn modifier(
        &mut self,
        start: usize,
        op_at: usize,
        name: &str,
        op: char,
        colon: bool,
    ) -> Result<String, ExpandError> {
        let spelled = if colon {
            format!(":{op}")
        } else {
            op.to_string()
        };
        let unsupported = |this: &Self| {
            this.syntax_error(op_at, format_args!("unsupported modifier '{spelled}'"))
        };
        let is_pattern = op == '#' || op == '%';
        if colon && is_pattern {
            return Err(unsupported(self));
        }
        // Patterns keep their escapes so that `\*` can still mean a literal star when matching.
        let word = self.operand('}', is_pattern, "'}'")?;
        // BuildKit reads the operand before it rejects an unknown operator such as `:=`, so an
        // unset variable under skip_unset_env comes back as written rather than as an error.
        let value = self.lookup(name);
        if value.is_none() && self.lexer.skip_unset_env {
            return Ok(format!("${{{name}{spelled}{word}}}"));
        }
        let present = value.filter(|v| !(colon && v.is_empty()));
        match op {
            '-' => Ok(present.map_or(word, str::to_owned)),
            '+' => Ok(if present.is_some() {
                word
            } else {
                String::new()
            }),
            '?' => match present {
                Some(value) => Ok(value.to_owned()),
                None => {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".to_owned()
                    } else {
                        "is not allowed to be empty".to_owned()
                    };
                    Err(ExpandError {
                        message: format!("{name}: {message}"),
                        offset: start,
                    })
                }
            },
            '#' | '%' => self.trim(start, value.unwrap_or(""), op, &word),
            _ => Err(unsupported(self)),
        }
    }

    /// `${NAME#p}`, `${NAME##p}`, `${NAME%p}`, `${NAME%%p}`: drop the shortest (single operator)
    /// or longest (doubled) prefix or suffix of `value` that matches the glob.
    fn trim(&self, start: usize, value: &str, op: char, word: &str) -> Result<String, ExpandError> {
        // The doubling is recognised on the expanded operand, so `${V#$P}` with P=`#x` is `##x`.
        let (greedy, pattern) = match word.strip_prefix(op) {
            Some(rest) => (true, rest),
            None => (false, word),
        };
        let chars: Vec<char> = value.chars().collect();
        if op == '#' {
            let glob = self.glob(start, pattern, pattern)?;
            let end = glob.match_at(&chars, 0, greedy).unwrap_or(0);
            return Ok(chars[end..].iter().collect());
        }
        // A shortest match that ends at the end is a leftmost match of the reversed pattern
        // against the reversed value, which the leftmost matcher can answer.
        let glob = self.glob(start, pattern, &reverse_pattern(pattern))?;
        let reversed: Vec<char> = chars.iter().rev().copied().collect();
        let cut = glob.match_at(&reversed, 0, greedy).unwrap_or(0);
        Ok(chars[..chars.len() - cut].iter().collect())
    }

    /// `${NAME/p/r}` and `${NAME//p/r}`, with the cursor just after the first `/`.
    pub(super) fn replace(&mut self, start: usize, name: &str) -> Result<String, ExpandError> {
        let all = self.peek() == Some('/');
        if all {
            self.bump();
        }
        let pattern = self.operand('/', true, "'/' after the pattern")?;
        let replacement = self.operand('}', true, "'}'")?;
        let Some(value) = self.lookup(name) else {
            if self.lexer.skip_unset_env {
                // BuildKit rebuilds this with a single `/` even for replace-all.
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let glob = self.glob(start, &pattern, &pattern)?;
        let chars: Vec<char> = value.chars().collect();
        if !all {
            return Ok(match glob.find(&chars, 0) {
                Some((from, to)) => {
                    let mut out: String = chars[..from].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&chars[to..]);
                    out
                }
                None => value.to_owned(),
            });
        }
        // Go's ReplaceAllString: successive non-overlapping leftmost matches, no replacement for
        // an empty match right after the previous one, and `$` references in the replacement.
        let mut out = String::new();
        let (mut last_end, mut search) = (0, 0);
        while search <= chars.len() {
            let Some((from, to)) = glob.find(&chars, search) else {
                break;
            };
            out.extend(&chars[last_end..from]);
            if to > last_end || from == 0 {
                let matched: String = chars[from..to].iter().collect();
                if !expand_template(&replacement, &matched, &mut out) {
                    return Err(self.too_long());
                }
            }
            last_end = to;
            search = if search + 1 > to { search + 1 } else { to };
        }
        out.extend(&chars[last_end..]);
        Ok(out)
    }

    /// Compiles `source`, which is `pattern` as written or its reversal.
    fn glob(&self, start: usize, pattern: &str, source: &str) -> Result<Glob, ExpandError> {
        Glob::parse(source).map_err(|reason| ExpandError {
            message: format!("invalid pattern {pattern:?} in {:?}: {reason}", self.word),
            offset: start,
        })
    }
}
