//! What several commands share: the rules of `--rule`/`--rules FILE` (`load`, `cost`) and the
//! pass-everything policy (`gen`, `cost`).

use crate::rules::{self, Policy, Rule};
use anyhow::{Context, Result};
use packet::abi::Action;

/// `gen` redirects its replies to its socket rather than filter: everything else goes on to
/// the kernel. `cost` measures with the same policy.
pub const PASS_ALL: Policy = Policy {
    default: Action::Pass,
    malformed: Action::Pass,
    unparsed: Action::Pass,
    not_ip: Action::Pass,
};

/// The rules of `--rule` and `--rules FILE`, in that order; dead rules are said on stderr
/// ([`warn_shadowed`]).
pub fn read_rules(rule_args: &[String], rules_file: Option<&std::path::Path>) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for r in rule_args {
        rules.push(rules::parse_rule(r)?);
    }
    if let Some(path) = rules_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read rules file {}", path.display()))?;
        rules.extend(rules::parse_rules_file(&text, &path.display().to_string())?);
    }
    warn_shadowed(&rules);
    Ok(rules)
}

/// Says on stderr which rules an earlier rule makes dead (they can never decide a packet).
/// They are loaded all the same, but a rule set whose "pass SSH" sits under "drop TCP" does
/// not do what its author thinks, and nothing else would tell them.
pub fn warn_shadowed(rules: &[Rule]) {
    for s in rules::shadowed(rules) {
        packet::stderr!("xdp-user: warning: {}", s.message(rules));
    }
}
