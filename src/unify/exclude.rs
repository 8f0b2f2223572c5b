//! Exclude lists, as util-vserver's vunify reads them: one glob per line,
//! first match wins, `+` includes again. See default-excludes.txt.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::path::Path;

pub const DEFAULT_EXCLUDES: &str = include_str!("default-excludes.txt");

/// Rules beyond this many are refused: decisions are kept as a bit mask.
const MAX_RULES: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("exclude pattern {pattern:?} (from {origin}): {source}")]
    BadPattern {
        pattern: String,
        origin: String,
        source: globset::Error,
    },
    #[error("too many exclude rules ({0}); at most {MAX_RULES}")]
    TooMany(usize),
}

/// Compiled rules. A decision for a path is the first rule matching the path
/// or one of its ancestors; [`Excludes::mask`] carries the ancestors' matches
/// down the walk so each path is matched once.
#[derive(Debug, Clone)]
pub struct Excludes {
    set: GlobSet,
    include: Vec<bool>,
    has_includes: bool,
    rules: Vec<String>,
}

/// Which rules matched a path or one of its ancestors.
pub type Mask = u128;

impl Excludes {
    /// Builds from `(origin, text)` lists, in order (earlier lists win).
    pub fn new<'a>(lists: impl IntoIterator<Item = (String, &'a str)>) -> Result<Excludes, Error> {
        let mut builder = GlobSetBuilder::new();
        let mut include = Vec::new();
        let mut rules = Vec::new();
        for (origin, text) in lists {
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (inc, pattern) = match line.strip_prefix('+') {
                    Some(p) => (true, p.trim()),
                    None => (false, line.strip_prefix('-').unwrap_or(line).trim()),
                };
                let anchored = match pattern.strip_prefix('/') {
                    Some(p) => format!("/{}", p.trim_end_matches('/')),
                    None => format!("**/{}", pattern.trim_end_matches('/')),
                };
                let glob = GlobBuilder::new(&anchored)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .map_err(|source| Error::BadPattern {
                        pattern: line.to_string(),
                        origin: origin.clone(),
                        source,
                    })?;
                builder.add(glob);
                include.push(inc);
                rules.push(line.to_string());
            }
        }
        if rules.len() > MAX_RULES {
            return Err(Error::TooMany(rules.len()));
        }
        let set = builder.build().map_err(|source| Error::BadPattern {
            pattern: String::new(),
            origin: "all rules".into(),
            source,
        })?;
        Ok(Excludes {
            set,
            has_includes: include.iter().any(|i| *i),
            include,
            rules,
        })
    }

    /// No rules at all.
    pub fn none() -> Excludes {
        Excludes::new(std::iter::empty()).expect("an empty list compiles")
    }

    pub fn rules(&self) -> &[String] {
        &self.rules
    }

    /// The matches of `guest_path` (absolute inside the guest, leading `/`)
    /// combined with those of its parent.
    pub fn mask(&self, parent: Mask, guest_path: &Path) -> Mask {
        if self.set.is_empty() {
            return parent;
        }
        // One list of matches per thread, not one allocation per path.
        thread_local! {
            static MATCHES: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        MATCHES.with_borrow_mut(|matches| {
            self.set.matches_into(guest_path, matches);
            matches.iter().fold(parent, |mask, &i| mask | 1 << i)
        })
    }

    /// Whether a path with this mask is excluded.
    pub fn excluded(&self, mask: Mask) -> bool {
        match mask.trailing_zeros() as usize {
            i if i < self.include.len() => !self.include[i],
            _ => false,
        }
    }

    /// Whether nothing below an excluded directory can be included again,
    /// so the walk may skip it.
    pub fn prune(&self, mask: Mask) -> bool {
        self.excluded(mask) && !self.has_includes
    }

    /// Convenience for tests and reports: is this path excluded?
    pub fn is_excluded(&self, guest_path: &Path) -> bool {
        let mut mask = 0;
        let mut cur = std::path::PathBuf::from("/");
        for c in guest_path.components().skip(1) {
            cur.push(c);
            mask = self.mask(mask, &cur);
        }
        self.excluded(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(text: &str) -> Excludes {
        Excludes::new([("test".to_string(), text)]).unwrap()
    }

    #[test]
    fn directory_match_covers_everything_below() {
        let e = ex("/var\n");
        assert!(e.is_excluded(Path::new("/var/lib/dpkg/status")));
        assert!(!e.is_excluded(Path::new("/usr/var/x")));
        assert!(!e.is_excluded(Path::new("/variable")));
    }

    #[test]
    fn first_match_wins_and_plus_includes_again() {
        let e = ex("+/var/lib/keep\n/var\n");
        assert!(!e.is_excluded(Path::new("/var/lib/keep/a")));
        assert!(e.is_excluded(Path::new("/var/lib/other")));
        let e = ex("/var\n+/var/lib/keep\n");
        assert!(e.is_excluded(Path::new("/var/lib/keep/a")));
    }

    #[test]
    fn unanchored_patterns_match_names_anywhere_and_star_stays_in_a_component() {
        let e = ex("*.pyc\n/etc/ssh/ssh_host_*\n");
        assert!(e.is_excluded(Path::new("/usr/lib/a/b.pyc")));
        assert!(e.is_excluded(Path::new("/etc/ssh/ssh_host_rsa_key")));
        assert!(!e.is_excluded(Path::new("/etc/ssh/sshd_config")));
        let e = ex("/usr/*.so\n");
        assert!(!e.is_excluded(Path::new("/usr/lib/x.so")));
    }

    #[test]
    fn spaces_around_a_rule_are_trimmed_and_inner_ones_kept() {
        let e = ex("  /opt  \n\t+ /srv/keep \r\n/srv\n/usr/my dir\n");
        assert!(e.is_excluded(Path::new("/opt/x")));
        assert!(!e.is_excluded(Path::new("/srv/keep/a")));
        assert!(e.is_excluded(Path::new("/srv/other")));
        assert!(e.is_excluded(Path::new("/usr/my dir/f")));
        assert!(!e.is_excluded(Path::new("/usr/my")));
    }

    #[test]
    fn defaults_compile_and_cover_private_files() {
        let e = Excludes::new([("default".to_string(), DEFAULT_EXCLUDES)]).unwrap();
        assert!(e.is_excluded(Path::new("/etc/shadow")));
        assert!(e.is_excluded(Path::new("/var/log/syslog")));
        assert!(!e.is_excluded(Path::new("/usr/bin/perl")));
        assert!(!e.is_excluded(Path::new("/etc/passwd.d")));
    }

    #[test]
    fn bad_pattern_names_its_origin() {
        let err = Excludes::new([("my-list".to_string(), "/a[\n")]).unwrap_err();
        assert!(err.to_string().contains("my-list"), "{err}");
    }
}
