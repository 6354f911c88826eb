//! Writing the Prometheus text exposition format: one function for every metric
//! family the node exports, whichever crate owns the numbers.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Appends one family: `# HELP`, `# TYPE`, then one line per series. `labels` is
/// the inside of the braces (`tier="memory"`), empty for an unlabelled series.
pub fn family<L: AsRef<str>>(
    out: &mut String,
    name: &str,
    kind: Kind,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in series {
        let labels = labels.as_ref();
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families() {
        let mut out = String::new();
        family(&mut out, "x_total", Kind::Counter, "Things.", [("", 3)]);
        family(
            &mut out,
            "y",
            Kind::Gauge,
            "Level.",
            [("tier=\"a\"", 1), ("tier=\"b\"", 2)],
        );
        assert_eq!(
            out,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n# HELP y Level.\n# TYPE y gauge\ny{tier=\"a\"} 1\ny{tier=\"b\"} 2\n"
        );
        assert_eq!(label_value("a\"b\\c"), "a\\\"b\\\\c");
    }
}
