//! S3-style XML error bodies, for errors the node itself produces.

/// Escapes the five XML special characters.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// `<Error><Code>..</Code><Message>..</Message><Resource>..</Resource><RequestId>..</RequestId></Error>`
pub fn error_body(code: &str, message: &str, resource: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId></Error>",
        escape(code),
        escape(message),
        escape(resource),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_user_bytes() {
        let body = super::error_body("NoSuchKey", "m", "/b/<k>&'\"", "1");
        assert!(body.contains("<Resource>/b/&lt;k&gt;&amp;&apos;&quot;</Resource>"));
    }
}
