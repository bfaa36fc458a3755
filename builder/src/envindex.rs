//! The stage environment as expansions see it, without copying it: an index of where each
//! name of the config's `Env` list is, kept as ENV steps set names. A Dockerfile of 100,000
//! ENV lines costs each line a lookup, where building a map of the whole environment for
//! every step made the stage quadratic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cairn_parser::expand::Env;

/// `KEY` of a `KEY=value` entry (the whole entry when it has no `=`).
fn key_of(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

fn value_of(entry: &str) -> &str {
    entry.split_once('=').map_or("", |(_, v)| v)
}

/// Where each name is in an `Env` list. It indexes what was appended since it last looked;
/// a position that no longer holds its name (the list was replaced) sends lookups to a scan
/// and `set` to a fresh index, so a stale index costs time, never a wrong answer.
#[derive(Debug, Default, Clone)]
pub struct EnvIndex {
    seen: usize,
    at: HashMap<String, usize>,
}

impl EnvIndex {
    /// Indexes the entries appended since the last call (all of them for another list).
    pub fn sync(&mut self, env: &[String]) {
        if self.seen > env.len() {
            *self = EnvIndex::default();
        }
        for (i, e) in env.iter().enumerate().skip(self.seen) {
            self.at.insert(key_of(e).to_owned(), i);
        }
        self.seen = env.len();
    }

    /// The value of `name` in `env`; as in a map of the list, a later entry wins.
    pub fn get<'e>(&self, env: &'e [String], name: &str) -> Option<&'e str> {
        match self.at.get(name) {
            Some(&i) if env.get(i).is_some_and(|e| key_of(e) == name) => {
                env.get(i).map(|e| value_of(e))
            }
            None if self.seen == env.len() => None,
            _ => env
                .iter()
                .rev()
                .find(|e| key_of(e) == name)
                .map(|e| value_of(e)),
        }
    }

    /// Sets `key=value` in `env`, replacing an existing entry in place (as `meta::set_env`).
    pub fn set(&mut self, env: &mut Vec<String>, key: &str, value: &str) {
        self.sync(env);
        let entry = format!("{key}={value}");
        let mut found = self.at.get(key).copied();
        if found.is_some_and(|i| env.get(i).is_none_or(|e| key_of(e) != key)) {
            *self = EnvIndex::default();
            self.sync(env);
            found = self.at.get(key).copied();
        }
        match found {
            Some(i) => env[i] = entry,
            None => {
                self.at.insert(key.to_owned(), env.len());
                env.push(entry);
                self.seen = env.len();
            }
        }
    }
}

/// What words expand with in a stage, as BuildKit's state holds it: the stage's ARGs,
/// overridden by the config's ENV, except for ARGs declared after that ENV (`over`). The
/// same as `meta::words_env`, looked up in place.
#[derive(Debug)]
pub struct Words<'a> {
    pub env: &'a [String],
    pub index: &'a EnvIndex,
    pub args: &'a BTreeMap<String, String>,
    pub over: &'a BTreeSet<String>,
}

impl Env for Words<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        if self.over.contains(name)
            && let Some(v) = self.args.get(name)
        {
            return Some(v);
        }
        self.index
            .get(self.env, name)
            .or_else(|| self.args.get(name).map(String::as_str))
    }
}

