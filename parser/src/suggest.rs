//! "Did you mean" suggestions: the nearest known word by edit distance.

/// The candidate closest to `word` (case-insensitively), if it is close enough to be a typo.
pub(crate) fn nearest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Damerau-Levenshtein distance (optimal string alignment), so a swap of two letters is one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &[&str] = &["RUN", "COPY", "ENTRYPOINT", "WORKDIR", "chown", "chmod"];

    #[test]
    fn suggestions() {
        let cases: &[(&str, Option<&str>)] = &[
            ("RUNN", Some("RUN")),
            ("run", Some("RUN")),
            ("CPOY", Some("COPY")),
            ("ENTRYPIONT", Some("ENTRYPOINT")),
            ("WORKDIRR", Some("WORKDIR")),
            ("chwon", Some("chown")),
            ("XYZZY", None),
            ("", None),
        ];
        for &(word, want) in cases {
            assert_eq!(nearest(word, WORDS.iter().copied()), want, "{word}");
        }
    }
}
