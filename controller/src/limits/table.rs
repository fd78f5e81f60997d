//! How one line of the flag table (in `limits/mod.rs`) drives everything that lists the
//! flags: the [`super::Flag`] enum, the fields of [`super::Limits`], parsing one value,
//! displaying it back, the command line's arguments (`cli`) and the hook ceiling
//! (`ceiling`). A new limit is one new line there and, if it needs one, a new value type
//! with a [`Value`] impl in `values.rs`.

use super::{Flag, LimitError};

/// A value one flag takes: parsed from the flag's text, displayed back as text that parses
/// to the same value (property-tested).
pub trait Value: Sized + Clone {
    /// What the flag accepts, for errors and `--help`.
    const ACCEPTED: &'static str;
    /// True for a flag given without a value on the command line (`--oom-group`): present
    /// means `true`.
    const SWITCH: bool = false;
    /// Parses the flag's text; the error is the problem in words.
    fn parse_text(text: &str) -> Result<Self, String>;
    /// The text that parses back to this value.
    fn text(&self) -> String;
    /// How far the value reaches, comparable between values of one flag (a larger value
    /// claims more of the node): what the hook ceiling bounds. `None`: not bounded.
    fn reach(&self) -> Option<u128> {
        None
    }
}

/// Where [`super::Limits`] keeps one flag's values: once (`Option`), or once per device
/// (`Vec`, for `--io-max`).
pub trait Slot: Default {
    type Value: Value;
    /// The flag may be given more than once.
    const REPEATS: bool;
    /// Stores one parsed value.
    fn put(&mut self, flag: Flag, value: Self::Value) -> Result<(), LimitError>;
    /// The stored values, in order.
    fn values(&self) -> &[Self::Value];
}

impl<T: Value> Slot for Option<T> {
    type Value = T;
    const REPEATS: bool = false;

    /// A second value for the same flag is refused: which one would win is a guess.
    fn put(&mut self, flag: Flag, value: T) -> Result<(), LimitError> {
        if let Some(first) = self {
            return Err(LimitError::Repeated {
                flag,
                first: first.text(),
                second: value.text(),
            });
        }
        *self = Some(value);
        Ok(())
    }

    fn values(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Value> Slot for Vec<T> {
    type Value = T;
    const REPEATS: bool = true;

    fn put(&mut self, _: Flag, value: T) -> Result<(), LimitError> {
        self.push(value);
        Ok(())
    }

    fn values(&self) -> &[T] {
        self
    }
}

/// Parses `text` as `flag`'s value into its slot.
pub(super) fn put<S: Slot>(slot: &mut S, flag: Flag, text: &str) -> Result<(), LimitError> {
    let value = S::Value::parse_text(text).map_err(|problem| LimitError::Value {
        flag,
        value: text.to_owned(),
        problem,
    })?;
    slot.put(flag, value)
}

/// The texts of a slot's values.
pub(super) fn texts<S: Slot>(slot: &S) -> Vec<String> {
    slot.values().iter().map(Value::text).collect()
}

/// The reach of a slot holding one value (a repeated flag is not bounded).
pub(super) fn reach<S: Slot>(slot: &S) -> Option<u128> {
    match slot.values() {
        [one] if !S::REPEATS => one.reach(),
        _ => None,
    }
}

/// Generates [`super::Flag`], [`super::Limits`] and their per-flag methods from the table.
/// Each line: `Variant field: SlotType = "flag-name", "VALUE-NAME";` after a one-line doc
/// comment that is also the flag's `--help` line.
macro_rules! limit_table {
    ($(
        #[doc = $doc:literal]
        $variant:ident $field:ident: $slot:ty = $name:literal, $value_name:literal;
    )*) => {
        /// Every limit a user can set, named as the CLI flag (without `--`).
        ///
        /// The same names are used by the API (`{"cpus": "1.5"}`) and, prefixed with
        /// `rein/`, by OCI annotations (`rein/cpus`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Flag {
            $(#[doc = $doc] $variant,)*
        }

        impl Flag {
            /// All flags, in the order they are displayed.
            pub const ALL: [Self; [$($name),*].len()] = [$(Self::$variant),*];

            /// The flag's name as typed after `--`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// What the flag accepts, for error messages and `--help`.
            pub const fn accepted(self) -> &'static str {
                match self {
                    $(Self::$variant => <<$slot as $crate::limits::table::Slot>::Value
                        as $crate::limits::table::Value>::ACCEPTED,)*
                }
            }

            /// The flag's `--help` line (with an example).
            pub fn help(self) -> &'static str {
                match self {
                    $(Self::$variant => $doc.trim(),)*
                }
            }

            /// The placeholder `--help` shows for the flag's value.
            pub const fn value_name(self) -> &'static str {
                match self {
                    $(Self::$variant => $value_name,)*
                }
            }

            /// The flag may be given more than once (`--io-max`, once per device).
            pub const fn repeats(self) -> bool {
                match self {
                    $(Self::$variant =>
                        <$slot as $crate::limits::table::Slot>::REPEATS,)*
                }
            }

            /// The flag takes no value on the command line (`--oom-group`).
            pub const fn switch(self) -> bool {
                match self {
                    $(Self::$variant => <<$slot as $crate::limits::table::Slot>::Value
                        as $crate::limits::table::Value>::SWITCH,)*
                }
            }
        }

        /// A validated set of limits. An empty slot means "not set by this request": leave
        /// the kernel's current value alone (for `rein set`) or keep the kernel default (for
        /// a new container).
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Limits {
            $(#[doc = $doc] pub $field: $slot,)*
        }

        impl Limits {
            /// Parses one value into its field. Does not run the cross-field checks.
            fn set(&mut self, flag: Flag, text: &str) -> Result<(), LimitError> {
                match flag {
                    $(Flag::$variant => $crate::limits::table::put(&mut self.$field, flag, text),)*
                }
            }

            /// The texts of one flag's values (none when it is not set).
            pub fn texts(&self, flag: Flag) -> Vec<String> {
                match flag {
                    $(Flag::$variant => $crate::limits::table::texts(&self.$field),)*
                }
            }

            /// How far the flag's value reaches (see `table::Value::reach`).
            pub fn reach(&self, flag: Flag) -> Option<u128> {
                match flag {
                    $(Flag::$variant => $crate::limits::table::reach(&self.$field),)*
                }
            }
        }
    };
}

pub(super) use limit_table;
