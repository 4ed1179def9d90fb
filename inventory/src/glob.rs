//! Shell-style globs for host names: `*` (any run of characters), `?` (one character)
//! and `[...]` classes (`[0-9]`, `[abc]`, `[!x]`).
//!
//! Small enough to own: the matcher works on characters, backtracks only on `*` (the
//! classic two-pointer algorithm, linear in practice) and never panics on any pattern.

/// Whether `text` matches glob `pat` as a whole. A `[` without its `]` is a literal.
pub fn matches(pat: &str, text: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((ok, next)) = class(&p, pi, t[ti]) {
                        if ok {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        // Mismatch: let the last `*` take one more character, or fail.
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether `pat` uses any glob syntax (else it names one host exactly).
pub fn is_glob(pat: &str) -> bool {
    pat.contains(['*', '?', '['])
}

/// The class starting at `p[at] == '['`: whether `c` is in it and the index after its
/// `]`; `None` when it has no closing `]`.
fn class(p: &[char], at: usize, c: char) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_questions_and_classes() {
        assert!(matches("web-*", "web-01"));
        assert!(matches("web-*", "web-"));
        assert!(!matches("web-*", "db-01"));
        assert!(matches("*.dc1.*", "host-1.dc1.example.com"));
        assert!(matches("db-0?", "db-07"));
        assert!(!matches("db-0?", "db-0"));
        assert!(matches("db-0[1-3]", "db-02"));
        assert!(!matches("db-0[1-3]", "db-04"));
        assert!(matches("db-0[!1-3]", "db-04"));
        assert!(matches("a[]]b", "a]b"));
        assert!(matches("a[b", "a[b"), "an unclosed class is literal");
        assert!(matches("**a**", "xxaxx"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_literals_match_themselves(
            pat in "[a-c*?\\[\\]!^-]{0,12}",
            text in "[a-c\\[\\]-]{0,12}",
        ) {
            let _ = matches(&pat, &text);
            if !is_glob(&text) {
                proptest::prop_assert!(matches(&text, &text));
            }
        }
    }
}
