//! WebDataset's brace notation for shard lists: `train-{000000..000146}.tar` (a numeric range,
//! zero-padded as its first end is, both ends included) and `{a,b}` (alternatives), any number
//! of times. The pattern is parsed and its size counted before any name is made, so that
//! `{0..99999999999}` or two large ranges multiplied are an error, not an allocation.

use std::path::PathBuf;

use crate::{DataError, Limits, MAX_PATH_BYTES};

/// One `{…}` group of a pattern.
enum Group<'a> {
    /// `{first..last}`, each number zero-padded to `width` digits.
    Range { first: u64, last: u64, width: usize },
    /// `{a,b,…}`.
    Alternatives(Vec<&'a str>),
}

impl Group<'_> {
    fn parse(body: &str) -> Result<Group<'_>, &'static str> {
        let Some((from, to)) = body.split_once("..") else {
            return Ok(Group::Alternatives(body.split(',').collect()));
        };
        let parse = |s: &str| s.parse::<u64>().map_err(|_| "a range end is not a number");
        let (first, last) = (parse(from)?, parse(to)?);
        if first > last {
            return Err("a range that counts down");
        }
        let width = if from.starts_with('0') { from.len() } else { 0 };
        Ok(Group::Range { first, last, width })
    }

    /// Number of choices (saturating at `u64::MAX`).
    fn count(&self) -> u64 {
        match self {
            Group::Range { first, last, .. } => (last - first).saturating_add(1),
            Group::Alternatives(choices) => choices.len() as u64,
        }
    }

    /// Bytes of the longest choice.
    fn longest(&self) -> usize {
        match self {
            Group::Range { last, width, .. } => (*width).max(last.to_string().len()),
            Group::Alternatives(choices) => choices.iter().map(|c| c.len()).max().unwrap_or(0),
        }
    }

    fn choices(&self) -> Vec<String> {
        match self {
            Group::Range { first, last, width } => {
                (*first..=*last).map(|i| format!("{i:0width$}")).collect()
            }
            Group::Alternatives(choices) => choices.iter().map(|&c| c.to_owned()).collect(),
        }
    }
}

/// A pattern as `literals[0] {groups[0]} literals[1] … {groups[n-1]} literals[n]`.
struct Pattern<'a> {
    literals: Vec<&'a str>,
    groups: Vec<Group<'a>>,
}

impl Pattern<'_> {
    /// Splits a pattern at its braces (no nesting: a group ends at the first `}`).
    fn parse(pattern: &str) -> Result<Pattern<'_>, &'static str> {
        let (mut literals, mut groups) = (Vec::new(), Vec::new());
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            let close = open + rest[open..].find('}').ok_or("a `{` without its `}`")?;
            literals.push(&rest[..open]);
            groups.push(Group::parse(&rest[open + 1..close])?);
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err("a `}` without its `{`");
        }
        literals.push(rest);
        Ok(Pattern { literals, groups })
    }

    /// Number of names it expands to (saturating at `u64::MAX`).
    fn count(&self) -> u64 {
        self.groups
            .iter()
            .fold(1u64, |count, group| count.saturating_mul(group.count()))
    }

    /// Bytes of its longest name.
    fn longest(&self) -> usize {
        let literals: usize = self.literals.iter().map(|l| l.len()).sum();
        let groups: usize = self.groups.iter().map(Group::longest).sum();
        literals.saturating_add(groups)
    }

    /// Every name, the first group varying slowest.
    fn expand(&self) -> Vec<String> {
        let mut names = vec![self.literals[0].to_owned()];
        for (group, literal) in self.groups.iter().zip(&self.literals[1..]) {
            let choices = group.choices();
            names = names
                .iter()
                .flat_map(|prefix| {
                    choices
                        .iter()
                        .map(move |choice| format!("{prefix}{choice}{literal}"))
                })
                .collect();
        }
        names
    }
}

/// Expands WebDataset's brace notation (see the module docs) within the default [`Limits`].
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    expand_braces_with_limits(pattern, &Limits::default())
}

/// [`expand_braces`] refusing, before making any name, a pattern that names more than
/// [`Limits::max_pattern_names`] shards or a name longer than [`MAX_PATH_BYTES`].
pub fn expand_braces_with_limits(pattern: &str, limits: &Limits) -> Result<Vec<String>, DataError> {
    let bad = |reason: &'static str| DataError::ShardPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let parsed = Pattern::parse(pattern).map_err(bad)?;
    let count = parsed.count();
    if count > limits.max_pattern_names {
        return Err(DataError::LimitExceeded {
            path: Some(PathBuf::from(pattern)),
            member: None,
            what: "number of shard names the pattern expands to".to_owned(),
            value: count,
            limit: limits.max_pattern_names,
            setting: "max_pattern_names",
        });
    }
    if parsed.longest() > MAX_PATH_BYTES {
        return Err(bad("expands to names longer than PATH_MAX (4096 bytes)"));
    }
    Ok(parsed.expand())
}