/// The environment a RUN gets, ordered as BuildKit's EnvList orders it: the base's names
/// no step set, in the config's order, then each name the stage set (`seq`: ENV pairs and
/// ARG values in turn) where it was set last; values as `words` has them. Names of `extra`
/// (the stage's args) not met on the way follow, which only an inconsistent `seq` leaves.
pub fn ordered_env<'a>(
    config_env: &'a [String],
    seq: &'a [String],
    extra: impl Iterator<Item = &'a String>,
    words: &Words<'_>,
) -> Vec<String> {
    use std::collections::HashSet;
    let set: HashSet<&str> = seq.iter().map(String::as_str).collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut names: Vec<&str> = config_env
        .iter()
        .map(|e| key_of(e))
        .filter(|k| !set.contains(k) && seen.insert(k))
        .collect();
    let mut last: Vec<&str> = seq
        .iter()
        .rev()
        .map(String::as_str)
        .filter(|k| seen.insert(k))
        .collect();
    last.reverse();
    names.extend(last);
    names.extend(extra.map(String::as_str).filter(|k| seen.insert(k)));
    names
        .into_iter()
        .filter_map(|k| words.lookup(k).map(|v| format!("{k}={v}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_sets_match_a_map_of_the_list() {
        let mut env: Vec<String> = ["A=1", "B=2", "bare"].map(str::to_owned).to_vec();
        let mut ix = EnvIndex::default();
        ix.sync(&env);
        assert_eq!(ix.get(&env, "A"), Some("1"));
        assert_eq!(ix.get(&env, "bare"), Some(""));
        assert_eq!(ix.get(&env, "C"), None);
        ix.set(&mut env, "A", "3");
        ix.set(&mut env, "C", "4");
        assert_eq!(env, ["A=3", "B=2", "bare", "C=4"]);
        // Appended behind its back: found by a scan, indexed at the next sync.
        env.push("D=5".into());
        assert_eq!(ix.get(&env, "D"), Some("5"));
        // Replaced behind its back: never a stale answer.
        env = ["C=x".to_owned(), "A=y".to_owned()].to_vec();
        assert_eq!(ix.get(&env, "A"), Some("y"));
        assert_eq!(ix.get(&env, "C"), Some("x"));
        ix.set(&mut env, "A", "z");
        assert_eq!(env, ["C=x", "A=z"]);

        let args: BTreeMap<String, String> = [("A", "arg"), ("E", "e"), ("C", "argc")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let over: BTreeSet<String> = ["C".to_owned()].into();
        let w = Words {
            env: &env,
            index: &ix,
            args: &args,
            over: &over,
        };
        let want = [
            ("A", Some("z")),
            ("E", Some("e")),
            ("C", Some("argc")),
            ("Q", None),
        ];
        for (name, v) in want {
            assert_eq!(w.lookup(name), v, "{name}");
        }
    }

    #[test]
    fn a_runs_environment_is_ordered_by_the_last_set() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // FROM (PATH, BASE) / ENV A=1 / ARG B=2 / ENV C=3 / ENV A=4 / ENV BASE=x
        let env = v(&["PATH=/bin", "BASE=x", "A=4", "C=3"]);
        let seq = v(&["A", "B", "C", "A", "BASE"]);
        let args: BTreeMap<String, String> = [("B".to_owned(), "2".to_owned())].into();
        let mut ix = EnvIndex::default();
        ix.sync(&env);
        let over = BTreeSet::new();
        let w = Words {
            env: &env,
            index: &ix,
            args: &args,
            over: &over,
        };
        assert_eq!(
            ordered_env(&env, &seq, args.keys(), &w),
            ["PATH=/bin", "B=2", "C=3", "A=4", "BASE=x"]
        );
    }

    #[test]
    fn a_runs_environment_names_each_once_and_lets_a_late_arg_win() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // FROM (A, DUP twice) / ENV A=env / ARG A=arg / ARG LATE (not in seq) / ARG NOVAL
        let env = v(&["DUP=1", "A=env", "DUP=2", "bare"]);
        let seq = v(&["A", "A"]);
        let args: BTreeMap<String, String> = [("A", "arg"), ("LATE", "l")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let mut ix = EnvIndex::default();
        ix.sync(&env);
        let over: BTreeSet<String> = ["A".to_owned()].into();
        let w = Words {
            env: &env,
            index: &ix,
            args: &args,
            over: &over,
        };
        // A name once however often the base repeats it, its last value; the ARG declared
        // after the ENV wins; stage args the sequence missed follow.
        assert_eq!(
            ordered_env(&env, &seq, args.keys(), &w),
            ["DUP=2", "bare=", "A=arg", "LATE=l"]
        );
        let none = BTreeSet::new();
        let w = Words { over: &none, ..w };
        assert_eq!(
            ordered_env(&env, &seq, args.keys(), &w),
            ["DUP=2", "bare=", "A=env", "LATE=l"]
        );
    }
}
