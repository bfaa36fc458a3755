//! A lint warning on one line, as BuildKit's progress shows it: for progress, rawjson and check.

use cairn_parser::lint::Lint;

/// BuildKit's `LintFormatShort`: `Rule: message (line N)`.
pub fn short(l: &Lint) -> String {
    format!(
        "{}: {} (line {})",
        l.rule.name, l.message, l.span.start.line
    )
}
