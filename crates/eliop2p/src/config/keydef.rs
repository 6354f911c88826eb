//! What a configuration key is: its kind, default and help; the environment
//! variable and the flag of each key derive from its section and name.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Secret,
    Addr,
    Int,
    Float,
    Size,
    Duration,
    List,
    Choice(&'static [&'static str]),
}

pub struct KeyDef {
    pub section: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
}

impl KeyDef {
    pub fn name(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
    pub fn env(&self) -> String {
        format!("ELIOP2P_{}_{}", self.section, self.key).to_ascii_uppercase()
    }
    pub fn flag(&self) -> String {
        format!("{}-{}", self.section, self.key).replace('_', "-")
    }
}

macro_rules! key {
    ($s:literal, $k:literal, $kind:expr, $d:literal, $h:literal) => {
        KeyDef {
            section: $s,
            key: $k,
            kind: $kind,
            default: $d,
            help: $h,
        }
    };
}

pub(super) use key;
