//! The limit flags on the command line: one clap argument per line of the flag table
//! (`limits`), parsed once, by the shared parser.

use crate::{
    api::{self, LimitMap},
    limits::{Flag, Limits},
};

/// Resource limits, shared by `rein run`, `rein set` and `rein group create`: one argument
/// per line of the flag table (`limits`), parsed once, by the shared parser, into
/// [`Limits`]. Units: memory and IO bytes take K/M/G/T (powers of 1024); bandwidth takes bits
/// per second (10mbit or 10M).
#[derive(Debug, Default, Clone)]
pub struct LimitArgs(pub Limits);

/// `docker run`'s names for the flags whose meaning is the same, accepted beside rein's own
/// (and shown in `--help`): long aliases and a short flag. Docker's `--memory-swap` (memory
/// plus swap) and `--cpu-shares` (another scale) mean something else, so they are not here.
fn docker_names(flag: Flag) -> (&'static [&'static str], Option<char>) {
    match flag {
        Flag::Memory => (&[], Some('m')),
        // runc writes --memory-reservation to memory.low on cgroup v2.
        Flag::MemoryLow => (&["memory-reservation"], None),
        Flag::Cpuset => (&["cpuset-cpus"], None),
        Flag::Pids => (&["pids-limit"], None),
        _ => (&[], None),
    }
}

impl clap::Args for LimitArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Flag::ALL.into_iter().fold(cmd, |cmd, flag| {
            let (aliases, short) = docker_names(flag);
            let mut arg = clap::Arg::new(flag.name())
                .long(flag.name())
                .visible_aliases(aliases)
                .help(flag.help())
                .help_heading("Limits");
            if let Some(c) = short {
                arg = arg.short(c);
            }
            cmd.arg(if flag.switch() {
                arg.action(clap::ArgAction::SetTrue)
            } else {
                arg.value_name(flag.value_name()).action(if flag.repeats() {
                    clap::ArgAction::Append
                } else {
                    clap::ArgAction::Set
                })
            })
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for LimitArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut pairs: Vec<(Flag, String)> = Vec::new();
        for flag in Flag::ALL {
            if flag.switch() {
                if m.get_flag(flag.name()) {
                    pairs.push((flag, "true".into()));
                }
            } else if let Some(values) = m.get_many::<String>(flag.name()) {
                pairs.extend(values.map(|v| (flag, v.clone())));
            }
        }
        Limits::from_pairs(pairs.iter().map(|(f, v)| (*f, v.as_str())))
            .map(Self)
            .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e.to_string()))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl LimitArgs {
    /// The limits as the API's JSON map.
    pub fn to_map(&self) -> LimitMap {
        api::limits_to_map(&self.0)
    }
}
