//! Turning the configured filter into libsystemd journal matches.
//!
//! libsystemd's match language has three levels: terms for different fields are ANDed,
//! terms for the same field are ORed, `+` (a disjunction) ORs whole groups, and a
//! conjunction ANDs what came before with what comes after. We use that last level to AND
//! the user's free-form `matches` expression with the `units`/`identifiers`/`priority`
//! shorthands, so each behaves exactly as it reads.

use anyhow::{Context, Result};
use systemd::Journal;

use crate::config::Filter;

/// The terms of the shorthand filters, each `FIELD=value`.
/// Units and identifiers the agent selects itself (patterns, the journalctl meaning of
/// units: `select`) are left out here.
pub fn shorthand_terms(f: &Filter) -> Vec<String> {
    let mut terms = Vec::new();
    if !f.units_in_agent() {
        for u in &f.units {
            terms.push(format!("_SYSTEMD_UNIT={u}"));
        }
    }
    if !f.identifiers_in_agent() {
        for i in &f.identifiers {
            terms.push(format!("SYSLOG_IDENTIFIER={i}"));
        }
    }
    if let Some(max) = f.max_priority {
        for p in 0..=max {
            terms.push(format!("PRIORITY={p}"));
        }
    }
    terms
}

pub fn apply(j: &mut Journal, f: &Filter) -> Result<()> {
    let add = |j: &mut Journal, term: &str| -> Result<()> {
        if term == "+" {
            j.match_or().context("sd_journal_add_disjunction")?;
        } else {
            let (k, v) = term.split_once('=').expect("validated by config");
            j.match_add(k, v.as_bytes().to_vec())
                .with_context(|| format!("libsystemd refused the journal match {term:?}"))?;
        }
        Ok(())
    };
    for term in &f.matches {
        add(j, term)?;
    }
    let shorthand = shorthand_terms(f);
    if !f.matches.is_empty() && !shorthand.is_empty() {
        j.match_and().context("sd_journal_add_conjunction")?;
    }
    for term in &shorthand {
        add(j, term)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand() {
        let f = Filter {
            units: vec!["a.service".into()],
            identifiers: vec!["sshd".into()],
            max_priority: Some(2),
            ..Filter::default()
        };
        assert_eq!(
            shorthand_terms(&f),
            vec![
                "_SYSTEMD_UNIT=a.service",
                "SYSLOG_IDENTIFIER=sshd",
                "PRIORITY=0",
                "PRIORITY=1",
                "PRIORITY=2"
            ]
        );
    }
}
