//! The configured journal matches, evaluated on an entry's fields as libsystemd evaluates
//! them on its index: terms of one field are ORed, terms of different fields ANDed, `+`
//! ORs whole groups, and the user's `matches` are ANDed with the shorthands. Which terms
//! there are is `matches`' rule (one list for both readers); this is only their meaning.

use crate::config::Filter;
use crate::journal::Entry;
use crate::journal::matches::shorthand_terms;

/// One group: for every field named, one of the values.
type Group = Vec<(Vec<u8>, Vec<Vec<u8>>)>;

#[derive(Debug, Clone, Default)]
pub(super) struct Matches {
    /// ANDed levels, each an OR of groups.
    levels: Vec<Vec<Group>>,
}

impl Matches {
    /// `None` when the filter has no journal matches (every entry passes).
    pub(super) fn compile(f: &Filter) -> Option<Matches> {
        let mut m = Matches::default();
        for terms in [f.matches.clone(), shorthand_terms(f)] {
            let mut groups: Vec<Group> = vec![Vec::new()];
            for t in &terms {
                if t == "+" {
                    groups.push(Vec::new());
                    continue;
                }
                let (k, v) = t.split_once('=').expect("validated by config");
                let g = groups.last_mut().expect("one group at least");
                match g.iter_mut().find(|(n, _)| n == k.as_bytes()) {
                    Some((_, vs)) => vs.push(v.as_bytes().to_vec()),
                    None => g.push((k.as_bytes().to_vec(), vec![v.as_bytes().to_vec()])),
                }
            }
            groups.retain(|g| !g.is_empty());
            if !groups.is_empty() {
                m.levels.push(groups);
            }
        }
        (!m.levels.is_empty()).then_some(m)
    }

    pub(super) fn accepts(&self, e: &Entry) -> bool {
        self.levels.iter().all(|groups| {
            groups.iter().any(|g| {
                g.iter().all(|(name, values)| {
                    e.fields()
                        .any(|(n, v)| n == name.as_slice() && values.iter().any(|x| x == v))
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> Entry {
        let mut e = Entry::new();
        for (n, v) in fields {
            e.push_field(n.as_bytes(), v.as_bytes());
        }
        e
    }

    #[test]
    fn same_field_ors_other_fields_and_plus_ors_groups() {
        let f = Filter {
            matches: ["A=1", "A=2", "B=x", "+", "C=3"].map(String::from).to_vec(),
            max_priority: Some(3),
            ..Filter::default()
        };
        let m = Matches::compile(&f).unwrap();
        assert!(m.accepts(&entry(&[("A", "2"), ("B", "x"), ("PRIORITY", "3")])));
        assert!(!m.accepts(&entry(&[("A", "2"), ("B", "y"), ("PRIORITY", "3")])));
        assert!(m.accepts(&entry(&[("C", "3"), ("PRIORITY", "0")])));
        assert!(
            !m.accepts(&entry(&[("C", "3"), ("PRIORITY", "4")])),
            "ANDed with the shorthand"
        );
        assert!(
            m.accepts(&entry(&[
                ("A", "0"),
                ("A", "1"),
                ("B", "x"),
                ("PRIORITY", "1")
            ])),
            "a repeated field matches by any value"
        );
        assert!(Matches::compile(&Filter::default()).is_none());
    }
}
